"""Seed 001's API: `KTODataLoader(config, tokenizer, enable_cache, cache_dir=..., cache_compression=...).load_dataset(split)`.

`load_dataset` returns a `datasets.Dataset` of canonical text records (tokenization is
the trainer's job):
- KTODataLoader: columns prompt, completion, label (bool: True = desirable), system,
  weight, h, source_row, origin;
- DPODataLoader: prompt, chosen, rejected, system, h_w, h_l, margin, source_row, origin,
  extra (a JSON string).
Texts follow TRL's two formats: all plain strings ("standard"), or, when any record of the
train+validation splits is conversational, all lists of {"role", "content"} messages
("conversational"; a string prompt becomes one user message, a string completion one
assistant message). Absent optional values are None.

Splits: "train" and "validation" come from one `load_records` call (see pipeline.py);
"test" reads `data.test_file` (converted, not split or balanced).

Caching: with `enable_cache` the loaded records are kept on the loader (train and
validation come from one read), and with a cache directory (the constructor's `cache_dir`,
else `data.cache_dir`) each split is also saved with `save_to_disk` under
`<cache directory>/prospect-data/<key>/`, where the key hashes the data config, kind, seed,
method and the size and modification time of every input file; a later loader with the
same key loads it back without reading the source (each split's files are checksummed; a
damaged split is removed and rebuilt). `enable_cache=False` turns both off. Streaming
datasets are never cached. `cache_compression` is accepted for seed 001 and has no effect
(a warning says so): the cache is the Arrow files `save_to_disk` writes, which
`load_from_disk` memory-maps; compressed Arrow buffers would have to be decompressed into
memory instead.

Streaming (`data.streaming: true`): `load_dataset` returns a `datasets.IterableDataset`
that reads the source as it is iterated (bounded memory): pairs and rankings are
converted row by row, the validation split is a seeded hash of the row number (see
split.py), rows are not resampled (use the suggested weights) and, for DPODataLoader,
unpaired rows cannot be paired (they are skipped and counted in the report's notes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prospect.data.convert import unpair_pair
from prospect.data.formats import DETECT_ROWS
from prospect.data.pipeline import LoadedData, count_views, load_records, read_items, scan, to_paired, to_unpaired
from prospect.data.readers import open_source
from prospect.data.records import PairedRecord, UnpairedRecord
from prospect.data.report import DataReport
from prospect.data.split import in_validation
from prospect.data.text import as_messages
from prospect.errors import KTODataError
from prospect.io import atomic_write_json, manifest_intact, write_manifest

log = logging.getLogger("prospect")

CACHE_VERSION = "1"


def _features(kind: str, conversational: bool) -> Any:
    from datasets import Features, List, Value

    text = List({"role": Value("string"), "content": Value("string")}) if conversational else Value("string")
    if kind == "unpaired":
        return Features(
            {
                "prompt": text,
                "completion": text,
                "label": Value("bool"),
                "system": Value("string"),
                "weight": Value("float64"),
                "h": Value("int64"),
                "source_row": Value("int64"),
                "origin": Value("string"),
            }
        )
    return Features(
        {
            "prompt": text,
            "chosen": text,
            "rejected": text,
            "system": Value("string"),
            "h_w": Value("int64"),
            "h_l": Value("int64"),
            "margin": Value("float64"),
            "source_row": Value("int64"),
            "origin": Value("string"),
            "extra": Value("string"),
        }
    )


def is_conversational(records: list[Any]) -> bool:
    """True when any record holds a message list."""
    for r in records:
        texts = (r.prompt, r.completion) if isinstance(r, UnpairedRecord) else (r.prompt, r.chosen, r.rejected)
        if any(isinstance(t, list) for t in texts):
            return True
    return False


def record_row(record: Any, conversational: bool) -> dict[str, Any]:
    """A canonical record as a Dataset row (texts promoted to messages when `conversational`)."""

    def text(t: Any, role: str) -> Any:  # role and content only (a tool call keeps its JSON text as content)
        return [{"role": m["role"], "content": m["content"]} for m in as_messages(t, role)] if conversational else t

    if isinstance(record, UnpairedRecord):
        return {
            "prompt": text(record.prompt, "user"),
            "completion": text(record.completion, "assistant"),
            "label": record.label,
            "system": record.system,
            "weight": record.weight,
            "h": record.h,
            "source_row": record.source_row,
            "origin": record.origin,
        }
    return {
        "prompt": text(record.prompt, "user"),
        "chosen": text(record.chosen, "assistant"),
        "rejected": text(record.rejected, "assistant"),
        "system": record.system,
        "h_w": record.h_w,
        "h_l": record.h_l,
        "margin": record.margin,
        "source_row": record.source_row,
        "origin": record.origin,
        "extra": json.dumps(record.extra, ensure_ascii=False) if record.extra else None,
    }


def records_to_dataset(records: list[Any], kind: str, conversational: bool | None = None) -> Any:
    """Canonical records -> datasets.Dataset with the columns in the module doc."""
    import datasets

    conv = is_conversational(records) if conversational is None else conversational
    features = _features(kind, conv)
    if not records:
        return datasets.Dataset.from_dict({k: [] for k in features}, features=features)
    return datasets.Dataset.from_list([record_row(r, conv) for r in records], features=features)


def _fingerprint(location: str | None) -> list[Any]:
    if not location:
        return []
    path = Path(location).expanduser()
    if path.is_file():
        st = path.stat()
        return [str(path.resolve()), st.st_size, st.st_mtime_ns]
    if path.is_dir():
        out: list[Any] = [str(path.resolve())]
        for p in sorted(path.rglob("*")):
            if p.is_file():
                st = p.stat()
                out.append([str(p.relative_to(path)), st.st_size, st.st_mtime_ns])
        return out
    return [str(location)]  # hub name: no local fingerprint


class KTODataLoader:
    """Unpaired (KTO) data for seed-API users; see the module doc for columns and caching.

    `config` is a KTODataConfig (or a whole run config, whose `data`, training seed and
    method are then used). `tokenizer` is kept for API compatibility; records are not
    tokenized here. `cache_dir` (if given) is the disk cache directory, in place of
    `data.cache_dir`; `cache_compression` has no effect (module doc).
    """

    kind = "unpaired"

    def __init__(
        self,
        config: Any,
        tokenizer: Any = None,
        enable_cache: bool = True,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_compression: bool | str | None = None,
        seed: int | None = None,
        method: str | None = None,
        delta_reorient: bool | None = None,
        **kwargs: Any,
    ) -> None:
        run = config if hasattr(config, "data") and hasattr(config, "training") else None
        self.config = run.data if run is not None else config
        self.tokenizer = tokenizer
        self.enable_cache = enable_cache
        self._cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.cache_compression = cache_compression
        if cache_compression:
            warnings.warn(
                f"{type(self).__name__}(cache_compression={cache_compression!r}) has no effect: the disk cache "
                "is the Arrow files of datasets.save_to_disk, which are memory-mapped when loaded back, and "
                "compressed Arrow buffers cannot be",
                UserWarning,
                stacklevel=2,
            )
        self.seed = seed if seed is not None else (run.training.seed if run is not None else 42)
        self.method = method or (run.method.name if run is not None else ("kto" if self.kind == "unpaired" else "dpo"))
        self.delta_reorient = (
            delta_reorient if delta_reorient is not None else bool(run is not None and run.method.delta > 0)
        )
        self.kwargs = kwargs
        self._loaded: LoadedData | None = None
        self._report: dict[str, Any] | None = None

    # ---- public ----------------------------------------------------------
    @property
    def cache_dir(self) -> Path | None:
        """The disk cache directory: the constructor's `cache_dir`, else `data.cache_dir`, else None (no disk cache)."""
        if self._cache_dir is not None:
            return self._cache_dir
        return Path(self.config.cache_dir).expanduser() if self.config.cache_dir else None

    @property
    def report(self) -> dict[str, Any] | None:
        """The data report (dict) of the last load, or None before loading."""
        return self._report

    @property
    def suggested_weights(self) -> dict[str, float]:
        return dict((self._report or {}).get("suggested_weights", {})) if self.kind == "unpaired" else {}

    def load_records(self) -> LoadedData:
        """The LoadedData of train + validation (memoised when enable_cache)."""
        if self._loaded is not None and self.enable_cache:
            return self._loaded
        loaded = load_records(
            self.config, kind=self.kind, seed=self.seed, method=self.method, delta_reorient=self.delta_reorient
        )  # type: ignore[arg-type]
        self._report = loaded.report.to_dict()
        if self.enable_cache:
            self._loaded = loaded
        return loaded

    def load_dataset(self, split: str = "train") -> Any:
        """A datasets.Dataset (IterableDataset when streaming) of canonical records for `split`."""
        if split not in ("train", "validation", "test"):
            raise KTODataError(f"unknown split {split!r}: use 'train', 'validation' or 'test'")
        if self.config.streaming:
            return self._streaming_dataset(split)
        cache_dir = self._cache_path(split)
        if cache_dir is not None and (cache_dir / split).is_dir():
            cached = self._load_cached(cache_dir, split)
            if cached is not None:
                return cached
        if split == "test":
            records, conv = self._test_records()
        else:
            loaded = self.load_records()
            records = loaded.train if split == "train" else loaded.validation
            conv = is_conversational(list(loaded.train) + list(loaded.validation))
        ds = records_to_dataset(records, self.kind, conv)
        if cache_dir is not None:
            self._save(ds, cache_dir, split)
        return ds

    # ---- helpers ---------------------------------------------------------
    def _test_records(self) -> tuple[list[Any], bool]:
        if not self.config.test_file:
            raise KTODataError("no test data: set data.test_file")
        items, report = read_items(self.config.test_file, self.config, seed=self.seed, kind=self.kind)  # type: ignore[arg-type]
        if self._report is not None:
            self._report["test"] = report.to_dict()
        records: list[Any] = (
            to_unpaired(items, self.config, self.seed) if self.kind == "unpaired" else to_paired(items, self.config)[0]
        )
        return records, is_conversational(records)

    def _cache_path(self, split: str) -> Path | None:
        root = self.cache_dir
        if not self.enable_cache or root is None:
            return None
        cfg = self.config
        key_src = json.dumps(
            {
                "v": CACHE_VERSION,
                "config": cfg.model_dump(mode="json"),
                "kind": self.kind,
                "seed": self.seed,
                "method": self.method,
                "delta_reorient": self.delta_reorient,
                "files": [_fingerprint(cfg.train_file), _fingerprint(cfg.validation_file), _fingerprint(cfg.test_file)],
            },
            sort_keys=True,
            default=str,
        )
        key = hashlib.sha256(key_src.encode("utf-8")).hexdigest()[:20]
        return root / "prospect-data" / f"{self.kind}-{key}"

    def _load_cached(self, cache_dir: Path, split: str) -> Any:
        """The cached split if its files match their checksums; else None (removed, to be rebuilt)."""
        import datasets

        try:
            if not manifest_intact(cache_dir / split):
                raise ValueError("a file is missing or differs from its recorded checksum")
            ds = datasets.load_from_disk(str(cache_dir / split))
            report_file = cache_dir / "data_report.json"
            if report_file.is_file():
                self._report = json.loads(report_file.read_text(encoding="utf-8"))
            return ds
        except Exception as e:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
            log.warning("data cache %s is damaged (%s); reading the data again", cache_dir / split, e)
            shutil.rmtree(cache_dir / split, ignore_errors=True)
            return None

    def _save(self, ds: Any, cache_dir: Path, split: str) -> None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{split}.", dir=cache_dir))
        try:
            ds.save_to_disk(str(tmp / split))
            write_manifest(tmp / split)
            if self._report is not None:
                atomic_write_json(cache_dir / "data_report.json", self._report)
            os.replace(tmp / split, cache_dir / split)  # atomic: a reader never sees half a split
        except OSError:
            pass  # another process saved it first, or the cache is not writable: the data is still returned
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _streaming_dataset(self, split: str) -> Any:
        import datasets

        cfg, kind, seed = self.config, self.kind, self.seed
        if split == "test":
            if not cfg.test_file:
                raise KTODataError("no test data: set data.test_file")
            location, source_split, hash_split = cfg.test_file, "train", False
        elif split == "validation" and cfg.validation_file:
            location, source_split, hash_split = cfg.validation_file, "train", False
        elif "validation" in open_source(cfg.train_file, streaming=True).splits() and not cfg.validation_file:
            location, source_split, hash_split = cfg.train_file, split, False  # the directory's own splits
        else:
            location, source_split, hash_split = cfg.train_file, "train", not cfg.validation_file
        fraction = cfg.validation_split_percentage
        loader = self

        def records(report: DataReport) -> Iterator[Any]:
            """One pass over the source: the split's records, in file order; fills `report`."""
            source = open_source(location, split=source_split, streaming=True)
            report.source = source.name
            pair_index = 0
            for item in count_views(
                scan(source, cfg, report, on_disk=True, kind=kind), cfg, report, seed, on_disk=True
            ):
                index = pair_index
                if isinstance(item, PairedRecord):
                    pair_index += 1
                if hash_split and in_validation(seed, item.source_row or 0, fraction) != (split == "validation"):
                    continue
                if kind == "unpaired":
                    yield from (
                        unpair_pair(item, index, cfg.pairwise_sampling_strategy, seed)
                        if isinstance(item, PairedRecord)
                        else to_unpaired([item], cfg, seed)
                    )
                elif isinstance(item, UnpairedRecord):
                    _bump(report.notes, "unpaired_rows_not_paired_in_streaming")
                else:
                    yield from to_paired([item], cfg)[0]

        # The text shape (standard or conversational) is decided on the first records.
        head: list[Any] = []
        for rec in records(DataReport(source=str(location))):
            head.append(rec)
            if len(head) >= DETECT_ROWS:
                break
        conv = is_conversational(head)

        def gen() -> Iterator[dict[str, Any]]:
            report = DataReport(source=str(location))
            for rec in records(report):
                if not conv and is_conversational([rec]):
                    _bump(report.notes, "conversational_rows_skipped_in_standard_stream")
                    continue
                yield record_row(rec, conv)
            loader._report = report.to_dict()  # complete once a full pass has run

        return datasets.IterableDataset.from_generator(gen, features=_features(kind, conv))


def _bump(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


class DPODataLoader(KTODataLoader):
    """Paired (DPO-family) counterpart of KTODataLoader: chosen/rejected records."""

    kind = "paired"


__all__ = ["KTODataLoader", "DPODataLoader", "records_to_dataset", "record_row", "is_conversational"]
