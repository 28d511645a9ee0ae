"""Who answers the CAI conversations: our own model through `lmforge.generate`, or any
OpenAI-compatible endpoint through `lmforge.client`. Both take a batch of conversations and
return one reply per conversation, in order."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import torch

from lmforge.generate import SamplingConfig, generate
from lmforge.model import Transformer
from lmforge.tokenizer import Tokenizer

log = logging.getLogger(__name__)
Conversation = list[dict]


class ChatModel(Protocol):
    name: str

    def reply(self, conversations: Sequence[Conversation]) -> list[str]: ...


@dataclass
class LocalChatModel:
    """Batched chat replies from a `Transformer` with the KV-cache sampler.

    Prompts longer than the model's context minus `max_new_tokens` keep their last tokens (the
    request and the turn being answered live at the end); how often that happened is counted.
    """

    model: Transformer
    tokenizer: Tokenizer
    sampling: SamplingConfig
    batch_size: int = 16
    name: str = "local"
    truncated_prompts: int = 0

    def __post_init__(self) -> None:
        stops = {*self.sampling.stop_token_ids, *self.tokenizer.stop_ids}
        self.sampling = replace(self.sampling, stop_token_ids=tuple(sorted(stops)))

    def encode(self, conversation: Conversation) -> list[int]:
        ids = self.tokenizer.encode_chat(conversation, add_generation_prompt=True)[0]
        budget = self.model.config.max_seq_len - self.sampling.max_new_tokens
        if len(ids) > budget > 0:
            self.truncated_prompts += 1
            ids = ids[-budget:]
        return ids

    def reply(self, conversations: Sequence[Conversation]) -> list[str]:
        out: list[str] = []
        for start in range(0, len(conversations), self.batch_size):
            chunk = conversations[start : start + self.batch_size]
            generated = generate(self.model, [self.encode(c) for c in chunk], self.sampling, self.tokenizer.pad_id)
            out += [self.tokenizer.decode(ids).strip() for ids in generated.completions]
        return out


@dataclass
class EndpointChatModel:
    """Replies from an OpenAI-compatible `/v1/chat/completions` server (SGLang, vLLM, an API)."""

    client: object  # lmforge.client.OpenAIClient
    model_name: str
    temperature: float = 0.0
    max_tokens: int = 256
    name: str = "endpoint"

    def reply(self, conversations: Sequence[Conversation]) -> list[str]:
        replies = self.client.chat_many(
            [list(c) for c in conversations],
            model=self.model_name,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
        )
        return [r.strip() for r in replies]


@torch.no_grad()
def completion_logprobs(
    model: Transformer, tokenizer: Tokenizer, conversation: Conversation, completions: Sequence[str]
) -> list[float]:
    """Summed log-probability of each candidate assistant reply's content tokens after `conversation`.

    The content is scored without its closing <|end|>: the judge is asked which option, not
    whether the reply stops there.
    """
    prefix = tokenizer.encode_chat(conversation, add_generation_prompt=True)[0]
    rows = [prefix + tokenizer.encode(text) for text in completions]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        logps = torch.log_softmax(model(input_ids.to(device)).float(), dim=-1).cpu()
    finally:
        model.train(was_training)
    scores = []
    for i, row in enumerate(rows):
        # Position t predicts token t + 1: sum over the candidate's tokens only.
        targets = torch.tensor(row[len(prefix) :])
        positions = torch.arange(len(prefix) - 1, len(row) - 1)
        scores.append(float(logps[i, positions, targets].sum()))
    return scores
