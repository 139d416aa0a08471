"""Conversions between unpaired rows, pairs and rankings (all deterministic given the seed).

pairs -> unpaired (`data.pairwise_sampling_strategy`):
- `all`: every pair gives its chosen completion as a desirable row and its rejected one
  as an undesirable row (2 rows per pair; TRL's `unpair_preference_dataset`);
- `random`: every pair gives one row, chosen or rejected by a fair coin seeded by
  (seed, pair index);
- `balanced`: every pair gives one row, alternating chosen / rejected in pair order
  (the first side picked by a seeded coin), so the label counts differ by at most one.
With `data.convert_pairwise_to_binary: false` pairs are not converted: reading for unpaired
training rejects them (`pair_not_converted`, pipeline.py), and the report's unpaired view
(labels) leaves them out.

unpaired -> pairs (the pairing rule): rows are grouped by (system, prompt); within a group
the k-th desirable row (in file order) is paired with the k-th undesirable row, so each
completion is used at most once and a group yields min(#desirable, #undesirable) pairs.
Rows left over (a prompt with only one label, or the excess of one label) are *unused*
and counted in the report.

ranking -> pairs (`data.ranking_strategy`), responses grouped into quality levels, best
first (file order within a level); tied responses are treated alike, so every response of
the best level pairs:
- `best_vs_rest`: every best-level response against every strictly worse one;
- `best_worst`: every best-level response against every worst-level one (the middle levels
  are in no pair and counted as `unused` in the report's `ranking_to_pairs`);
- `adjacent`: every response against every response of the next quality level down;
- `all_pairs`: every (better, worse) combination.
So `responses == used + unused` per ranking (`ranking_pair_usage`).
ranking -> unpaired: with `best_worst`, the best-ranked responses are desirable, the worst-
ranked undesirable and the middle ones unused; with any other strategy the best-ranked
responses are desirable and all the others undesirable.

factual re-orientation (Factual-DPO, delta > 0): a pair whose chosen is non-factual (h_w=1)
and whose rejected is factual (h_l=0) is swapped, so the factual completion is preferred.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from prospect.data.formats import Item, RankingItem
from prospect.data.index import LabelGroups, digest
from prospect.data.records import PairedRecord, UnpairedRecord
from prospect.data.text import text_key

PAIRING_RULE = "per (system, prompt): k-th desirable with k-th undesirable, in file order"


def coin(seed: int, index: int) -> int:
    """A deterministic fair bit for (seed, index)."""
    return digest("coin", str(seed), str(index)) & 1


def unpair_pair(pair: PairedRecord, index: int, strategy: str = "all", seed: int = 42) -> list[UnpairedRecord]:
    """One pair -> its unpaired rows by `strategy` (see module doc); `index` = pair's position."""
    chosen = UnpairedRecord(
        pair.prompt, pair.chosen, True, pair.system, None, pair.h_w, pair.source_row, "pair:chosen", pair.tools
    )
    rejected = UnpairedRecord(
        pair.prompt, pair.rejected, False, pair.system, None, pair.h_l, pair.source_row, "pair:rejected", pair.tools
    )
    if strategy == "all":
        return [chosen, rejected]
    if strategy == "random":
        return [chosen] if coin(seed, index) else [rejected]
    if strategy == "balanced":
        return [chosen] if (index + coin(seed, -1)) % 2 == 0 else [rejected]
    raise ValueError(f"unknown pairwise_sampling_strategy {strategy!r}")


def _levels(item: RankingItem) -> list[list[int]]:
    """Response indices grouped by quality, best level first, file order within a level."""
    levels: dict[float, list[int]] = {}
    for i, q in enumerate(item.quality):
        levels.setdefault(q, []).append(i)
    return [levels[q] for q in sorted(levels, reverse=True)]


