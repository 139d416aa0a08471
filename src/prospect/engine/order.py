"""The order of training rows: samplers whose batches are a function of the seed (and epoch) alone.

Samplers, all resumable mid-epoch (Accelerate calls `set_epoch(e)` before each epoch, also on
the loader that skips the batches a resumed run already trained on):

- `PlannedLengthSampler`: length-grouped batches composed for the least padded compute of the
  step's layout (`engine.batch_plan`), drawn from `seed + epoch`: the default order.
- `EpochSeededLengthGroupedSampler`: transformers' length-grouped order, drawn from `seed + epoch`
  (where the rows' shapes are not known to the trainer).
- `FixedBatchSampler`: micro-batches composed once for the whole run (`planned_train_batches`),
  their order reshuffled each epoch. KTO's reference point pairs prompt i with the completion of
  row (i - 1) of the same micro-batch (`data.layout.mismatched_order`); with the composition fixed
  before training, those mismatched pairs are known in advance, so their reference log-probs are
  precomputed and cached like the main ones (`engine.reference.attach_reference`) instead of
  costing a reference forward pass in every step. TRL fixes its pairs the same way (its KL
  completions are assigned when the dataset is prepared, and it requires sequential sampling).
  Epoch 0 yields exactly the batches the length-grouped (or random) sampler would.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import LengthGroupedSampler

from prospect.engine.batch_plan import PaddedCost, Shape, plan_batches


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' LengthGroupedSampler whose order is a function of `seed + epoch` only.

    Accelerate's data loader calls `set_epoch(epoch)` before each epoch (also on a loader that
    skips the batches a resumed run has already trained on), so epoch e has the same order in
    an uninterrupted run and in one resumed in the middle of it.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths, generator=torch.Generator())
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Any:
        self.generator.manual_seed(self.seed + self.epoch)
        return super().__iter__()


class PlannedLengthSampler(Sampler[int]):
    """Yields `plan_batches(shapes, batch_size, seed + epoch, cost, groups)` flattened, for a loader of that batch size."""

    def __init__(
        self,
        shapes: Sequence[Shape],
        batch_size: int,
        seed: int,
        cost: PaddedCost,
        groups: Sequence[Hashable] | None = None,
    ) -> None:
        super().__init__()
        self.shapes, self.batch_size, self.cost = list(shapes), int(batch_size), cost
        self.groups = list(groups) if groups is not None else None
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        batches = plan_batches(self.shapes, self.batch_size, self.seed + self.epoch, self.cost, self.groups)
        return iter([i for b in batches for i in b])

    def __len__(self) -> int:
        return len(self.shapes)


def planned_train_batches(
    args: Any, shapes: Sequence[Shape], cost: PaddedCost, groups: Sequence[Hashable] | None = None
) -> list[list[int]]:
    """The micro-batches (row indices, in loader order) of epoch 0 under `args` (one process).

    args: the run's `transformers.TrainingArguments` (train_sampling_strategy, train_batch_size,
    data_seed / seed); shapes: the rows' (prompt, longest completion) tokens
    (`data.tokenize.row_shapes`); cost: the step layout's padded cost (`engine.batch_plan`);
    groups: the rows' labels, whose mix each batch keeps (`data.tokenize.row_groups`).
    Length-grouped: epoch 0 of `PlannedLengthSampler`.
    """
    seed = args.data_seed if args.data_seed is not None else args.seed
    n, size = len(shapes), int(args.train_batch_size)
    if args.train_sampling_strategy == "group_by_length":
        return plan_batches(shapes, size, seed, cost, groups)
    if args.train_sampling_strategy == "sequential":
        flat = list(range(n))
    else:
        flat = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
    return [flat[i : i + size] for i in range(0, n, size)]


class FixedBatchSampler(Sampler[int]):
    """Yields `batches` (row indices; all full but possibly the last) flattened, for a loader of that batch size.

    Epoch 0 keeps the planned order; each later epoch permutes the full batches with `seed + epoch`
    (`shuffle`), the short batch (if any) staying last so that every loader batch is one planned
    batch. The rows of each batch, and their order inside it, never change.
    """

    def __init__(self, batches: list[list[int]], seed: int, shuffle: bool = True) -> None:
        super().__init__()
        if any(len(b) != len(batches[0]) for b in batches[:-1]):
            raise ValueError("FixedBatchSampler: every batch but the last must have the same size")
        self.batches = [list(b) for b in batches]
        self.seed, self.shuffle, self.epoch = int(seed), shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def epoch_batches(self) -> list[list[int]]:
        if self.epoch == 0 or not self.shuffle or len(self.batches) < 2:
            return self.batches
        full = len(self.batches) if len(self.batches[-1]) == len(self.batches[0]) else len(self.batches) - 1
        perm = torch.randperm(full, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        return [self.batches[i] for i in perm] + self.batches[full:]

    def __iter__(self) -> Iterator[int]:
        return iter([i for b in self.epoch_batches() for i in b])

    def __len__(self) -> int:
        return sum(len(b) for b in self.batches)
