"""Length-grouped batches composed for the least padded compute of the step's layout (engine/batch_plan.py)."""

from __future__ import annotations

import random

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from helpers import write_config, write_jsonl
from prospect.engine.batch_plan import PaddedCost, plan_batches
from prospect.engine.order import PlannedLengthSampler


def _total(batches, shapes, cost) -> float:
    return sum(cost.batch([shapes[i] for i in b]) for b in batches)


def test_rows_of_equal_totals_but_other_shapes_are_batched_by_shape():
    """Worked by hand, batch 2, k = 1. Rows (prompt, suffix): 0 (100, 1), 1 (1, 100), 2 (100, 2), 3 (2, 100).

    Sorted by prompt + suffix (101, 101, 102, 102) the batches are {0, 1} and {2, 3}, each paying a
    100-token prompt and a 100-token suffix: 2 x (100 + 100) x 2 = 800. By shape: {0, 2} costs
    2 x (100 + 2) = 204 and {1, 3} 2 x (2 + 100) = 204, together 408. Without prompt sharing a batch
    pays 2 x max(P + S): grouping by total is already best there, {0, 1} 2 x 101 + {2, 3} 2 x 102 = 406.
    """
    shapes = [(100, 1), (1, 100), (100, 2), (2, 100)]
    shared = PaddedCost(suffix_weight=1.0, shared_prompt=True)
    batches = plan_batches(shapes, 2, seed=0, cost=shared)
    assert sorted(map(sorted, batches)) == [[0, 2], [1, 3]]
    assert _total(batches, shapes, shared) == 408
    unshared = PaddedCost(suffix_weight=1.0, shared_prompt=False)
    assert _total(plan_batches(shapes, 2, seed=0, cost=unshared), shapes, unshared) == 406
    # k weighs the suffixes: a KTO row's mismatched completion counts half -> 2 x (100 + 1.5 x 2)
    assert PaddedCost(suffix_weight=1.5).batch([(100, 1), (100, 2)]) == 206


def _independent_shapes(n: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.randint(32, 256), rng.randint(16, 256)) for _ in range(n)]


def _stock(shapes, batch: int, seed: int) -> list[list[int]]:
    """transformers' LengthGroupedSampler on prompt + suffix, cut into batches."""
    flat = list(
        LengthGroupedSampler(batch, lengths=[p + s for p, s in shapes], generator=torch.Generator().manual_seed(seed))
    )
    return [flat[i : i + batch] for i in range(0, len(flat), batch)]


def test_a_plan_is_a_partition_with_the_costliest_batch_first_and_the_short_one_last():
    shapes = _independent_shapes(203, seed=1)  # batch 8: 25 full batches and one of 3
    cost = PaddedCost(suffix_weight=1.5)
    batches = plan_batches(shapes, 8, seed=5, cost=cost)
    assert sorted(i for b in batches for i in b) == list(range(203))
    assert [len(b) for b in batches] == [8] * 25 + [3]
    costs = [cost.batch([shapes[i] for i in b]) for b in batches[:-1]]
    assert costs[0] == max(costs)
    assert costs[1:] != sorted(costs[1:], reverse=True)  # the rest in random order, not long to short
    assert plan_batches(shapes, 8, seed=5, cost=cost) == batches  # a function of the seed
    assert plan_batches(shapes, 8, seed=6, cost=cost) != batches


def test_the_plan_pads_less_than_transformers_length_grouped_order():
    """Prompts and completions of independent lengths (bench's `mixed`): the stock order sorts by the
    total and groups within megabatches of at least four, so it pads both dimensions; the plan must
    cost less on every seed and size tried, and never more than the plain sort of its own megabatch."""
    for n, seed in ((24, 0), (24, 1), (128, 2), (400, 3)):
        shapes = _independent_shapes(n, seed)
        cost = PaddedCost(suffix_weight=1.5)
        planned = _total(plan_batches(shapes, 8, seed=seed, cost=cost), shapes, cost)
        stock = _total(_stock(shapes, 8, seed), shapes, cost)
        assert planned < 0.9 * stock, (n, planned, stock)
        plain = sorted(range(n), key=lambda i: cost.row(shapes[i]))  # up to 400 rows: one megabatch
        assert planned <= _total([plain[i : i + 8] for i in range(0, n, 8)], shapes, cost)