def ranking_to_pairs(item: RankingItem, strategy: str = "best_vs_rest") -> list[PairedRecord]:
    """Ranked responses -> pairs by `strategy` (see module doc)."""
    levels = _levels(item)
    order = [i for level in levels for i in level]
    q = item.quality
    if strategy == "best_vs_rest":
        idx = [(i, j) for i in levels[0] for j in order if q[i] > q[j]]
    elif strategy == "best_worst":
        idx = [(i, j) for i in levels[0] for j in levels[-1]]
    elif strategy == "adjacent":
        idx = [(i, j) for upper, lower in zip(levels, levels[1:]) for i in upper for j in lower]
    elif strategy == "all_pairs":
        idx = [(i, j) for a, i in enumerate(order) for j in order[a + 1 :] if q[i] > q[j]]
    else:
        raise ValueError(f"unknown ranking_strategy {strategy!r}")
    return [
        PairedRecord(
            item.prompt,
            item.responses[i],
            item.responses[j],
            item.system,
            None,
            None,
            None,
            item.source_row,
            f"ranking:{strategy}",
            {"chosen_index": i, "rejected_index": j},
            item.tools,
        )
        for i, j in idx
    ]


def ranking_pair_usage(item: RankingItem, pairs: list[PairedRecord]) -> tuple[int, int]:
    """(responses in at least one of `pairs`, responses in none): they add up to len(item.responses)."""
    used = {p.extra["chosen_index"] for p in pairs} | {p.extra["rejected_index"] for p in pairs}
    return len(used), len(item.responses) - len(used)


def ranking_to_unpaired(item: RankingItem, strategy: str = "best_vs_rest") -> tuple[list[UnpairedRecord], int]:
    """Ranked responses -> (unpaired rows, number of responses unused) (see module doc)."""
    levels = _levels(item)
    best, worst = set(levels[0]), set(levels[-1])
    out, unused = [], 0
    for i, response in enumerate(item.responses):
        if i in best:
            label, origin = True, "ranking:best"
        elif strategy != "best_worst" or i in worst:
            label, origin = False, "ranking:worst" if i in worst else "ranking:rest"
        else:
            unused += 1
            continue
        rec = UnpairedRecord(item.prompt, response, label, item.system, None, None, item.source_row, origin, item.tools)
        out.append(rec)
    return out, unused


def group_key(record: UnpairedRecord) -> int:
    """Digest of (system, prompt): rows with equal keys can be paired."""
    return digest(record.system or "", text_key(record.prompt))


def pair_unpaired(records: list[UnpairedRecord]) -> tuple[list[PairedRecord], list[UnpairedRecord]]:
    """Unpaired rows -> (pairs by the pairing rule, unused rows); pairs ordered by source row."""
    groups: dict[int, tuple[list[UnpairedRecord], list[UnpairedRecord]]] = {}
    for rec in records:
        desirable, undesirable = groups.setdefault(group_key(rec), ([], []))
        (desirable if rec.label else undesirable).append(rec)
    pairs, unused = [], []
    for desirable, undesirable in groups.values():
        k = min(len(desirable), len(undesirable))
        for d, u in zip(desirable, undesirable):
            pairs.append(
                PairedRecord(
                    d.prompt,
                    d.completion,
                    u.completion,
                    d.system,
                    d.h,
                    u.h,
                    None,
                    d.source_row,
                    "unpaired:paired",
                    {"rejected_source_row": u.source_row},
                    d.tools,
                )
            )
        unused += desirable[k:] + undesirable[k:]
    pairs.sort(key=lambda p: p.source_row or 0)
    unused.sort(key=lambda r: r.source_row or 0)
    return pairs, unused


def reorient_factual_pairs(pairs: list[PairedRecord], both_nonfactual: str = "keep") -> tuple[list[PairedRecord], int]:
    """Swap pairs with h_w=1 and h_l=0 (non-factual chosen over a factual rejected); returns (pairs, swapped).

    both_nonfactual (`method.both_nonfactual`): what to do with pairs whose answers are both
    non-factual (h_w = h_l = 1): "keep" them (they train as plain DPO, the margin term is 0) or
    "drop" them (as a public SafeDPO reimplementation does); the dropped count is
    `len(pairs) - len(result)`, which the caller reports.
    """
    if both_nonfactual not in ("keep", "drop"):
        raise ValueError(f"both_nonfactual must be 'keep' or 'drop', got {both_nonfactual!r}")
    out, swapped = [], 0
    for p in pairs:
        if both_nonfactual == "drop" and p.h_w == 1 and p.h_l == 1:
            continue
        if p.h_w == 1 and p.h_l == 0:
            swapped += 1
            p = replace(
                p, chosen=p.rejected, rejected=p.chosen, h_w=p.h_l, h_l=p.h_w, extra={**p.extra, "reoriented": True}
            )
        out.append(p)
    return out, swapped


