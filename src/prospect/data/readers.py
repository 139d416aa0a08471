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
- `.parquet`: read in record batches with pyarrow; `.parquet.gz` is decompressed into memory first
  (Parquet needs random access).
- a directory written by `datasets` `save_to_disk` (Dataset or DatasetDict: the split is picked);
- any other directory: a script-free Hugging Face dataset directory; its data files for the
  split are resolved by `datasets` (README `configs`, `data/train-*.parquet`, `train.jsonl`, ...)
  and read with the readers above (`file` names the file and `row` the row within it);
- anything else that does not exist locally: `datasets.load_dataset(name, split=...)` (hub).
"""

from __future__ import annotations

import bisect
import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prospect.data.readers_files import (
    _FILE_READERS,
    ArrowDatasetSource,
    RawRow,
    Source,
    _suffix,
    file_source,
)
from prospect.errors import KTODataError


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


class MultiFileSource(Source):
    """Several data files of one split (a Hugging Face dataset directory).

    `RawRow.row` runs on across files (it is the records' `source_row`, unique in the source);
    `RawRow.file` and `RawRow.file_row` name the file and the row within it, which is what
    reports and errors print.
    """

    reader = "hf-dir"

    def __init__(self, name: str, files: list[Path], splits: list[str]) -> None:
        super().__init__(name)
        self.files = files
        self._splits = splits
        self._starts: list[tuple[int, str]] = []  # (rows before the file, file name), in order

    def splits(self) -> list[str]:
        return self._splits

    def locate(self, row: int) -> str:
        i = bisect.bisect_left([start for start, _ in self._starts], row) - 1
        if i < 0:
            return f"row {row}"
        start, name = self._starts[i]
        return f"{name} row {row - start}"

    def rows(self) -> Iterator[RawRow]:
        offset = 0
        self._starts = []
        for path in self.files:
            last = 0
            self._starts.append((offset, path.name))
            for raw in file_source(path).rows():
                last = raw.row
                raw.file_row = raw.row
                raw.row += offset
                raw.file = path.name
                yield raw
            offset += last


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


__all__ = ["RawRow", "Source", "ArrowDatasetSource", "MultiFileSource", "file_source", "open_source", "read_rows"]