def test_large_data_keeps_random_batch_composition():
    """Beyond 50 batches the rows are split at random into megabatches (transformers' cap), so two
    seeds compose different batches; within one megabatch only ties differ."""
    shapes = _independent_shapes(1000, seed=4)  # batch 4: 250 batches, 5 megabatches
    cost = PaddedCost(suffix_weight=2.0)
    a = {tuple(sorted(b)) for b in plan_batches(shapes, 4, seed=0, cost=cost)}
    b = {tuple(sorted(b)) for b in plan_batches(shapes, 4, seed=1, cost=cost)}
    assert len(a & b) < 0.2 * len(a)


def test_the_sampler_is_a_function_of_seed_and_epoch():
    shapes = _independent_shapes(40, seed=2)
    sampler = PlannedLengthSampler(shapes, 8, seed=3, cost=PaddedCost(suffix_weight=2.0))
    orders = []
    for epoch in (0, 1, 0):
        sampler.set_epoch(epoch)
        torch.manual_seed(epoch + 100)  # the global RNG (what a resume restores late) plays no part
        orders.append(list(sampler))
    assert orders[0] == orders[2] != orders[1]
    assert sorted(orders[0]) == sorted(orders[1]) == list(range(40)) and len(sampler) == 40


def test_a_dpo_run_draws_its_batches_from_the_plan_for_its_layout(tmp_path):
    """Through the recipe's own steps on the tiny model: a DPO trainer composes its length-grouped
    batches for chosen and rejected on one shared prompt (k = 2), and its loader yields those batches."""
    from prospect.data.tokenize import row_shapes
    from prospect.recipes.config import load_run_config
    from prospect.recipes.preparation import prepare
    from prospect.recipes.training import add_reference, load_models, make_trainer, tokenize

    rng = random.Random(0)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    rows = [
        {
            "prompt": " ".join(rng.choice(words) for _ in range(rng.randint(2, 30))),
            "chosen": " ".join(rng.choice(words) for _ in range(rng.randint(2, 30))),
            "rejected": " ".join(rng.choice(words) for _ in range(rng.randint(2, 30))),
        }
        for _ in range(24)
    ]
    path = write_config(
        tmp_path / "run.yaml",
        method="dpo",
        data={"train_file": str(write_jsonl(tmp_path / "pairs.jsonl", rows)), "validation_split_percentage": 0},
        evaluation={"num_generation_samples": 0},
    )
    run = prepare(load_run_config(str(path)))
    models = load_models(run)
    trainer = make_trainer(run, models, add_reference(run, models, tokenize(run, models)), quiet=True)
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, PlannedLengthSampler) and sampler.cost == PaddedCost(2.0, shared_prompt=True)
    shapes = row_shapes(trainer.train_dataset)
    expected = plan_batches(shapes, 4, seed=0, cost=sampler.cost)
    loaded = list(trainer.get_train_dataloader())
    assert [b["n"] for b in loaded] == [len(b) for b in expected]
    for batch, rows_ in zip(loaded, expected):  # prompts once (without their last token), then 2B suffixes
        assert batch["prefix_input_ids"].shape == (len(rows_), max(shapes[i][0] for i in rows_) - 1)
        assert batch["input_ids"].shape == (2 * len(rows_), 1 + max(shapes[i][1] for i in rows_))
    # the planned batches pad less than the stock order on the same rows
    assert _total(expected, shapes, sampler.cost) < _total(_stock(shapes, 4, 0), shapes, sampler.cost)


def test_batches_keep_the_label_mix_when_length_and_label_go_together():
    """Desirable completions long, undesirable short (as in tests/helpers' data and often in real
    feedback): by length alone every batch would hold one label. With the labels as groups each batch
    of 8 holds 6 desirable and 2 undesirable rows (the data's 3:1), and shapes still group within a label."""
    rng = random.Random(7)
    labels = [True] * 72 + [False] * 24
    shapes = [(rng.randint(10, 60), rng.randint(120, 200) if good else rng.randint(5, 20)) for good in labels]
    cost = PaddedCost(suffix_weight=1.5)
    by_length = plan_batches(shapes, 8, seed=0, cost=cost)
    assert sum(len({labels[i] for i in b}) == 1 for b in by_length) >= 10  # what the groups prevent
    mixed = plan_batches(shapes, 8, seed=0, cost=cost, groups=labels)
    assert sorted(i for b in mixed for i in b) == list(range(96))
    assert all(sum(labels[i] for i in b) == 6 for b in mixed)
    shuffled = list(range(96))
    random.Random(1).shuffle(shuffled)
    unplanned = _total([shuffled[i : i + 8] for i in range(0, 96, 8)], shapes, cost)
    assert _total(mixed, shapes, cost) < 0.9 * unplanned
