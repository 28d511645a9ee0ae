"""The suites the release policy speaks of have the sizes it claims (conf/release_policy.yaml):
`release` and `full` measure every required metric on at least its `min_n` items of the real
benchmark files, and `quick` and `ci` fall below some minimum, which is why their gate verdict is
FAIL (insufficient n) and the main job exports with an explicit gate=skip. Items are counted
with the tasks' own loaders and each suite's own options (subjects, limit)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lmforge.eval.data import load_gsm8k, load_humaneval, load_mmlu, mmlu_subjects, read_jsonl
from lmforge.eval.release_policy import load_policy
from lmforge.eval.tasks.safety import SafetyConfig

CONF = Path(__file__).resolve().parents[3] / "conf"
POLICY = load_policy(CONF / "release_policy.yaml")


def suite_items(name: str, benchmarks: Path) -> dict[str, int]:
    """Items each policy metric is measured on when suite `name` runs on the real files."""
    tasks = OmegaConf.to_container(OmegaConf.load(CONF / "eval" / f"{name}.yaml"))["tasks"]
    items: dict[str, int] = {}
    if "mmlu" in tasks:
        opts = tasks["mmlu"] or {}
        subjects = opts.get("subjects") or mmlu_subjects(benchmarks / "mmlu")
        limit = opts.get("limit")
        items["mmlu.acc"] = sum(len(load_mmlu(benchmarks / "mmlu", s, "test")[:limit]) for s in subjects)
    if "gsm8k" in tasks:
        limit = (tasks["gsm8k"] or {}).get("limit")
        items["gsm8k.exact_match_flexible"] = len(load_gsm8k(benchmarks / "gsm8k", "test")[:limit])
    if "humaneval" in tasks:
        limit = (tasks["humaneval"] or {}).get("limit")
        items["humaneval.pass@1"] = len(load_humaneval(benchmarks / "humaneval")[:limit])
    if "safety" in tasks:
        limit = (tasks["safety"] or {}).get("limit")
        rows = read_jsonl(SafetyConfig().prompts)
        harmful = sum(r["kind"] == "harmful" for r in rows)
        benign = sum(r["kind"] == "benign" for r in rows)
        if limit is not None:
            harmful, benign = min(harmful, (limit + 1) // 2), min(benign, limit // 2)
        items["safety.refusal_rate"], items["safety.over_refusal_rate"] = harmful, benign
    return items


def short_of_policy(items: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Required metrics measured on fewer items than `min_n` (or not at all): {metric: (n, min_n)}."""
    return {
        metric: (items.get(metric, 0), rule.min_n)
        for metric, rule in POLICY.metrics.items()
        if rule.required and items.get(metric, 0) < rule.min_n
    }


@pytest.mark.parametrize("suite", ["release", "full"])
def test_release_suites_meet_every_minimum(suite, benchmarks):
    items = suite_items(suite, benchmarks)
    assert short_of_policy(items) == {}, items
    assert items["mmlu.acc"] > 14000 and items["gsm8k.exact_match_flexible"] == 1319  # every test item


@pytest.mark.parametrize("suite", ["quick", "ci"])
def test_small_suites_fall_below_the_policy(suite, benchmarks):
    assert short_of_policy(suite_items(suite, benchmarks))