class ViewCounter:
    """Counts both views of the accepted items without keeping them (used for the report).

    labels: desirable/undesirable rows in the unpaired view (native rows, pairs (unless
    convert_pairwise_to_binary is false) and rankings converted as above); pairs: pairs in the
    paired view (native pairs, unpaired rows paired by the pairing rule, rankings by ranking_strategy).
    """

    def __init__(self, cfg: Any, seed: int, on_disk: bool = False) -> None:
        self.strategy = cfg.pairwise_sampling_strategy
        self.convert_pairs = bool(getattr(cfg, "convert_pairwise_to_binary", True))
        self.ranking_strategy = cfg.ranking_strategy
        self.seed = seed
        self.groups = LabelGroups(on_disk)
        self.unpaired = {"rows": 0, "desirable": 0, "undesirable": 0}
        self.from_pairs = {"pairs": 0, "desirable": 0, "undesirable": 0}
        self.from_rankings = {
            "rows": 0,
            "responses": 0,
            "pairs": 0,
            "paired_responses": 0,
            "unpaired_responses": 0,
            "desirable": 0,
            "undesirable": 0,
            "unused": 0,
        }

    def add(self, item: Item) -> None:
        if isinstance(item, UnpairedRecord):
            self.unpaired["rows"] += 1
            self.unpaired["desirable" if item.label else "undesirable"] += 1
            self.groups.add(group_key(item), item.label)
        elif isinstance(item, PairedRecord):
            if self.convert_pairs:
                for rec in unpair_pair(item, self.from_pairs["pairs"], self.strategy, self.seed):
                    self.from_pairs["desirable" if rec.label else "undesirable"] += 1
            self.from_pairs["pairs"] += 1
        else:
            r = self.from_rankings
            r["rows"] += 1
            pairs = ranking_to_pairs(item, self.ranking_strategy)
            used, unused_in_pairs = ranking_pair_usage(item, pairs)
            r["pairs"] += len(pairs)
            r["responses"] += len(item.responses)
            r["paired_responses"] += used
            r["unpaired_responses"] += unused_in_pairs
            recs, unused = ranking_to_unpaired(item, self.ranking_strategy)
            r["unused"] += unused
            for rec in recs:
                r["desirable" if rec.label else "undesirable"] += 1

    def result(self) -> dict[str, Any]:
        """{'labels': {...}, 'pairs': n, 'conversions': {...}}."""
        grouped = self.groups.pairs()
        self.groups.close()
        u, p, r = self.unpaired, self.from_pairs, self.from_rankings
        labels = {k: u[k] + p[k] + r[k] for k in ("desirable", "undesirable")}
        conversions = {
            "pairs_to_unpaired": {"strategy": self.strategy, "converted": self.convert_pairs, **p},
            "unpaired_to_pairs": {
                "rule": PAIRING_RULE,
                "rows": u["rows"],
                "pairs": grouped,
                "unused": u["rows"] - 2 * grouped,
            },
            "ranking_to_pairs": {
                "strategy": self.ranking_strategy,
                "rows": r["rows"],
                "responses": r["responses"],
                "pairs": r["pairs"],
                "used": r["paired_responses"],  # responses in at least one pair
                "unused": r["unpaired_responses"],  # used + unused == responses
            },
            "ranking_to_unpaired": {
                "strategy": self.ranking_strategy,
                "rows": r["rows"],
                "responses": r["responses"],
                "desirable": r["desirable"],
                "undesirable": r["undesirable"],
                "unused": r["unused"],
            },
        }
        return {"labels": labels, "pairs": p["pairs"] + grouped + r["pairs"], "conversions": conversions}
