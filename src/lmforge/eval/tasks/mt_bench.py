"""MT-Bench: 80 two-turn questions; the model answers both turns, a judge grades each turn
1-10 with FastChat's judge prompts (reference-guided for math, reasoning and coding). With
`baseline_answers` set, pairwise mode compares against them in both positions."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.eval.data import load_mt_bench, read_jsonl
from lmforge.eval.judge import (
    ChatFn,
    JudgeConfig,
    combine_swapped,
    judge_messages,
    make_chat_fn,
    parse_pair_verdict,
    parse_rating,
)
from lmforge.eval.lm import EvalLM, GenParams
from lmforge.eval.tasks import TaskResult

log = logging.getLogger(__name__)
NEEDS_REFERENCE = {"math", "reasoning", "coding"}


@dataclass
class MTBenchConfig:
    path: str = "../shared/benchmarks/mt_bench"
    limit: int | None = None
    max_new_tokens: int = 512
    categories: list[str] | None = None
    question_ids: list[int] | None = None
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    baseline_answers: str | None = None  # FastChat model_answer JSONL for pairwise mode
    answers_out: str | None = None  # where to write this model's answers (FastChat format)


def answer_questions(lm: EvalLM, questions: list[dict], max_new_tokens: int) -> list[list[str]]:
    params = GenParams(max_new_tokens=max_new_tokens)
    first = lm.generate_chat([[{"role": "user", "content": q["turns"][0]}] for q in questions], params)
    second = lm.generate_chat(
        [
            [
                {"role": "user", "content": q["turns"][0]},
                {"role": "assistant", "content": a},
                {"role": "user", "content": q["turns"][1]},
            ]
            for q, a in zip(questions, first)
        ],
        params,
    )
    return [[a, b] for a, b in zip(first, second)]


def _single_fields(q: dict, answers: list[str], ref: dict | None, turn: int) -> dict:
    ref_turns = ref["choices"][0]["turns"] if ref else ["", ""]
    if turn == 0:
        return {"question": q["turns"][0], "answer": answers[0], "ref_answer_1": ref_turns[0]}
    return {
        "question_1": q["turns"][0],
        "question_2": q["turns"][1],
        "answer_1": answers[0],
        "answer_2": answers[1],
        "ref_answer_1": ref_turns[0],
        "ref_answer_2": ref_turns[1],
    }


def _prompt_name(kind: str, category: str, turn: int) -> str:
    base = {"single": "single-v1", "pair": "pair-v2"}[kind]
    if category in NEEDS_REFERENCE:
        base = {"single": "single-math-v1", "pair": "pair-math-v1"}[kind]
    return base + ("-multi-turn" if turn == 1 else "")


def grade_single(
    chat: ChatFn, prompts: dict, questions: list[dict], answers: list[list[str]], references: dict, workers: int = 8
) -> list[list[float | None]]:
    jobs = [(i, t) for i in range(len(questions)) for t in (0, 1)]

    def one(job):
        i, turn = job
        q = questions[i]
        prompt = prompts[_prompt_name("single", q["category"], turn)]
        reply = chat(judge_messages(prompt, _single_fields(q, answers[i], references.get(q["question_id"]), turn)))
        return parse_rating(reply)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        ratings = list(pool.map(one, jobs))
    return [[ratings[2 * i], ratings[2 * i + 1]] for i in range(len(questions))]


def _pair_fields(q: dict, a: list[str], b: list[str], ref: dict | None, turn: int) -> dict:
    ref_turns = ref["choices"][0]["turns"] if ref else ["", ""]
    if turn == 0:
        return {"question": q["turns"][0], "answer_a": a[0], "answer_b": b[0], "ref_answer_1": ref_turns[0]}
    return {
        "question_1": q["turns"][0],
        "question_2": q["turns"][1],
        "answer_a_1": a[0],
        "answer_a_2": a[1],
        "answer_b_1": b[0],
        "answer_b_2": b[1],
        "ref_answer_1": ref_turns[0],
        "ref_answer_2": ref_turns[1],
    }


def grade_pairwise(
    chat: ChatFn,
    prompts: dict,
    questions: list[dict],
    ours: list[list[str]],
    baseline: list[list[str]],
    references: dict,
    workers: int = 8,
) -> list[str]:
    """Per (question, turn): "win"/"loss"/"tie" of our answers vs the baseline, judged in both orders."""
    jobs = [(i, t) for i in range(len(questions)) for t in (0, 1)]

    def one(job):
        i, turn = job
        q = questions[i]
        prompt = prompts[_prompt_name("pair", q["category"], turn)]
        ref = references.get(q["question_id"])
        first = parse_pair_verdict(chat(judge_messages(prompt, _pair_fields(q, ours[i], baseline[i], ref, turn))))
        swapped = parse_pair_verdict(chat(judge_messages(prompt, _pair_fields(q, baseline[i], ours[i], ref, turn))))
        return {"A": "win", "B": "loss", "tie": "tie"}[combine_swapped(first, swapped)]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, jobs))


def run(lm: EvalLM, cfg: MTBenchConfig, chat: ChatFn | None = None) -> TaskResult:
    questions, prompts, references = load_mt_bench(cfg.path)
    if cfg.categories:
        questions = [q for q in questions if q["category"] in cfg.categories]
    if cfg.question_ids:
        questions = [q for q in questions if q["question_id"] in set(cfg.question_ids)]
    questions = questions[: cfg.limit]
    chat = chat or make_chat_fn(cfg.judge)
    answers = answer_questions(lm, questions, cfg.max_new_tokens)
    if cfg.answers_out:
        Path(cfg.answers_out).parent.mkdir(parents=True, exist_ok=True)
        with open(cfg.answers_out, "w") as handle:
            for q, a in zip(questions, answers):
                handle.write(
                    json.dumps({"question_id": q["question_id"], "choices": [{"index": 0, "turns": a}]}) + "\n"
                )
    ratings = grade_single(chat, prompts, questions, answers, references, cfg.judge.concurrency)
    valid = [r for pair in ratings for r in pair if r is not None]
    metrics = {"score": sum(valid) / len(valid) if valid else float("nan")}
    for turn in (0, 1):
        turn_scores = [pair[turn] for pair in ratings if pair[turn] is not None]
        metrics[f"score_turn{turn + 1}"] = sum(turn_scores) / len(turn_scores) if turn_scores else float("nan")
    details = {"n": len(questions), "unparsed_ratings": sum(r is None for pair in ratings for r in pair)}
    samples = [
        {"question_id": q["question_id"], "category": q["category"], "answers": a, "ratings": r}
        for q, a, r in zip(questions, answers, ratings)
    ]
    if cfg.baseline_answers:
        by_id = {row["question_id"]: row["choices"][0]["turns"] for row in read_jsonl(cfg.baseline_answers)}
        missing = [q["question_id"] for q in questions if q["question_id"] not in by_id]
        if missing:
            raise KeyError(f"{cfg.baseline_answers} lacks answers for question ids {missing[:10]}")
        outcomes = grade_pairwise(
            chat,
            prompts,
            questions,
            answers,
            [by_id[q["question_id"]] for q in questions],
            references,
            cfg.judge.concurrency,
        )
        wins, losses, ties = (outcomes.count(x) for x in ("win", "loss", "tie"))
        metrics["pairwise_win_rate"] = (wins + 0.5 * ties) / max(1, len(outcomes))
        details["pairwise"] = {"win": wins, "loss": losses, "tie": ties}
        for i, sample in enumerate(samples):
            sample["pairwise"] = outcomes[2 * i : 2 * i + 2]
    return TaskResult("mt_bench", metrics, samples, details)
