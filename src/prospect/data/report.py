"""The account of every input row: `DataReport` (written as data_report.json).

Invariant: `accepted + len(rejected) == rows_read` for each source. Each rejected row
is `{"row": n, "field": f, "code": c, "reason": "f: text"}` (+ `line` for line-based files
when the physical line differs from the row number, + `file` for multi-file sources, whose
`row` is then the row within that file and `source_row` the running number across files).
`to_dict()` gives the JSON object of `prospect data inspect --json`: format, shapes,
rows_read, accepted, rejected, rejected_by_reason, labels, pairs, suggested_weights,
lengths, conversions, filters, notes, warnings and, after `load_records`, records
(per split), balancing, split and reoriented; `validation` holds the validation file's
own report when there is one. The lead adds token-level sections through `extra`.

Length statistics are in characters. min, max, mean are exact; percentiles are exact
up to 10,000 values and estimated from a seeded 10,000-value reservoir sample beyond.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

RESERVOIR = 10_000
MAX_EXAMPLE_CHARS = 160  # of one example reason in an error message


def one_line(text: str) -> str:
    """`text` with every line break (as str.splitlines sees them) escaped: for one-line messages."""
    return "".join(ch if len(f"a{ch}b".splitlines()) == 1 else repr(ch)[1:-1] for ch in text)


class LengthStats:
    """Streaming length statistics with bounded memory (exact min/max/mean, reservoir percentiles)."""

    def __init__(self, cap: int = RESERVOIR, seed: int = 0) -> None:
        self.cap = cap
        self.count = 0
        self.total = 0
        self.min: int | None = None
        self.max: int | None = None
        self.sample: list[int] = []
        self._rng = random.Random(seed)
        self._w = 1.0
        self._next = 0

    def add(self, n: int) -> None:
        self.count += 1
        self.total += n
        if self.min is None or n < self.min:
            self.min = n
        if self.max is None or n > self.max:
            self.max = n
        if len(self.sample) < self.cap:
            self.sample.append(n)
            if len(self.sample) == self.cap:
                self._skip()
        elif self.count == self._next:
            self.sample[self._rng.randrange(self.cap)] = n
            self._skip()

    def _skip(self) -> None:
        # Li's algorithm L: jump straight to the next value that enters the reservoir.
        rng = self._rng
        self._w *= math.exp(math.log(rng.random() or 1e-300) / self.cap)
        self._next = (
            self.count + int(math.log(rng.random() or 1e-300) / math.log1p(-self._w)) + 1
            if self._w < 1
            else self.count + 1
        )

    @staticmethod
    def _percentile(sorted_values: list[int], p: float) -> float:
        # Linear interpolation between closest ranks (numpy's default).
        k = (len(sorted_values) - 1) * p
        lo, hi = math.floor(k), math.ceil(k)
        return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo))

    def histogram(self, bins: int = 30) -> dict[str, list[float]]:
        """Equal-width histogram of the sample, counts scaled to the full count (estimates beyond the cap)."""
        if not self.sample:
            return {"edges": [], "counts": []}
        lo, hi = min(self.sample), max(self.sample)
        width = max((hi - lo) / bins, 1e-9) if hi > lo else 1.0
        nbins = bins if hi > lo else 1
        counts = [0] * nbins
        for v in self.sample:
            counts[min(int((v - lo) / width), nbins - 1)] += 1
        scale = self.count / len(self.sample)
        return {"edges": [lo + i * width for i in range(nbins + 1)], "counts": [round(c * scale) for c in counts]}

    def to_dict(self) -> dict[str, Any]:
        if not self.count:
            return {"count": 0}
        s = sorted(self.sample)
        return {
            "count": self.count,
            "min": self.min,
            "max": self.max,
            "mean": round(self.total / self.count, 2),
            "p50": self._percentile(s, 0.5),
            "p90": self._percentile(s, 0.9),
            "p99": self._percentile(s, 0.99),
            "exact_percentiles": self.count <= self.cap,
            "histogram": self.histogram(),
        }


@dataclass
class DataReport:
    """What happened to every row of one source, plus what the loader did with the rows."""

    source: str
    reader: str = ""
    format: str = "unknown"
    rows_read: int = 0
    accepted: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    shapes: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=lambda: {"desirable": 0, "undesirable": 0})
    pairs: int = 0
    suggested_weights: dict[str, float] = field(
        default_factory=lambda: {"desirable_weight": 1.0, "undesirable_weight": 1.0}
    )
    lengths: dict[str, LengthStats] = field(default_factory=dict)
    conversions: dict[str, Any] = field(default_factory=dict)
    filters: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    streaming: bool = False
    stopped_at_max_samples: bool = False
    records: dict[str, Any] | None = None
    balancing: dict[str, Any] | None = None
    split: dict[str, Any] | None = None
    reoriented: int | None = None
    validation: DataReport | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # ---- accounting ------------------------------------------------------
    def reject(
        self, row: int, field_name: str, code: str, reason: str, *, line: int | None = None, file: str | None = None
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {"row": row, "field": field_name, "code": code, "reason": f"{field_name}: {reason}"}
        if line is not None and line != row:
            entry["line"] = line
        if file is not None:
            entry["file"] = file
        self.rejected.append(entry)
        return entry

    def length(self, name: str, n: int) -> None:
        stats = self.lengths.get(name)
        if stats is None:
            stats = self.lengths[name] = LengthStats(seed=len(self.lengths))
        stats.add(n)

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.rejected:
            counts[entry["code"]] = counts.get(entry["code"], 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def reconciles(self) -> bool:
        """accepted + rejected == rows read (for this source and the validation source)."""
        ok = self.accepted + len(self.rejected) == self.rows_read
        return ok and (self.validation is None or self.validation.reconciles)

    def reasons_summary(self, limit: int = 3) -> str:
        """The most common rejection reasons, each with its count and first example, on one line:
        "2 unknown_label (e.g. row 3: label: unknown label 'meh' ...), 1 duplicate (e.g. row 4: ...)"."""
        by_reason = self.rejected_by_reason
        first: dict[str, dict[str, Any]] = {}
        for entry in self.rejected:
            first.setdefault(entry["code"], entry)
        parts = []
        for code, n in list(by_reason.items())[:limit]:
            entry = first[code]
            where = (f"{entry['file']}:" if "file" in entry else "") + f"row {entry['row']}"
            reason = entry["reason"]
            if len(reason) > MAX_EXAMPLE_CHARS:
                reason = reason[: MAX_EXAMPLE_CHARS - 3] + "..."
            parts.append(f"{n} {code} (e.g. {where}: {reason})")
        if len(by_reason) > limit:
            parts.append(f"{len(by_reason) - limit} more reason{'s' if len(by_reason) - limit > 1 else ''}")
        return one_line(", ".join(parts))

    def summary_line(self) -> str:
        """One line for the console: what was read, kept and rejected."""
        text = f"{self.source}: read {self.rows_read} rows ({self.format}), accepted {self.accepted}, rejected {len(self.rejected)}"
        if self.rejected:
            top = ", ".join(f"{n} {code}" for code, n in list(self.rejected_by_reason.items())[:3])
            text += f" ({top}); training on the accepted rows — details in data_report.json"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable account (see module doc)."""
        out: dict[str, Any] = {
            "source": self.source,
            "reader": self.reader,
            "format": self.format,
            "shapes": dict(self.shapes),
            "rows_read": self.rows_read,
            "accepted": self.accepted,
            "rejected": list(self.rejected),
            "rejected_by_reason": self.rejected_by_reason,
            "labels": dict(self.labels),
            "pairs": self.pairs,
            "suggested_weights": dict(self.suggested_weights),
            "lengths": {k: v.to_dict() for k, v in self.lengths.items()},
            "conversions": self.conversions,
            "filters": self.filters,
            "notes": dict(self.notes),
            "warnings": list(self.warnings),
            "streaming": self.streaming,
            "stopped_at_max_samples": self.stopped_at_max_samples,
        }
        for key in ("records", "balancing", "split", "reoriented"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.validation is not None:
            out["validation"] = self.validation.to_dict()
        out.update(self.extra)
        return out
