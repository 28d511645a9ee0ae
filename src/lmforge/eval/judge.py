"""LLM-as-a-judge over an OpenAI-compatible chat endpoint (Zheng et al. 2023, MT-Bench,
arXiv:2306.05685): single-answer grading on 1-10 and pairwise comparison with both orders.

The HTTP side goes through `serving.client` (the project's OpenAI-compatible client with
retries, timeouts and a concurrency limit) when it is importable; otherwise through a minimal
httpx call so evaluation still runs before serving is installed.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)
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
    client: str = "auto"  # auto: serving.client when installed, else httpx | serving | httpx


def make_chat_fn(cfg: JudgeConfig) -> ChatFn:
    api_key = os.environ.get(cfg.api_key_env, "EMPTY")
    if cfg.client not in ("auto", "serving", "httpx"):
        raise ValueError(f"judge.client={cfg.client!r}; expected auto, serving or httpx")
    if cfg.client == "httpx":
        return _httpx_chat_fn(cfg, api_key)
    try:
        from serving.client import OpenAIClient  # the project's shared OpenAI-compatible client
    except ImportError:
        if cfg.client == "serving":
            raise
        log.info("serving.client not installed; the judge uses a plain httpx client")
        return _httpx_chat_fn(cfg, api_key)
    try:
        client = OpenAIClient(base_url=cfg.base_url, api_key=api_key, timeout=cfg.timeout_s,
                              max_retries=cfg.retries, max_concurrency=cfg.concurrency)
    except TypeError as err:
        raise TypeError(f"serving.client.OpenAIClient does not take the arguments lmforge.eval.judge passes "
                        f"({err}); set eval.tasks.<task>.judge.client=httpx or update make_chat_fn") from err
    return lambda messages: client.chat(messages, model=cfg.model, temperature=cfg.temperature,
                                        max_tokens=cfg.max_tokens)


def _httpx_chat_fn(cfg: JudgeConfig, api_key: str) -> ChatFn:
    import httpx

    http = httpx.Client(base_url=cfg.base_url, timeout=cfg.timeout_s, headers={"Authorization": f"Bearer {api_key}"})

    def chat(messages: list[dict]) -> str:
        body = {"model": cfg.model, "messages": messages, "temperature": cfg.temperature, "max_tokens": cfg.max_tokens}
        for attempt in range(cfg.retries + 1):
            try:
                response = http.post("/chat/completions", json=body)
                response.raise_for_status()
                return response.json()["choices"][0]["message"]["content"]
            except (httpx.TransportError, httpx.HTTPStatusError) as err:
                if attempt == cfg.retries:
                    raise RuntimeError(f"judge at {cfg.base_url} failed after {attempt + 1} tries: {err}") from err
                time.sleep(2**attempt)
        raise AssertionError("unreachable")

    return chat


def parse_rating(text: str) -> float | None:
    """The "[[N]]" rating MT-Bench's single-answer prompts ask for (falls back to "[N]")."""
    for pattern in RATING:
        found = pattern.findall(text)
        if found:
            value = float(found[-1])
            return value if 0 <= value <= 10 else None
    return None


def parse_pair_verdict(text: str) -> str | None:
    """"A", "B" or "tie" from "[[A]]" / "[[B]]" / "[[C]]"; None if the judge broke the format."""
    marks = [m for m in ("[[A]]", "[[B]]", "[[C]]") if m in text]
    if len(marks) != 1:
        return None
    return {"[[A]]": "A", "[[B]]": "B", "[[C]]": "tie"}[marks[0]]


def judge_messages(prompt: dict, fields: dict) -> list[dict]:
    return [{"role": "system", "content": prompt["system_prompt"]},
            {"role": "user", "content": prompt["prompt_template"].format(**fields)}]


def combine_swapped(first: str | None, second_swapped: str | None) -> str:
    """Combine a verdict with the verdict on swapped positions (FastChat's convention): a win
    counts only if it survives the swap; disagreement or a parse failure is a tie."""
    swapped_back = {"A": "B", "B": "A", "tie": "tie", None: None}[second_swapped]
    if first is None or swapped_back is None or first != swapped_back:
        return "tie"
    return first
