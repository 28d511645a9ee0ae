"""RLAIF preferences: an AI judge compares two answers to a prompt under one principle.

The question is a two-option multiple choice (Bai et al. 2022, sec. 4.1). Every pair is asked in
both orders, so a judge that always says "(A)" prefers nothing:

- `LogprobJudge` (our model): compares the log-probabilities of the replies "(A)" and "(B)";
  P(first better) is the mean over both orders of the normalised option probability. It always
  yields a soft preference, even from a model too small to follow the format in free text.
- `TextJudge` (any `ChatModel`: an OpenAI-compatible endpoint or our model via generate): reads
  the option out of the reply; each order votes 1 (first), 0 (second) or 1/2 (no parsable option).

A pair becomes a DPO record when P(first better) differs from 1/2 by more than `min_margin`.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from lmforge.cai.chat import ChatModel, Conversation, completion_logprobs
from lmforge.cai.constitution import Constitution, Principle
from lmforge.model import Transformer
from lmforge.tokenizer import Tokenizer

JUDGE_TEMPLATE = (
    "Here is a request someone sent to an AI assistant:\n{prompt}\n\n"
    "{question}\n"
    "(A) {option_a}\n"
    "(B) {option_b}\n\n"
    "Reply with (A) or (B) only."
)
OPTIONS = ("(A)", "(B)")
_OPTION_RE = re.compile(r"\(\s*([AB])\s*\)|^\s*([AB])\b")


@dataclass(frozen=True)
class Comparison:
    id: str
    prompt: str
    principle: Principle
    first: str
    second: str


@dataclass
class Verdict:
    p_first: float  # probability the first answer is the better one under the principle
    details: dict = field(default_factory=dict)


class Judge(Protocol):
    name: str

    def judge(self, comparisons: Sequence[Comparison]) -> list[Verdict]: ...


def judge_conversation(prompt: str, principle: Principle, option_a: str, option_b: str) -> Conversation:
    text = JUDGE_TEMPLATE.format(
        prompt=prompt, question=principle.preference_question, option_a=option_a, option_b=option_b
    )
    return [{"role": "user", "content": text}]


def parse_option(reply: str) -> str | None:
    """ "A" or "B" from "(A)" / "(B)" (or a bare leading A/B); None when absent or both appear."""
    found = {a or b for a, b in _OPTION_RE.findall(reply)}
    return found.pop() if len(found) == 1 else None


def _softmax2(a: float, b: float) -> float:
    """exp(a) / (exp(a) + exp(b)), stable for very negative log-probs."""
    return 1.0 / (1.0 + math.exp(b - a))


@dataclass
class LogprobJudge:
    model: Transformer
    tokenizer: Tokenizer
    name: str = "self-logprob"

    def judge(self, comparisons: Sequence[Comparison]) -> list[Verdict]:
        verdicts = []
        for c in comparisons:
            shown_first = completion_logprobs(
                self.model, self.tokenizer, judge_conversation(c.prompt, c.principle, c.first, c.second), OPTIONS
            )
            shown_second = completion_logprobs(
                self.model, self.tokenizer, judge_conversation(c.prompt, c.principle, c.second, c.first), OPTIONS
            )
            p_as_a = _softmax2(*shown_first)  # first answer shown as (A)
            p_as_b = 1.0 - _softmax2(*shown_second)  # first answer shown as (B)
            verdicts.append(
                Verdict(
                    (p_as_a + p_as_b) / 2,
                    {
                        "logprobs_first_as_a": shown_first,
                        "logprobs_first_as_b": shown_second,
                    },
                )
            )
        return verdicts


@dataclass
class TextJudge:
    chat_model: ChatModel
    name: str = "text"

    def judge(self, comparisons: Sequence[Comparison]) -> list[Verdict]:
        conversations = []
        for c in comparisons:
            conversations.append(judge_conversation(c.prompt, c.principle, c.first, c.second))
            conversations.append(judge_conversation(c.prompt, c.principle, c.second, c.first))
        replies = self.chat_model.reply(conversations)
        verdicts = []
        for i in range(len(comparisons)):
            reply_first_as_a, reply_first_as_b = replies[2 * i], replies[2 * i + 1]
            vote_a = {"A": 1.0, "B": 0.0}.get(parse_option(reply_first_as_a), 0.5)
            vote_b = {"B": 1.0, "A": 0.0}.get(parse_option(reply_first_as_b), 0.5)
            verdicts.append(
                Verdict(
                    (vote_a + vote_b) / 2,
                    {
                        "reply_first_as_a": reply_first_as_a,
                        "reply_first_as_b": reply_first_as_b,
                    },
                )
            )
        return verdicts


def comparisons_for(
    critiques: Sequence[dict],
    constitution: Constitution,
    pair_source: str,
    seed: int,
    samples: dict[str, tuple[str, str]] | None = None,
) -> list[Comparison]:
    """One comparison per prompt under a principle sampled per prompt.

    pair_source "revision": the initial answer against the final revision (which one wins is the
    judge's call, not assumed); "samples": two fresh answers per prompt, given in `samples`.
    """
    out = []
    for record in critiques:
        principle = constitution.sample(random.Random(f"{seed}:{record['id']}:judge"))
        if pair_source == "revision":
            first, second = record["initial"], record["revision"]
        elif pair_source == "samples":
            first, second = samples[record["id"]]
        else:
            raise ValueError(f"cai.pair_source={pair_source!r}; expected 'revision' or 'samples'")
        out.append(Comparison(record["id"], record["prompt"], principle, first, second))
    return out


def comparison_records(
    judge: Judge, comparisons: Sequence[Comparison], min_margin: float, pair_source: str
) -> list[dict]:
    """Audit records; `chosen`/`rejected` are None when the judge is undecided or the answers are equal."""
    verdicts = judge.judge(comparisons)
    records = []
    for c, verdict in zip(comparisons, verdicts, strict=True):
        p = verdict.p_first
        chosen = rejected = None
        if c.first.strip() != c.second.strip() and abs(p - 0.5) > min_margin:
            chosen, rejected = (c.first, c.second) if p > 0.5 else (c.second, c.first)
        records.append(
            {
                "id": c.id,
                "prompt": c.prompt,
                "principle": c.principle.name,
                "preference_question": c.principle.preference_question,
                "pair_source": pair_source,
                "first": c.first,
                "second": c.second,
                "p_first_better": p,
                "preference_probability": max(p, 1.0 - p),
                "chosen": chosen,
                "rejected": rejected,
                "judge": judge.name,
                "judge_details": verdict.details,
            }
        )
    return records
