"""Length-grouped training batches composed for the least padded compute of the step's layout.

transformers' `LengthGroupedSampler` sorts megabatches of rows by one number (here prompt +
longest completion) and cuts them into batches; it makes at least four megabatches, so a data set
of fewer than 32 batches is hardly grouped at all (24 rows at batch 8: not at all). But a step's
compute is not one length. With prompts run once (`training.share_prompt`) a batch of B rows
computes B x P_max prompt tokens and k x B x S_max suffix tokens, P_max and S_max being the
batch's widest prompt and widest suffix (`data.layout.shared_layout`) and k the suffix rows a
prompt carries (`PaddedCost`); sorting by P + S puts a long-prompt/short-completion row beside a
short-prompt/long-completion one, and the batch pays for both maxima.

`plan_batches` shuffles the rows with the seed, splits them into megabatches of at most 50
batches (transformers' cap, which keeps batch composition random on large data), orders each
megabatch by the cheapest under `PaddedCost` of a few candidate orders -- sorted by a row's own
cost, and serpentine orders (bands by prompt length, by suffix length inside a band, the
direction alternating from band to band, and the same with the roles swapped) -- and cuts it
into batches. Rows of several groups (KTO: desirable and undesirable) are ordered within their
group and interleaved by their relative rank, so every batch keeps about the data's label mix:
desirable and undesirable completions often differ in length, and grouping by length alone would
make batches of one label only (no margin, a z0 from one side, gradient steps that alternate).
The batches then come in a seeded random order (not long to short as transformers'
megabatches), the most expensive first so that a run which runs out of memory does so at its
first step (as transformers arranges), a short last batch last (the loader cuts the flat order
into consecutive batches). On the length profiles of bench/ this cut the padded compute of a
KTO epoch by x1.04-x1.7 against the stock order (docs/performance.md).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

Shape = tuple[int, int]  # (prompt tokens, longest completion tokens) of a row
MAX_MEGABATCH = 50  # batches per megabatch, as transformers' LengthGroupedSampler


@dataclass(frozen=True)
class PaddedCost:
    """The padded compute of a batch, in token-forwards (a planning weight, not a timing).

    suffix_weight k: suffix rows per prompt, a row without gradients counting half (a forward
    without its backward): KTO 1 + 0.5 for its mismatched completion, DPO 2 (chosen and rejected).
    shared_prompt: prompts run once (cost B x (P_max + k x S_max)); otherwise every suffix row is a
    whole padded sequence (cost B x k x max(P + S)).
    """

    suffix_weight: float = 1.0
    shared_prompt: bool = True

    def row(self, shape: Shape) -> float:
        return shape[0] + self.suffix_weight * shape[1]

    def batch(self, shapes: Sequence[Shape]) -> float:
        if not shapes:
            return 0.0
        if self.shared_prompt:
            widest = max(p for p, _ in shapes) + self.suffix_weight * max(s for _, s in shapes)
        else:
            widest = self.suffix_weight * max(p + s for p, s in shapes)
        return len(shapes) * widest


def _chunks(order: Sequence[int], size: int) -> list[list[int]]:
    return [list(order[i : i + size]) for i in range(0, len(order), size)]


def _serpentine(
    rows: Sequence[int], band: Callable[[int], int], inner: Callable[[int], int], band_rows: int
) -> list[int]:
    """rows sorted by `band`, cut into bands of `band_rows`, each sorted by `inner`, every other band reversed."""
    ordered = sorted(rows, key=band)
    out: list[int] = []
    for b, start in enumerate(range(0, len(ordered), band_rows)):
        out += sorted(ordered[start : start + band_rows], key=inner, reverse=b % 2 == 1)
    return out


def _interleaved(
    rows: Sequence[int], groups: Sequence[Hashable] | None, order: Callable[[list[int]], list[int]]
) -> list[int]:
    """`order` applied within each group, the groups merged by relative rank ((k + 0.5) / size), so that
    any run of consecutive rows holds the groups in about their proportions."""
    if groups is None:
        return order(list(rows))
    members: dict[Hashable, list[int]] = {}
    for i in rows:
        members.setdefault(groups[i], []).append(i)
    if len(members) == 1:
        return order(list(rows))
    keyed = [((k + 0.5) / len(m), g, i) for g, (_, m) in enumerate(members.items()) for k, i in enumerate(order(m))]
    return [i for *_, i in sorted(keyed)]


def order_megabatch(
    rows: Sequence[int],
    shapes: Sequence[Shape],
    size: int,
    cost: PaddedCost,
    groups: Sequence[Hashable] | None = None,
) -> list[int]:
    """The cheapest under `cost` of the candidate orders of `rows` (module docstring), cut by `size`.

    groups: each row's group (None: one group). Sorts are stable, so rows that tie keep their
    (shuffled) order.
    """
    n_batches = math.ceil(len(rows) / size)
    prompt, suffix = (lambda i: shapes[i][0]), (lambda i: shapes[i][1])
    orders: list[Callable[[list[int]], list[int]]] = [lambda m: sorted(m, key=lambda i: cost.row(shapes[i]))]
    for bands in range(1, math.isqrt(n_batches) + 2):

        def band_rows(m: list[int], bands: int = bands) -> int:
            # a band is whole batches of the merged order; a group fills its share of them
            return max(1, round(math.ceil(n_batches / bands) * size * len(m) / len(rows)))

        orders.append(lambda m, br=band_rows: _serpentine(m, prompt, suffix, br(m)))
        orders.append(lambda m, br=band_rows: _serpentine(m, suffix, prompt, br(m)))

    def total(order: list[int]) -> float:
        return sum(cost.batch([shapes[i] for i in b]) for b in _chunks(order, size))

    candidates = [_interleaved(rows, groups, o) for o in orders]
    return min(candidates, key=total)  # the first of equals: the plain sort


def plan_batches(
    shapes: Sequence[Shape],
    batch_size: int,
    seed: int,
    cost: PaddedCost,
    groups: Sequence[Hashable] | None = None,
) -> list[list[int]]:
    """Row indices in batches of `batch_size` (a short one last), a function of `seed` alone (module docstring).

    groups: each row's group whose mix every batch keeps (KTO: the label); None: no groups.
    """
    n = len(shapes)
    if n == 0:
        return []
    rng = random.Random(seed)
    rows = list(range(n))
    rng.shuffle(rows)
    n_batches = math.ceil(n / batch_size)
    n_mega = math.ceil(n_batches / MAX_MEGABATCH)
    per_mega = math.ceil(n_batches / n_mega) * batch_size  # whole batches, so only the last may be short
    batches: list[list[int]] = []
    for start in range(0, n, per_mega):
        batches += _chunks(
            order_megabatch(rows[start : start + per_mega], shapes, batch_size, cost, groups), batch_size
        )
    short = [b for b in batches if len(b) < batch_size]
    full = [b for b in batches if len(b) == batch_size]
    rng.shuffle(full)
    if full:  # the most expensive batch first
        first = max(range(len(full)), key=lambda j: cost.batch([shapes[i] for i in full[j]]))
        full.insert(0, full.pop(first))
    return full + short
