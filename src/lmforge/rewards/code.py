"""`code_tests`: 1.0 when a completion passes its problem's unit tests.

Scored by the very checker HumanEval's eval uses (`lmforge.sandbox.check_completion`): the
completion runs sandboxed and only answers calls with plain data, while the tests and the verdict
live in a separate trusted process. So a policy cannot learn to print, exit, hook or compare its
way to reward: the attack corpus in tests/lmforge/eval/test_humaneval_forgery.py scores 0 here too.

A sample's problem is its ``task`` record in HumanEval's shape (``prompt``, ``test``,
``entry_point``): `lmforge.data.prompts.read_prompt_jsonl` reads HumanEval-style JSONL into it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lmforge.data.tasks import CODE_PROBLEM_KEYS, is_code_problem
from lmforge.rewards.core import RewardFn, register
from lmforge.sandbox import SandboxConfig, check_all


def _problem(sample: Mapping[str, Any]) -> dict:
    task = sample.get("task")
    if not is_code_problem(task):
        raise KeyError(
            f"code_tests needs each sample's 'task' to hold {list(CODE_PROBLEM_KEYS)} (a HumanEval-style record)"
        )
    return {key: task[key] for key in CODE_PROBLEM_KEYS}


@register("code_tests")
def code_tests(timeout_s: float = 10.0, memory_mb: int = 1024, isolation: str = "auto", workers: int = 2) -> RewardFn:
    """1.0 per completion that passes its problem's tests in the sandbox, else 0.0 (a timeout is 0.0)."""
    sandbox = SandboxConfig(timeout_s=timeout_s, cpu_s=max(1, int(timeout_s)), memory_mb=memory_mb, isolation=isolation)

    def score(completions: Sequence[str], samples: Sequence[Mapping[str, Any]]) -> list[float]:
        problems = [_problem(s) for s in samples]
        rows = check_all(problems, [[c] for c in completions], sandbox, workers)
        return [1.0 if row[0].passed else 0.0 for row in rows]

    return score
