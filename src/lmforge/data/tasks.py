"""Generated tasks whose answers are computable: the project's own SFT, preference and reward data.

Four kinds: arithmetic word problems, unit conversions, list sorting and string reversal.
Every response ends in one fixed line, ``Answer: X``, which SFT teaches and `extract_answer`
reads back. Each task also carries plausible wrong answers (off-by-one, wrong operation,
wrong conversion factor, unsorted or half-reversed output) that become the "rejected" side
of preference pairs, written in the same format so a preference is about correctness only.

Splits are disjoint by construction: a prompt belongs to "train" or "heldout" according to a
hash of its text, so no seed can put the same prompt on both sides.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

KINDS = ("arithmetic", "unit_conversion", "sorting", "reversal")
SPLITS = ("train", "heldout")
HELDOUT_FRACTION = 0.2
ANSWER_PREFIX = "Answer:"
_ANSWER_RE = re.compile(r"Answer:\s*(.*?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Task:
    """One verifiable task. `work` is the short reasoning line the reference response shows."""

    prompt: str
    answer: str
    wrong_answers: tuple[str, ...]
    kind: str
    work: str = ""
    wrong_work: tuple[str, ...] = field(default=())

    def response(self) -> str:
        """The reference assistant response: optional work line, then the answer line."""
        return format_response(self.answer, self.work)

    def wrong_response(self, index: int) -> str:
        work = self.wrong_work[index] if self.wrong_work else ""
        return format_response(self.wrong_answers[index], work)


def format_response(answer: str, work: str = "") -> str:
    return f"{work}\n{ANSWER_PREFIX} {answer}" if work else f"{ANSWER_PREFIX} {answer}"


def extract_answer(text: str) -> str | None:
    """The text after the last ``Answer:`` line, or None when the format is missing."""
    matches = _ANSWER_RE.findall(text)
    if not matches or not matches[-1]:
        return None
    return matches[-1]


def canonical_answer(answer: str) -> str:
    """Canonical form for comparison: collapsed whitespace; numbers compared by value ("3.0" == "3").
    Not GSM8K's exact match (`lmforge.eval.metrics.normalize_answer`), whose numbers stay strings."""
    text = " ".join(answer.strip().rstrip(".").split())
    number = text.replace(",", "")
    try:
        value = float(number)
    except ValueError:
        return text
    return str(int(value)) if value.is_integer() else repr(value)


def is_correct(task: Task, completion: str) -> bool:
    predicted = extract_answer(completion)
    if predicted is None:
        return False
    if task.kind in ("sorting", "reversal"):
        return " ".join(predicted.split()) == task.answer  # exact strings, not numbers
    return canonical_answer(predicted) == canonical_answer(task.answer)


