"""File readers: one local file -> raw rows (`RawRow`), each accounted for (see readers.py).

`file_source(path)` picks the reader by suffix (`.gz` accepted for the text formats and for
Parquet); `RawRow` and `Source` are the types every reader yields / implements.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
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
    file_row: int | None = None  # the row within `file` (multi-file sources; `row` runs across files)
    shape: str | None = None  # set when a third-party layout was renamed (data/layouts.py)
    policy: bool = False  # `error` is a policy skip (a tie), not a malformed row: strict mode does not stop


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

    def locate(self, row: int) -> str:
        """How to name source row `row` to a person: "row 7" (multi-file sources: "file.json row 3")."""
        return f"row {row}"


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
            if self.path.suffix.lower() == ".gz":  # Parquet needs random access: decompress into memory
                import pyarrow as pa

                with gzip.open(self.path, "rb") as fh:
                    pf = pq.ParquetFile(pa.BufferReader(fh.read()))
            else:
                pf = pq.ParquetFile(self.path)
        except (EOFError, gzip.BadGzipFile) as e:
            raise KTODataError(f"{self.name}: not a readable gzip file: {e}") from None
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
