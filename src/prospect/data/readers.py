"""Readers: a file, directory or dataset name -> raw rows, each accounted for.

Every reader yields `RawRow`s: the row number (1-based, as in the file; blank lines are
not rows), the row as a dict, or an error (field, code, reason) when the row cannot be
read at all. A bad row never stops the read; only an unreadable *file* (missing, not
Parquet, ...) raises `KTODataError`.

Sources (chosen by path and suffix; `.gz` accepted for the text formats):
- `.jsonl` / `.ndjson`: parsed line by line in binary mode (memory bounded by the longest
  line). A byte-order mark is dropped, CRLF endings are fine, a line with invalid UTF-8
  or invalid JSON, or a JSON value that is not an object, is rejected with its reason.
  `row` counts non-blank lines; `line` is the physical line number.
- `.json`: an array of objects, or an object of equal-length columns, or one object
  (loaded whole; use JSONL for files larger than memory). A `.json` file that is not one
  JSON document is read as JSON lines.
- `.csv` / `.tsv`: header row + records (`row` 1 is the first record); empty cells are
  missing values; cells holding JSON lists (messages, responses, rankings) are decoded.
- `.parquet`: read in record batches with pyarrow.
- a directory written by `datasets` `save_to_disk` (Dataset or DatasetDict: the split is picked);
- any other directory: a script-free Hugging Face dataset directory; its data files for the
  split are resolved by `datasets` (README `configs`, `data/train-*.parquet`, `train.jsonl`, ...)
  and read with the readers above (row numbers continue across files; `file` names the file);
- anything else that does not exist locally: `datasets.load_dataset(name, split=...)` (hub).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prospect.data.text import type_name
from prospect.errors import KTODataError

BATCH_ROWS = 1024
_csv_limit_set = False


@dataclass(slots=True)
class RawRow:
    """One input row: its number, its content or why it could not be read."""

    row: int
    data: dict[str, Any] | None
    error: tuple[str, str, str] | None = None  # (field, code, reason)
    line: int | None = None
    file: str | None = None
    stringly: bool = False  # values came from CSV text cells


class Source:
    """A readable source of raw rows."""

    reader: str = "?"

    def __init__(self, name: str) -> None:
        self.name = name

    def rows(self) -> Iterator[RawRow]:
        raise NotImplementedError

    def splits(self) -> list[str]:
        """Splits this source offers (directories and hub datasets); [] for a single file."""
        return []


def read_rows(source: Source) -> Iterator[RawRow]:
    """`source.rows()`, with a file that breaks off while it is read (a truncated or corrupt
    .gz, an I/O error) ending in one KTODataError naming the file, not a traceback. Rows read
    before the break were yielded already; the file's remaining rows cannot be counted."""
    import zlib

    try:
        yield from source.rows()
    except (EOFError, OSError, zlib.error) as e:
        what = (
            "truncated or corrupt compressed file"
            if isinstance(e, (EOFError, zlib.error, gzip.BadGzipFile))
            else "read error"
        )
        raise KTODataError(f"{source.name}: cannot read the file to its end ({what}: {e})") from None


def _open_binary(path: Path) -> Any:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def _suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _json_row(row: int, value: Any, line: int | None = None) -> RawRow:
    if isinstance(value, dict):
        return RawRow(row, value, None, line)
    return RawRow(row, None, ("row", "not_an_object", f"row is a JSON {type_name(value)}, not an object"), line)


def iter_jsonl_lines(lines: Any, first_line: int = 1) -> Iterator[RawRow]:
    """Parse an iterable of byte lines as JSON lines (see module doc)."""
    row = 0
    hint = ""
    for lineno, raw in enumerate(lines, first_line):
        if lineno == first_line and raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            hint = "; the file looks UTF-16: convert it to UTF-8"
        if raw.startswith(codecs.BOM_UTF8):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            if not raw.strip():
                continue
            row += 1
            yield RawRow(
                row, None, ("row", "invalid_utf8", f"not valid UTF-8 (byte {e.start} of the line){hint}"), lineno
            )
            continue
        s = text.strip()
        if not s:
            continue
        row += 1
        try:
            value = json.loads(s)
        except json.JSONDecodeError as e:
            yield RawRow(row, None, ("row", "invalid_json", f"invalid JSON: {e.msg} (column {e.colno})"), lineno)
            continue
        except (ValueError, RecursionError) as e:  # e.g. nesting too deep, huge integers
            yield RawRow(row, None, ("row", "invalid_json", f"invalid JSON: {type(e).__name__}"), lineno)
            continue
        yield _json_row(row, value, lineno)


