"""Reward functions for RL: each is `fn(completions, samples) -> list[float]`, combined by weight.

A reward function takes ``completions: list[str]`` plus per-sample metadata (``samples: list[dict]``,
carrying e.g. the generated `Task` under "task" or a reference ``answer``) and returns a list of floats.
"""

from __future__ import annotations

from lmforge.rewards import code, reward_model  # noqa: F401  register "code_tests", "reward_model"
from lmforge.rewards.core import (
    REWARDS,
    CombinedReward,
    build_reward,
    check_reward_spec,
    math_answer,
    parse_number,
    reasoning_format,
    register,
    task_answer,
    verified_correct,
)

__all__ = [
    "REWARDS",
    "CombinedReward",
    "build_reward",
    "check_reward_spec",
    "math_answer",
    "parse_number",
    "reasoning_format",
    "register",
    "task_answer",
    "verified_correct",
]
