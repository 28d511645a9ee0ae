"""Generated tasks: answers are right, wrong answers are wrong, splits never overlap."""

from __future__ import annotations

import json
import re

import pytest

from lmforge.data.chat import load_messages_jsonl
from lmforge.data.preference import load_preference_jsonl
from lmforge.data.tasks import KINDS, extract_answer, is_correct, make_tasks, write_preference_jsonl, write_sft_jsonl


def recompute(task) -> str:
    """Independent solver reading only the prompt text."""
    nums = [int(x) for x in re.findall(r"\d+", task.prompt)]
    if task.kind == "sorting":
        return ", ".join(map(str, sorted(nums)))
    if task.kind == "reversal":
        return task.prompt.rsplit(": ", 1)[1][::-1]
    if task.kind == "unit_conversion":
        factors = {
            ("km", "m"): 1000,
            ("m", "cm"): 100,
            ("cm", "mm"): 10,
            ("kg", "g"): 1000,
            ("hours", "minutes"): 60,
            ("minutes", "seconds"): 60,
            ("days", "hours"): 24,
            ("liters", "milliliters"): 1000,
            ("feet", "inches"): 12,
            ("weeks", "days"): 7,
        }
        src, dst = re.match(r"Convert \d+ (\w+) to (\w+)\.", task.prompt).groups()
        return str(nums[0] * factors[(src, dst)])
    a, b = nums
    if "more" in task.prompt:
        return str(a + b)
    if "gives away" in task.prompt:
        return str(a - b)
    return str(a * b)


@pytest.mark.parametrize("kind", KINDS)
def test_answers_verified_and_wrong_answers_rejected(kind):
    for task in make_tasks(kind, 200, seed=5):
        assert task.answer == recompute(task)
        assert is_correct(task, task.response())
        assert task.wrong_answers and not any(
            is_correct(task, task.wrong_response(i)) for i in range(len(task.wrong_answers))
        )


def test_splits_are_disjoint_for_any_seeds():
    train = {t.prompt for seed in (0, 1) for t in make_tasks("mix", 1500, seed, "train")}
    heldout = {t.prompt for seed in (0, 7) for t in make_tasks("mix", 300, seed, "heldout")}
    assert not train & heldout


def test_extract_answer_reads_the_last_answer_line():
    assert extract_answer("Answer: 3\nthinking\nAnswer:  12 ") == "12"
    assert extract_answer("the answer is 12") is None
    assert extract_answer("Answer:") is None


def test_jsonl_writers_round_trip(tmp_path):
    tasks = make_tasks("mix", 8, seed=2)
    sft = load_messages_jsonl(write_sft_jsonl(tasks, tmp_path / "sft.jsonl"))
    assert [c[1]["content"] for c in sft] == [t.response() for t in tasks]
    pairs = load_preference_jsonl(write_preference_jsonl(tasks, tmp_path / "pref.jsonl"))
    for pair, task in zip(pairs, tasks, strict=True):
        assert pair.prompt == [{"role": "user", "content": task.prompt}]
        assert is_correct(task, pair.chosen[0]["content"]) and not is_correct(task, pair.rejected[0]["content"])
    first = json.loads((tmp_path / "pref.jsonl").read_text().splitlines()[0])
    assert set(first) >= {"prompt", "chosen", "rejected"}