class JsonlSource(Source):
    reader = "jsonl"

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path

    def rows(self) -> Iterator[RawRow]:
        with _open_binary(self.path) as fh:
            yield from iter_jsonl_lines(fh)


class JsonSource(Source):
    """A JSON document: array of objects, object of columns, or one object; else JSON lines."""

    reader = "json"

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path

    def rows(self) -> Iterator[RawRow]:
        with _open_binary(self.path) as fh:
            data = fh.read()
        if data.startswith(codecs.BOM_UTF8):
            data = data[3:]
        try:
            doc = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError):
            self.reader = "json (read as JSON lines)"
            yield from iter_jsonl_lines(io.BytesIO(data))
            return
        if isinstance(doc, list):
            for i, value in enumerate(doc, 1):
                yield _json_row(i, value)
        elif (
            isinstance(doc, dict)
            and doc
            and all(isinstance(v, list) for v in doc.values())
            and len({len(v) for v in doc.values()}) == 1
        ):
            keys = list(doc)
            for i, values in enumerate(zip(*doc.values()), 1):
                yield RawRow(i, dict(zip(keys, values)))
        else:
            yield _json_row(1, doc)


class CsvSource(Source):
    reader = "csv"

    def __init__(self, path: Path, delimiter: str = ",") -> None:
        super().__init__(str(path))
        self.path = path
        self.delimiter = delimiter

    def rows(self) -> Iterator[RawRow]:
        global _csv_limit_set
        if not _csv_limit_set:  # the default 128 KiB field limit rejects long completions
            csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
            _csv_limit_set = True
        with _open_binary(self.path) as bfh:
            fh = io.TextIOWrapper(bfh, encoding="utf-8-sig", errors="surrogateescape", newline="")
            reader = csv.reader(fh, delimiter=self.delimiter)
            try:
                header = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise KTODataError(f"{self.name}: cannot read the CSV header: {e}") from None
            header = [h.strip() for h in header]
            row = 0
            while True:
                start = reader.line_num + 1
                try:
                    values = next(reader)
                except StopIteration:
                    break
                except csv.Error as e:
                    row += 1
                    yield RawRow(row, None, ("row", "invalid_csv", f"malformed CSV: {e}"), start)
                    if reader.line_num < start:  # no progress: stop rather than loop
                        break
                    continue
                if not any(v.strip() for v in values):
                    continue
                row += 1
                if len(values) > len(header):
                    yield RawRow(
                        row,
                        None,
                        ("row", "invalid_csv", f"{len(values)} fields but the header has {len(header)}"),
                        start,
                    )
                    continue
                record = {h: (v if v != "" else None) for h, v in zip(header, values)}
                yield RawRow(row, record, None, start, stringly=True)


class ParquetSource(Source):
    reader = "parquet"

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path

    def rows(self) -> Iterator[RawRow]:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(self.path)
        except Exception as e:  # pyarrow raises several types for a non-Parquet file
            raise KTODataError(f"{self.name}: not a readable Parquet file: {e}") from None
        row = 0
        for batch in pf.iter_batches(batch_size=BATCH_ROWS):
            for record in batch.to_pylist():
                row += 1
                yield RawRow(row, record)


class ArrowDatasetSource(Source):
    """A `datasets` Dataset (from save_to_disk, an .arrow file, or the hub)."""

    reader = "datasets"

    def __init__(self, name: str, load: Callable[[], Any], reader: str, splits: list[str] | None = None) -> None:
        super().__init__(name)
        self._load = load
        self.reader = reader
        self._splits = splits or []

    def splits(self) -> list[str]:
        return self._splits

    def rows(self) -> Iterator[RawRow]:
        ds = self._load()
        row = 0
        if hasattr(ds, "iter") and not _is_iterable_dataset(ds):
            for batch in ds.iter(batch_size=BATCH_ROWS):
                keys = list(batch)
                for values in zip(*batch.values()):
                    row += 1
                    yield RawRow(row, dict(zip(keys, values)))
        else:
            for record in ds:
                row += 1
                yield _json_row(row, record)


def _is_iterable_dataset(ds: Any) -> bool:
    import datasets

    return isinstance(ds, datasets.IterableDataset)


class MultiFileSource(Source):
    """Several data files of one split (a Hugging Face dataset directory); row numbers continue."""

    reader = "hf-dir"

    def __init__(self, name: str, files: list[Path], splits: list[str]) -> None:
        super().__init__(name)
        self.files = files
        self._splits = splits

    def splits(self) -> list[str]:
        return self._splits

    def rows(self) -> Iterator[RawRow]:
        offset = 0
        for path in self.files:
            last = 0
            for raw in file_source(path).rows():
                last = raw.row
                raw.row += offset
                raw.file = path.name
                yield raw
            offset += last


