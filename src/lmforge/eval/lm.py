"""`EvalLM`: the three request types every benchmark reduces to, on our `Transformer`.

- `loglikelihood(context, continuation)` -> (sum log p(continuation | context), is_greedy)
- `loglikelihood_rolling(text)` -> sum log p(text) over windows of max_seq_len
- `generate_until(context, GenParams)` -> text cut at the first stop string

Our own tasks and the lm-evaluation-harness adapter (`lm_eval_model.py`) both call these, so
a parity test through lm-eval checks prompt formats and scoring, not two model paths.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from lmforge.eval.cache import RequestCache
from lmforge.generate import SamplingConfig, generate
from lmforge.model import Transformer
from lmforge.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class GenParams:
    until: list[str] = field(default_factory=list)
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 => greedy
    top_p: float = 1.0
    seed: int | None = None


def split_trailing_space(context: str, continuation: str) -> tuple[str, str]:
    """Move trailing spaces of the context onto the continuation (lm-eval does the same), so
    that " A" is scored as one token after "Answer:" rather than "Answer: " + "A"."""
    stripped = context.rstrip(" ")
    return stripped, context[len(stripped) :] + continuation


def truncate_at_stop(text: str, until: Sequence[str]) -> str:
    cut = min((text.find(s) for s in until if s and s in text), default=-1)
    return text if cut < 0 else text[:cut]


class EvalLM:
    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer,
        batch_size: int = 8,
        cache: RequestCache | None = None,
        show_progress: bool = True,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.cache = cache
        self.max_length = model.config.max_seq_len
        self.device = next(model.parameters()).device
        self.show_progress = show_progress

    # ------------------------------------------------------------------ caching helper
    def _cached(self, kind: str, requests: list, compute: Callable[[list], list]) -> list:
        if self.cache is None:
            return compute(requests)
        keys = [self.cache.key(kind, r) for r in requests]
        results: list = [self.cache.get(k) for k in keys]
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            fresh = compute([requests[i] for i in todo])
            for i, value in zip(todo, fresh):
                results[i] = value
            self.cache.put_many({keys[i]: results[i] for i in todo})
        return results

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        context, continuation = split_trailing_space(context, continuation)
        whole = self.tokenizer.encode(context + continuation)
        context_ids = self.tokenizer.encode(context)
        # Tokenize the joined string and split by the context's length: the continuation's
        # first token may merge across the boundary differently than when encoded alone.
        return [self.tokenizer.bos_id] + context_ids, whole[len(context_ids) :]

    # ------------------------------------------------------------------ log-likelihood
    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        def compute(reqs: list) -> list:
            encoded = [self._encode_pair(c, x) for c, x in reqs]
            return [tuple(r) for r in self._score_tokens(encoded, "loglikelihood")]

        return [tuple(r) for r in self._cached("loglikelihood", [list(r) for r in requests], compute)]

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        """Sum of log p over every token of each text (the first one after BOS), in windows of
        max_seq_len predictions; each window gets as much preceding context as fits, so the
        last window has a full-length context (lm-eval's rolling convention)."""

        def compute(reqs: list) -> list:
            out = []
            for text in reqs:
                full = [self.tokenizer.bos_id] + self.tokenizer.encode(text)
                pieces = []
                for start in range(0, len(full) - 1, self.max_length):
                    continuation = full[start + 1 : start + 1 + self.max_length]
                    end = start + 1 + len(continuation)
                    pieces.append((full[max(0, end - self.max_length - 1) : start + 1], continuation))
                out.append(sum(lp for lp, _ in self._score_tokens(pieces, "rolling", progress=False)))
            return out

        return self._cached("loglikelihood_rolling", list(texts), compute)

    @torch.no_grad()
    def _score_tokens(
        self, pairs: list[tuple[list[int], list[int]]], desc: str, progress: bool = True
    ) -> list[tuple[float, bool]]:
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        # Longest first: a batch's padding is bounded by its first row, and OOM shows up early.
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for batch in tqdm(batches, desc=desc, disable=not (self.show_progress and progress), leave=False):
            rows, spans = [], []
            for i in batch:
                context, continuation = pairs[i]
                if not continuation:
                    raise ValueError("loglikelihood: empty continuation")
                ids = (context + continuation)[-(self.max_length + 1) :]  # left-truncate to the window
                inputs = ids[:-1]
                rows.append(inputs)
                spans.append((len(inputs) - len(continuation), continuation))
            width = max(len(r) for r in rows)
            batch_ids = torch.full((len(rows), width), self.tokenizer.pad_id, dtype=torch.long)
            for r, ids in enumerate(rows):
                batch_ids[r, : len(ids)] = torch.tensor(ids)  # right padding: causal attention never sees it
            logprobs = F.log_softmax(self.model(batch_ids.to(self.device)).float(), dim=-1)
            for r, i in enumerate(batch):
                start, continuation = spans[r]
                target = torch.tensor(continuation, device=self.device)
                span = logprobs[r, start : start + len(continuation)]
                total = span.gather(-1, target[:, None]).sum().item()
                greedy = bool((span.argmax(-1) == target).all().item())
                results[i] = (total, greedy)
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------ generation
    def generate_until(self, requests: Sequence[tuple[str, GenParams]]) -> list[str]:
        def compute(reqs: list) -> list:
            out = []
            # Group by sampling parameters so each group is one batched generate() call.
            groups: dict[str, list[int]] = {}
            for i, (_, params) in enumerate(reqs):
                groups.setdefault(repr(sorted(params.items())), []).append(i)
            results: list[str | None] = [None] * len(reqs)
            for indices in groups.values():
                params = GenParams(**reqs[indices[0]][1])
                for start in tqdm(
                    range(0, len(indices), self.batch_size),
                    desc="generate",
                    disable=not self.show_progress,
                    leave=False,
                ):
                    chunk = indices[start : start + self.batch_size]
                    texts = self._generate([reqs[i][0] for i in chunk], params)
                    for i, text in zip(chunk, texts):
                        results[i] = truncate_at_stop(text, params.until)
            out.extend(results)
            return out

        payload = [[context, params.__dict__] for context, params in requests]
        return self._cached("generate_until", payload, compute)

    def generate_chat(self, conversations: Sequence[list[dict]], params: GenParams) -> list[str]:
        """Assistant replies to chat conversations (rendered with the tokenizer's template,
        which already starts with <|bos|>; generation stops at <|end|>)."""
        rendered = [self.tokenizer.apply_chat_template(c, add_generation_prompt=True) for c in conversations]
        return self.generate_until([(text, params) for text in rendered])

    def _generate(self, contexts: list[str], params: GenParams) -> list[str]:
        budget = self.max_length - params.max_new_tokens
        if budget < 1:
            raise ValueError(f"max_new_tokens={params.max_new_tokens} leaves no room in max_seq_len={self.max_length}")
        prompts = []
        for context in contexts:
            ids = self.tokenizer.encode(context)
            if not ids or ids[0] != self.tokenizer.bos_id:  # chat renderings carry their own <|bos|>
                ids = [self.tokenizer.bos_id] + ids
            prompts.append(ids[-budget:])
        stop_ids = (self.tokenizer.eos_id, self.tokenizer.end_of_turn_id)
        completions = generate_tokens(self.model, prompts, params, stop_ids, self.tokenizer.pad_id)
        return [self.tokenizer.decode(ids) for ids in completions]


def generate_tokens(
    model: Transformer, prompts: list[list[int]], params: GenParams, stop_ids: tuple[int, ...], pad_id: int
) -> list[list[int]]:
    """New tokens per prompt, through the shared batched KV-cache sampler."""
    cfg = SamplingConfig(
        max_new_tokens=params.max_new_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        stop_token_ids=stop_ids,
        seed=params.seed,
    )
    return generate(model, prompts, cfg, pad_id=pad_id).completions