def split_of(prompt: str) -> str:
    """Deterministic split from the prompt's hash, independent of the generator's seed."""
    bucket = int(hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "heldout" if bucket < HELDOUT_FRACTION else "train"


# ---------------------------------------------------------------- generators
_NAMES = ("Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jo", "Kim", "Liam", "Mia", "Noor")
_ITEMS = ("apples", "books", "coins", "pens", "cards", "shells", "stamps", "marbles", "cookies", "stickers")


def _distinct_wrong(correct: str, candidates: Iterable[str], n: int = 3) -> tuple[str, ...]:
    out: list[str] = []
    for c in candidates:
        if c != correct and c not in out:
            out.append(c)
    return tuple(out[:n])


def _arithmetic(rng: random.Random) -> Task:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    op = rng.choice(("add", "sub", "mul"))
    if op == "add":
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        prompt = f"{name} has {a} {item}. {name} gets {b} more. How many {item} does {name} have now?"
        expr, value, slip = f"{a} + {b}", a + b, a - b
    elif op == "sub":
        a = rng.randint(10, 90)
        b = rng.randint(1, a - 1)
        prompt = f"{name} has {a} {item} and gives away {b}. How many {item} are left?"
        expr, value, slip = f"{a} - {b}", a - b, a + b
    else:
        a, b = rng.randint(2, 9), rng.randint(2, 12)
        prompt = f"{name} buys {a} boxes with {b} {item} in each box. How many {item} is that in total?"
        expr, value, slip = f"{a} x {b}", a * b, a + b
    wrong = _distinct_wrong(str(value), (str(value + 1), str(slip), str(value - 1), str(value + 10)))
    return Task(
        prompt=prompt,
        answer=str(value),
        wrong_answers=wrong,
        kind="arithmetic",
        work=f"{expr} = {value}",
        wrong_work=tuple(f"{expr} = {w}" for w in wrong),
    )


# (from, to, factor): multiply a `from` amount by factor to get `to` units.
_CONVERSIONS = (
    ("km", "m", 1000),
    ("m", "cm", 100),
    ("cm", "mm", 10),
    ("kg", "g", 1000),
    ("hours", "minutes", 60),
    ("minutes", "seconds", 60),
    ("days", "hours", 24),
    ("liters", "milliliters", 1000),
    ("feet", "inches", 12),
    ("weeks", "days", 7),
)


def _unit_conversion(rng: random.Random) -> Task:
    src, dst, factor = rng.choice(_CONVERSIONS)
    amount = rng.randint(2, 200)
    value = amount * factor
    prompt = f"Convert {amount} {src} to {dst}."
    wrong_factors = [
        f for f in (factor * 10, factor // 10 if factor >= 100 else factor + 1, 100, 60, 12) if f != factor
    ]
    wrong = _distinct_wrong(str(value), [str(amount * f) for f in wrong_factors] + [str(value + amount)])
    return Task(
        prompt=prompt,
        answer=str(value),
        wrong_answers=wrong,
        kind="unit_conversion",
        work=f"{amount} x {factor} = {value}",
        wrong_work=tuple(f"{amount} x {int(w) // amount} = {w}" for w in wrong),
    )


def _sorting(rng: random.Random) -> Task:
    values = rng.sample(range(0, 50), rng.randint(3, 5))
    ordered = sorted(values)
    show = ", ".join
    prompt = f"Sort these numbers from smallest to largest: {show(map(str, values))}"
    swapped = list(ordered)
    i = rng.randrange(len(swapped) - 1)
    swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    candidates = [show(map(str, swapped)), show(map(str, reversed(ordered))), show(map(str, values))]
    answer = show(map(str, ordered))
    return Task(prompt=prompt, answer=answer, wrong_answers=_distinct_wrong(answer, candidates), kind="sorting")


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _reversal(rng: random.Random) -> Task:
    word = "".join(rng.choice(_LETTERS) for _ in range(rng.randint(3, 6)))
    answer = word[::-1]
    prompt = f"Reverse the letters of: {word}"
    swapped = list(answer)
    i = rng.randrange(len(swapped) - 1)
    swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    candidates = ["".join(swapped), word, answer[:-1], answer + answer[-1]]
    return Task(prompt=prompt, answer=answer, wrong_answers=_distinct_wrong(answer, candidates), kind="reversal")


GENERATORS: dict[str, Callable[[random.Random], Task]] = {
    "arithmetic": _arithmetic,
    "unit_conversion": _unit_conversion,
    "sorting": _sorting,
    "reversal": _reversal,
}


def make_tasks(kind: str | Sequence[str] = "mix", n: int = 1000, seed: int = 0, split: str = "train") -> list[Task]:
    """`n` distinct tasks of `kind` ("mix" = all kinds in turn) belonging to `split`."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; expected one of {SPLITS}")
    kinds = list(KINDS) if kind == "mix" else [kind] if isinstance(kind, str) else list(kind)
    unknown = [k for k in kinds if k not in GENERATORS]
    if unknown:
        raise ValueError(f"unknown task kind(s) {unknown}; expected 'mix' or some of {KINDS}")
    rng = random.Random(f"{seed}:{split}")
    tasks: list[Task] = []
    seen: set[str] = set()
    attempts = 0
    while len(tasks) < n:
        attempts += 1
        if attempts > 200 * n + 1000:
            raise RuntimeError(f"could not find {n} distinct {kinds} tasks for split {split!r}")
        task = GENERATORS[kinds[len(tasks) % len(kinds)]](rng)
        if task.prompt in seen or split_of(task.prompt) != split or not task.wrong_answers:
            continue
        seen.add(task.prompt)
        tasks.append(task)
    return tasks


# ---------------------------------------------------------------- public formats
def sft_record(task: Task) -> dict:
    """HF-style chat record: {"messages": [...]} plus the task metadata for scoring."""
    return {
        "messages": [{"role": "user", "content": task.prompt}, {"role": "assistant", "content": task.response()}],
        "kind": task.kind,
        "answer": task.answer,
    }


def preference_record(task: Task, rng: random.Random) -> dict:
    """{"prompt", "chosen", "rejected"} as in TRL / Anthropic-HH style preference files."""
    wrong = rng.randrange(len(task.wrong_answers))
    return {
        "prompt": task.prompt,
        "chosen": task.response(),
        "rejected": task.wrong_response(wrong),
        "kind": task.kind,
        "answer": task.answer,
    }


def task_record(task: Task) -> dict:
    return asdict(task)


# A HumanEval-style code problem record (RL prompts from JSONL): its tests are its verifier.
CODE_PROBLEM_KEYS = ("prompt", "test", "entry_point")


def is_code_problem(record: object) -> bool:
    return isinstance(record, Mapping) and all(key in record for key in CODE_PROBLEM_KEYS)


def task_from_record(record: dict) -> Task:
    return Task(
        prompt=record["prompt"],
        answer=record["answer"],
        wrong_answers=tuple(record.get("wrong_answers", ())),
        kind=record["kind"],
        work=record.get("work", ""),
        wrong_work=tuple(record.get("wrong_work", ())),
    )


def write_jsonl(records: Iterable[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def write_sft_jsonl(tasks: Iterable[Task], path: str | Path) -> Path:
    return write_jsonl((sft_record(t) for t in tasks), path)


def write_preference_jsonl(tasks: Iterable[Task], path: str | Path, seed: int = 0) -> Path:
    rng = random.Random(seed)
    return write_jsonl((preference_record(t, rng) for t in tasks), path)


def write_tasks_jsonl(tasks: Iterable[Task], path: str | Path) -> Path:
    return write_jsonl((task_record(t) for t in tasks), path)


def read_tasks_jsonl(path: str | Path) -> list[Task]:
    with Path(path).open(encoding="utf-8") as f:
        return [task_from_record(json.loads(line)) for line in f if line.strip()]