_FILE_READERS: dict[str, Callable[[Path], Source]] = {
    ".jsonl": JsonlSource,
    ".ndjson": JsonlSource,
    ".json": JsonSource,
    ".csv": CsvSource,
    ".tsv": lambda p: CsvSource(p, "\t"),
    ".parquet": ParquetSource,
    ".pq": ParquetSource,
}


def file_source(path: Path) -> Source:
    """A reader for one file, by suffix; an unknown suffix is sniffed (JSON lines or JSON)."""
    suffix = _suffix(path)
    if suffix in _FILE_READERS:
        return _FILE_READERS[suffix](path)
    if suffix == ".arrow":

        def load() -> Any:
            import datasets

            return datasets.Dataset.from_file(str(path))

        return ArrowDatasetSource(str(path), load, "arrow")
    with _open_binary(path) as fh:
        head = fh.read(4096).lstrip(codecs.BOM_UTF8 + b" \t\r\n")
    if head.startswith(b"{"):
        return JsonlSource(path)
    if head.startswith(b"["):
        return JsonSource(path)
    raise KTODataError(
        f"{path}: unknown file type {suffix or '(no suffix)'!r}: use .jsonl, .json, .csv, .tsv or .parquet"
    )


def _saved_dataset(path: Path, split: str) -> Source | None:
    if (path / "dataset_dict.json").is_file():
        try:
            splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
        except (ValueError, OSError) as e:
            raise KTODataError(f"{path}: unreadable dataset_dict.json: {e}") from None
        if split not in splits:
            raise KTODataError(f"{path}: no split {split!r} (available: {', '.join(splits) or 'none'})")

        def load_dict() -> Any:
            import datasets

            return datasets.load_from_disk(str(path))[split]

        return ArrowDatasetSource(f"{path}[{split}]", load_dict, "datasets (save_to_disk)", list(splits))
    if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():

        def load() -> Any:
            import datasets

            return datasets.load_from_disk(str(path))

        return ArrowDatasetSource(str(path), load, "datasets (save_to_disk)")
    return None


def _hf_dir(path: Path, split: str) -> Source:
    import datasets

    try:
        builder = datasets.load_dataset_builder(str(path))
    except Exception as e:  # datasets raises many types for an unusable directory
        raise KTODataError(f"{path}: not a dataset directory (no data files found): {e}") from None
    data_files = {str(k): [Path(f) for f in v] for k, v in (builder.config.data_files or {}).items()}
    if split not in data_files:
        raise KTODataError(f"{path}: no split {split!r} (available: {', '.join(data_files) or 'none'})")
    files = data_files[split]
    if all(_suffix(f) in _FILE_READERS for f in files):
        return MultiFileSource(f"{path}[{split}]", files, list(data_files))

    def load() -> Any:  # formats we do not read ourselves: let datasets read them
        return datasets.load_dataset(str(path), split=split)

    return ArrowDatasetSource(f"{path}[{split}]", load, "datasets (directory)", list(data_files))


def _hub(name: str, split: str, streaming: bool) -> Source:
    def load() -> Any:
        import datasets

        try:
            return datasets.load_dataset(name, split=split, streaming=streaming)
        except Exception as e:  # network, auth, missing dataset: one user-facing error
            raise KTODataError(
                f"cannot load dataset {name!r} (split {split!r}) with datasets.load_dataset: {e}"
            ) from None

    return ArrowDatasetSource(f"{name}[{split}]", load, "datasets (hub)")


def open_source(location: str | os.PathLike[str], split: str = "train", streaming: bool = False) -> Source:
    """A Source for a file, a dataset directory or a hub dataset name (see module doc)."""
    if location is None or str(location).strip() == "":
        raise KTODataError("no data file given (set data.train_file)")
    path = Path(location).expanduser()
    if path.is_file():
        return file_source(path)
    if path.is_dir():
        return _saved_dataset(path, split) or _hf_dir(path, split)
    text = str(location)
    # A hub id is "name" or "owner/name"; anything else that is missing is a missing file.
    looks_like_path = (
        text.startswith((".", "/", "~"))
        or text.count("/") > 1
        or "\\" in text
        or _suffix(path) in _FILE_READERS
        or _suffix(path) == ".arrow"
    )
    if looks_like_path:
        raise KTODataError(f"{location}: file not found")
    return _hub(text, split, streaming)
