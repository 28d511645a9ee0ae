"""Reward table: correct, wrong, malformed and missing-reasoning completions with expected rewards."""

import pytest

from lmforge.data.tasks import make_tasks
from lmforge.rewards import build_reward
from lmforge.rewards.core import final_number, math_answer, parse_number, reasoning_format, task_answer

MATH_TABLE = [
    ("She has 3 + 4 = 7 apples.\n#### 7", "7", 1.0),
    ("The total is 1,234 dollars.\n#### 1,234", "1234", 1.0),
    ("so the answer is 2.50", "2.5", 1.0),
    ("#### $1,000.", "1000", 1.0),
    ("I think 12 then\n#### 13", "12", 0.0),  # '####' wins over earlier numbers
    ("no number here", "5", 0.0),
    ("#### ", "5", 0.0),  # malformed marker
    ("-3 degrees", "-3", 1.0),
    ("Answer: 42", "#### 42", 1.0),  # GSM8K-style reference
]


@pytest.mark.parametrize("completion,answer,expected", MATH_TABLE)
def test_math_answer_table(completion, answer, expected):
    assert math_answer()([completion], [{"answer": answer}]) == [expected]


FORMAT_TABLE = [
    ("<think>3+4 is 7</think>\nAnswer: 7", 1.0),
    ("<think> </think> Answer: 7", 0.0),  # empty reasoning
    ("Answer: 7", 0.0),  # missing reasoning
    ("<think>3+4 is 7</think>", 0.0),  # no answer after reasoning
    ("<think>unterminated Answer: 7", 0.0),
]


@pytest.mark.parametrize("completion,expected", FORMAT_TABLE)
def test_reasoning_format_table(completion, expected):
    assert reasoning_format()([completion], [{}]) == [expected]


def test_parse_number():
    assert parse_number("1,234.5") == 1234.5
    assert parse_number("abc") is None
    assert final_number("a 1 b 22") == 22.0


def test_task_answer_uses_is_correct():
    tasks = make_tasks("mix", n=20, seed=3)
    completions = [t.response() for t in tasks] + [t.wrong_response(0) for t in tasks] + ["garbage"] * len(tasks)
    got = task_answer()(completions, [{"task": t} for t in tasks] * 3)
    assert got == [1.0] * 20 + [0.0] * 40


def test_weighted_combination():
    reward = build_reward({"task_answer": {"weight": 1.0}, "reasoning_format": 0.25})
    task = make_tasks("mix", n=1, seed=0)[0]
    good = f"<think>work</think>\n{task.response()}"
    total, parts = reward([good, task.response(), "junk"], [{"task": task}] * 3)
    assert total == [1.25, 1.0, 0.0]
    assert parts["reasoning_format"] == [1.0, 0.0, 0.0]


def test_unknown_reward_names_known_ones():
    with pytest.raises(KeyError, match="task_answer"):
        build_reward({"nope": 1.0})
