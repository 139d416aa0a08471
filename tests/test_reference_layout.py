"""Batch planning of the reference precompute (engine/reference_logps.py): suffix runs of least
cost by dynamic programming and prompt groups within a token budget, worked by hand and checked
against brute force over every contiguous cut."""

import itertools
import random

from prospect.engine.reference_logps import prompt_groups, suffix_batches


def _cost(widths, runs, call_cost):
    return sum(len(r) * max(widths[i] for i in r) + call_cost for r in runs)


def test_suffix_batches_worked_by_hand():
    """widths [2, 10, 3, 9] sort to indices [0, 2, 3, 1] (widths 2, 3, 9, 10). With call cost 5
    and budget 40 a run of n costs n * widest + 5:
      one run 4*10+5 = 45; [2,3][9,10] 11+25 = 36; [2][3][9,10] 7+8+25 = 40;
      [2,3][9][10] 11+14+15 = 40; [2][3,9,10] 7+35 = 42; [2,3,9][10] 32+15 = 47  -> 36 is least.
    Call cost 0: every suffix alone costs 2+3+9+10 = 24, the sum of widths, a lower bound.
    Call cost 100: one run 140 beats any two (>= 200); under budget 30 one run (40 tokens) is
    not allowed and [2,3][9,10] 106+120 = 226 beats [2][3,9,10] 102+130 = 232."""
    widths = [2, 10, 3, 9]
    assert suffix_batches(widths, 40, call_cost=5) == [[0, 2], [3, 1]]
    assert suffix_batches(widths, 40, call_cost=0) == [[0], [2], [3], [1]]
    assert suffix_batches(widths, 40, call_cost=100) == [[0, 2, 3, 1]]
    assert suffix_batches(widths, 30, call_cost=100) == [[0, 2], [3, 1]]
    assert suffix_batches([50, 4], 30, call_cost=100) == [[1], [0]]  # wider than the budget: alone
    assert suffix_batches([], 30) == []


def test_suffix_batches_are_the_least_cost_contiguous_cuts():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 7)
        widths = [rng.randint(1, 30) for _ in range(n)]
        budget, call_cost = rng.randint(20, 120), rng.choice([0, 3, 48])
        runs = suffix_batches(widths, budget, call_cost=call_cost)
        assert sorted(i for r in runs for i in r) == list(range(n))  # every suffix exactly once
        assert all(len(r) == 1 or len(r) * max(widths[i] for i in r) <= budget for r in runs)
        order = sorted(range(n), key=lambda i: widths[i])
        best = None
        for k in range(n):
            for cuts in itertools.combinations(range(1, n), k):
                edges = [0, *cuts, n]
                cand = [order[a:b] for a, b in zip(edges, edges[1:])]
                if all(len(r) == 1 or len(r) * max(widths[i] for i in r) <= budget for r in cand):
                    c = _cost(widths, cand, call_cost)
                    best = c if best is None else min(best, c)
        assert _cost(widths, runs, call_cost) == best, (widths, budget, call_cost, runs)


def test_prompt_groups_worked_by_hand():
    """Prompt lengths [4, 1, 6, 2] sort to rows [1, 3, 0, 2]; each row has 3 suffix tokens; budget 20.
    Group cost = n * longest prompt + summed suffix tokens:
      [1]: 1+3; add row 3 (len 2): 2*2+6 = 10 <= 20; add row 0 (len 4): 3*4+9 = 21 > 20 -> cut;
      [0]: 4+3; add row 2 (len 6): 2*6+6 = 18 <= 20 -> groups [[1, 3], [0, 2]]."""
    assert prompt_groups([4, 1, 6, 2], [3, 3, 3, 3], 20) == [[1, 3], [0, 2]]
    assert prompt_groups([4, 1, 6, 2], [3, 3, 3, 3], 1000) == [[1, 3, 0, 2]]
    assert prompt_groups([40, 1], [3, 3], 20) == [[1], [0]]  # a row over budget forms its own group
