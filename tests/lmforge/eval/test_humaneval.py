from __future__ import annotations

import math
from itertools import combinations

import pytest

from lmforge.eval.data import load_humaneval
from lmforge.eval.metrics import pass_at_k
from lmforge.eval.tasks.humaneval import execute, score
from lmforge.sandbox import SandboxConfig


@pytest.mark.parametrize(
    "n,c,k", [(1, 0, 1), (1, 1, 1), (10, 3, 1), (10, 3, 10), (20, 5, 10), (20, 15, 10), (200, 7, 10)]
)
def test_pass_at_k_equals_exact_formula(n, c, k):
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12, abs=1e-12)


def test_pass_at_k_equals_brute_force_over_subsets():
    # Definition: probability that a random k-subset of the n samples holds a correct one.
    outcomes = [True, False, False, True, False, False, False]
    for k in range(1, len(outcomes) + 1):
        subsets = list(combinations(outcomes, k))
        brute = sum(any(s) for s in subsets) / len(subsets)
        assert pass_at_k(len(outcomes), sum(outcomes), k) == pytest.approx(brute)


def test_canonical_solutions_pass_and_wrong_ones_fail(benchmarks):
    problems = load_humaneval(benchmarks / "humaneval")
    assert len(problems) == 164
    sandbox = SandboxConfig(timeout_s=10, cpu_s=10)
    canonical = execute(problems, [[p["canonical_solution"]] for p in problems], sandbox, workers=4)
    assert score(canonical, [1]) == {"pass@1": 1.0}, [p["task_id"] for p, ok in zip(problems, canonical) if not ok[0]]
    subset = problems[:12]
    wrong = execute(subset, [["    return None\n"] for _ in subset], sandbox, workers=4)
    assert score(wrong, [1]) == {"pass@1": 0.0}
    # Mixed samples per problem: pass@k follows the exact formula on the observed counts.
    mixed = execute(
        subset[:2],
        [[p["canonical_solution"], "    return None\n", "    raise SystemExit(0)\n"] for p in subset[:2]],
        sandbox,
        workers=4,
    )
    assert mixed == [[True, False, False]] * 2  # exiting early with status 0 is not a pass
    assert score(mixed, [1]) == {"pass@1": pytest.approx(sum(map(sum, mixed)) / 6)}
