"""Row indexes that must see the whole file: exact duplicates and prompts with both labels.

Both keep 64-bit digests (BLAKE2b) of canonical row keys, in memory by default. In
streaming mode they live in a temporary SQLite file instead, so memory stays bounded
(SQLite's page cache, ~2 MiB) however large the input; the file is deleted on close.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile

_SEP = "\x1f"


def digest(*parts: str) -> int:
    """Signed 64-bit digest of the joined parts (fits an SQLite INTEGER)."""
    data = _SEP.join(parts).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big", signed=True)


class _Scratch:
    def __init__(self) -> None:
        fd, self.path = tempfile.mkstemp(prefix="prospect-data-", suffix=".sqlite")
        os.close(fd)
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")

    def close(self) -> None:
        self.db.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


class DigestIndex:
    """Remembers which row first had each digest; `check_add` answers "seen before, at row N?"."""

    def __init__(self, on_disk: bool = False) -> None:
        self._mem: dict[int, int] | None = None if on_disk else {}
        self._disk: _Scratch | None = None
        if on_disk:
            self._disk = _Scratch()
            self._disk.db.execute("CREATE TABLE seen (h INTEGER PRIMARY KEY, row INTEGER) WITHOUT ROWID")

    def check_add(self, h: int, row: int) -> int | None:
        """Add `h` for `row`; return the earlier row if `h` was already there (then nothing is added)."""
        if self._mem is not None:
            first = self._mem.setdefault(h, row)
            return None if first == row else first
        assert self._disk is not None
        cur = self._disk.db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (h, row))
        if cur.rowcount:
            return None
        return self._disk.db.execute("SELECT row FROM seen WHERE h = ?", (h,)).fetchone()[0]

    def close(self) -> None:
        if self._disk is not None:
            self._disk.close()
            self._disk = None


class LabelGroups:
    """Counts desirable/undesirable rows per prompt, to count the pairs they can form."""

    _BATCH = 10_000

    def __init__(self, on_disk: bool = False) -> None:
        self._mem: dict[int, list[int]] | None = None if on_disk else {}
        self._disk: _Scratch | None = None
        self._buf: list[tuple[int, int]] = []
        if on_disk:
            self._disk = _Scratch()
            self._disk.db.execute("CREATE TABLE g (h INTEGER, l INTEGER)")

    def add(self, h: int, label: bool) -> None:
        if self._mem is not None:
            counts = self._mem.setdefault(h, [0, 0])
            counts[0 if label else 1] += 1
            return
        self._buf.append((h, int(label)))
        if len(self._buf) >= self._BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._disk is not None and self._buf:
            self._disk.db.executemany("INSERT INTO g VALUES (?, ?)", self._buf)
            self._buf.clear()

    def pairs(self) -> int:
        """Sum over prompts of min(#desirable, #undesirable): the pairs the zip rule forms."""
        if self._mem is not None:
            return sum(min(d, u) for d, u in self._mem.values())
        self._flush()
        assert self._disk is not None
        (n,) = self._disk.db.execute(
            "SELECT COALESCE(SUM(MIN(d, u)), 0) FROM (SELECT SUM(l) AS d, COUNT(*) - SUM(l) AS u FROM g GROUP BY h)"
        ).fetchone()
        return int(n)

    def close(self) -> None:
        if self._disk is not None:
            self._disk.close()
            self._disk = None
