"""LLM-as-a-judge over an OpenAI-compatible chat endpoint (Zheng et al. 2023, MT-Bench,
arXiv:2306.05685): single-answer grading on 1-10 and pairwise comparison with both orders.

The HTTP side goes through `lmforge.client`, the project's one OpenAI-compatible client (retries,
timeouts and a concurrency limit).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from lmforge.client import OpenAIClient

ChatFn = Callable[[list[dict]], str]

RATING = (re.compile(r"\[\[(\d+\.?\d*)\]\]"), re.compile(r"\[(\d+\.?\d*)\]"))


@dataclass
class JudgeConfig:
    base_url: str = "http://127.0.0.1:30000/v1"
    model: str = "judge"
    api_key_env: str = "LMFORGE_JUDGE_API_KEY"
    temperature: float = 0.0
    max_tokens: int = 1024
    timeout_s: float = 120.0
    retries: int = 3
    concurrency: int = 8


def make_chat_fn(cfg: JudgeConfig) -> ChatFn:
    client = OpenAIClient(
        base_url=cfg.base_url,
        api_key=os.environ.get(cfg.api_key_env, "EMPTY"),
        timeout=cfg.timeout_s,
        max_retries=cfg.retries,
        max_concurrency=cfg.concurrency,
    )
    return lambda messages: client.chat(
        messages, model=cfg.model, temperature=cfg.temperature, max_tokens=cfg.max_tokens
    )


def parse_rating(text: str) -> float | None:
    """The "[[N]]" rating MT-Bench's single-answer prompts ask for (falls back to "[N]")."""
    for pattern in RATING:
        found = pattern.findall(text)
        if found:
            value = float(found[-1])
            return value if 0 <= value <= 10 else None
    return None


def parse_pair_verdict(text: str) -> str | None:
    """ "A", "B" or "tie" from "[[A]]" / "[[B]]" / "[[C]]"; None if the judge broke the format."""
    marks = [m for m in ("[[A]]", "[[B]]", "[[C]]") if m in text]
    if len(marks) != 1:
        return None
    return {"[[A]]": "A", "[[B]]": "B", "[[C]]": "tie"}[marks[0]]


def judge_messages(prompt: dict, fields: dict) -> list[dict]:
    return [
        {"role": "system", "content": prompt["system_prompt"]},
        {"role": "user", "content": prompt["prompt_template"].format(**fields)},
    ]


def combine_swapped(first: str | None, second_swapped: str | None) -> str:
    """Combine a verdict with the verdict on swapped positions (FastChat's convention): a win
    counts only if it survives the swap; disagreement or a parse failure is a tie."""
    swapped_back = {"A": "B", "B": "A", "tie": "tie", None: None}[second_swapped]
    if first is None or swapped_back is None or first != swapped_back:
        return "tie"
    return first
