"""Rule-based rewards, a registry, and weighted combination from config."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lmforge.data.tasks import Task, is_code_problem, is_correct, task_from_record

RewardFn = Callable[[Sequence[str], Sequence[Mapping[str, Any]]], list[float]]
REWARDS: dict[str, Callable[..., RewardFn]] = {}

_NUMBER_RE = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_GSM8K_RE = re.compile(r"####\s*(.+?)\s*$", re.MULTILINE)
_THINK_RE = re.compile(r"^\s*<think>\s*(\S.*?)</think>\s*(\S.*)$", re.DOTALL)


def register(name: str) -> Callable[[Callable[..., RewardFn]], Callable[..., RewardFn]]:
    def wrap(factory: Callable[..., RewardFn]) -> Callable[..., RewardFn]:
        REWARDS[name] = factory
        return factory

    return wrap


def parse_number(text: str) -> float | None:
    """A number written with thousands commas, a currency sign or a trailing period; None if absent."""
    cleaned = text.strip().replace("$", "").replace(",", "").rstrip(".")
    try:
        return float(cleaned)
    except ValueError:
        return None


def final_number(text: str) -> float | None:
    """The GSM8K-style answer: after the last ``#### ``, else the last number in the text."""
    marked = _GSM8K_RE.findall(text)
    if marked:
        found = _NUMBER_RE.findall(marked[-1])
        return parse_number(found[0]) if found else None
    numbers = _NUMBER_RE.findall(text)
    return parse_number(numbers[-1]) if numbers else None


def _reference_answer(sample: Mapping[str, Any]) -> str:
    if "answer" in sample:
        return str(sample["answer"])
    if "task" in sample:
        return _as_task(sample["task"]).answer
    raise KeyError("math_answer needs an 'answer' (or 'task') field in each sample")


def _as_task(value: Any) -> Task:
    return value if isinstance(value, Task) else task_from_record(dict(value))


@register("math_answer")
def math_answer(tolerance: float = 1e-6) -> RewardFn:
    """1.0 when the completion's final number equals the reference (GSM8K ``#### N`` or a trailing number)."""

    def score(completions: Sequence[str], samples: Sequence[Mapping[str, Any]]) -> list[float]:
        out = []
        for completion, sample in zip(completions, samples, strict=True):
            predicted = final_number(completion)
            reference = final_number(_reference_answer(sample))
            ok = predicted is not None and reference is not None and abs(predicted - reference) <= tolerance
            out.append(1.0 if ok else 0.0)
        return out

    return score


@register("reasoning_format")
def reasoning_format() -> RewardFn:
    """1.0 when the completion is ``<think>non-empty reasoning</think>`` followed by a non-empty answer."""

    def score(completions: Sequence[str], samples: Sequence[Mapping[str, Any]]) -> list[float]:
        return [1.0 if _THINK_RE.match(c) else 0.0 for c in completions]

    return score


@register("task_answer")
def task_answer() -> RewardFn:
    """1.0 when `lmforge.data.tasks.is_correct` accepts the completion for the sample's task."""

    def score(completions: Sequence[str], samples: Sequence[Mapping[str, Any]]) -> list[float]:
        return [1.0 if is_correct(_as_task(s["task"]), c) else 0.0 for c, s in zip(completions, samples, strict=True)]

    return score


def verified_correct(completions: Sequence[str], samples: Sequence[Mapping[str, Any]]) -> list[float] | None:
    """1.0/0.0 per completion from the task's own verifier, whatever reward trains the policy:
    the sandboxed unit tests for code problems (`code_tests`), `is_correct` for generated tasks,
    the final number for answer records (GSM8K). None when the samples carry no answer (free-form
    prompts a reward model scores): no accuracy to report, and the summed reward is no stand-in,
    since a format bonus would count as "correct"."""
    if samples and all(is_code_problem(s.get("task")) for s in samples):
        return REWARDS["code_tests"]()(completions, samples)  # registered by lmforge/rewards/code.py
    if samples and all("task" in s for s in samples):
        return task_answer()(completions, samples)
    if samples and all("answer" in s for s in samples):
        return math_answer()(completions, samples)
    return None


@dataclass
class CombinedReward:
    """sum_i weight_i * reward_i; `components` keeps each term for logging."""

    functions: dict[str, RewardFn]
    weights: dict[str, float]

    def __call__(
        self, completions: Sequence[str], samples: Sequence[Mapping[str, Any]]
    ) -> tuple[list[float], dict[str, list[float]]]:
        components = {name: fn(completions, samples) for name, fn in self.functions.items()}
        total = [0.0] * len(completions)
        for name, values in components.items():
            total = [t + self.weights[name] * v for t, v in zip(total, values, strict=True)]
        return total, components


def check_reward_spec(spec: Mapping[str, Any]) -> None:
    """Fail at config time on unknown reward names or malformed entries, without building any reward
    (a reward model is loaded only when the stage builds its model)."""
    if not spec:
        raise ValueError("reward config is empty: name at least one of " + ", ".join(sorted(REWARDS)))
    for name, options in spec.items():
        if name not in REWARDS:
            raise KeyError(f"unknown reward '{name}' in config; known: {sorted(REWARDS)}")
        if not isinstance(options, (int, float, Mapping)) and options is not None:
            raise TypeError(f"reward '{name}': expected a weight or {{weight: w, **kwargs}}, got {options!r}")


def build_reward(spec: Mapping[str, Any]) -> CombinedReward:
    """From config ``{name: {weight: w, **kwargs}}`` (or ``{name: w}``) to a `CombinedReward`."""
    check_reward_spec(spec)
    functions, weights = {}, {}
    for name, options in spec.items():
        options = {"weight": float(options)} if isinstance(options, (int, float)) else dict(options or {})
        weights[name] = float(options.pop("weight", 1.0))
        functions[name] = REWARDS[name](**options)
    return CombinedReward(functions, weights)
