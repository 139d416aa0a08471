"""Atomic file writes: a killed process never leaves a half-written file behind.

Each writer writes to a temporary file in the same directory, flushes and fsyncs it,
then `os.replace`s it over the target (atomic on POSIX), so a reader sees either the
old file or the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    """Prospect's cache directory (converted models, tokenized data, reference log-probs):
    ``$PROSPECT_CACHE`` or ``~/.cache/prospect``."""
    env = os.environ.get("PROSPECT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "prospect"


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int = 2) -> None:
    """Write `obj` as JSON to `path` atomically (UTF-8, non-ASCII kept readable)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")


def append_jsonl(path: str | os.PathLike[str], obj: Any) -> None:
    """Append one JSON line and fsync. A torn last line is skipped by `read_jsonl`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | os.PathLike[str]) -> list[Any]:
    """Read a JSON-lines file written by `append_jsonl`, skipping a torn trailing line."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def replace_directory(new: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Move the finished directory `new` to `target`; an existing `target` is removed only after
    the new one is in place, so a process killed half-way leaves one of the two, never half."""
    import shutil

    new, target = Path(new), Path(target)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --- checksummed cache directories ---------------------------------------------------
MANIFEST = "checksums.json"  # written last: the sha256 of every other file of the directory


def file_sha256(path: str | os.PathLike[str]) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _digests(directory: Path) -> dict[str, str]:
    return {
        f.relative_to(directory).as_posix(): file_sha256(f)
        for f in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    }


def write_manifest(directory: str | os.PathLike[str]) -> None:
    """Record the sha256 of every file under `directory` (call it once the directory is complete)."""
    d = Path(directory)
    atomic_write_json(d / MANIFEST, _digests(d))


def manifest_intact(directory: str | os.PathLike[str]) -> bool:
    """Whether `directory` holds exactly the files its manifest lists, each with its sha256.
    False for a missing or unreadable manifest (a writer killed before it finished)."""
    d = Path(directory)
    try:
        recorded = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and bool(recorded) and recorded == _digests(d)
