"""Batched sampling with a KV cache: the one decoding loop RL, CAI, eval and serving tests use.

Prompts of different lengths are left-padded to a common length, so every row's next token
sits at the same cache index. Pad keys are masked out of attention and position ids count
only real tokens, so a row decodes exactly as it would alone (greedy output of a batch equals
the per-prompt output, and both equal a full-recompute decode without a cache).

Rows that emit a stop token are dropped from the batch and the cache (`KVCache.select`), so
the remaining work shrinks as sequences finish and the loop ends once all have.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from lmforge.model import Transformer

log = logging.getLogger(__name__)


@dataclass
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 => greedy (argmax)
    top_k: int = 0  # 0 => no top-k filtering
    top_p: float = 1.0  # 1.0 => no nucleus filtering
    stop_token_ids: Sequence[int] = field(default_factory=tuple)
    seed: int | None = None  # None => torch's global RNG

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be >= 0")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 means greedy)")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be >= 0 (0 disables it)")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")


@dataclass
class GenerationOutput:
    completions: list[list[int]]  # new tokens only, stop token excluded
    finished: list[bool]  # True when the row stopped on a stop token (not on max_new_tokens)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set every logit below the row's k-th largest to -inf (ties with the k-th are kept)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al., 2020): keep the smallest set of most likely tokens
    whose probability mass reaches p; the most likely token is always kept."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    drop_sorted = mass_before >= p
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Next token per row from last-position logits [B, V]."""
    logits = logits.float()
    if cfg.temperature == 0:
        return logits.argmax(dim=-1)
    logits = top_p_filter(top_k_filter(logits / cfg.temperature, cfg.top_k), cfg.top_p)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


def padded_causal_mask(is_real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Position ids and the [N, 1, T, T] attention mask of a padded batch (`is_real` [N, T]).

    A query sees the real tokens at or before it; a pad query sees only itself, so its softmax
    row is finite (its output is never used). Positions count real tokens only, so a left-padded
    row gets the same positions as unpadded. Shared by the generator's prefill and RL's scoring,
    which must agree for the RL ratio to be exactly on-policy.
    """
    width = is_real.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=is_real.device).tril()
    eye = torch.eye(width, dtype=torch.bool, device=is_real.device)
    mask = (causal & is_real.bool()[:, None, :]) | eye
    positions = (is_real.long().cumsum(dim=-1) - 1).clamp(min=0)
    return positions, mask[:, None]


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device):
    """ids [B, P] left-padded, the real-token mask [B, P] and per-row prompt lengths."""
    lengths = [len(p) for p in prompts]
    if any(n == 0 for n in lengths):
        raise ValueError(f"empty prompt at index {lengths.index(0)}: every prompt needs >= 1 token")
    width = max(lengths)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
    is_real = ids.new_zeros(ids.shape, dtype=torch.bool)
    for row, n in enumerate(lengths):
        is_real[row, width - n :] = True
    return ids.to(device), is_real.to(device)


@torch.no_grad()
def generate(model: Transformer, prompts: list[list[int]], cfg: SamplingConfig, pad_id: int) -> GenerationOutput:
    """Continue each prompt until a stop token or `cfg.max_new_tokens` new tokens."""
    if not prompts:
        return GenerationOutput(completions=[], finished=[])
    was_training = model.training
    model.eval()
    try:
        return _generate(model, prompts, cfg, pad_id)
    finally:
        model.train(was_training)


def _generate(model: Transformer, prompts: list[list[int]], cfg: SamplingConfig, pad_id: int) -> GenerationOutput:
    device = next(model.parameters()).device
    batch = len(prompts)
    completions: list[list[int]] = [[] for _ in prompts]
    finished = [False] * batch
    if cfg.max_new_tokens == 0:
        return GenerationOutput(completions, finished)
    generator = None
    if cfg.seed is not None:
        generator = torch.Generator(device=device).manual_seed(cfg.seed)
    stop_ids = torch.tensor(sorted(set(cfg.stop_token_ids)), dtype=torch.long, device=device)

    ids, is_real = _left_pad(prompts, pad_id, device)
    width = ids.shape[1]
    longest = max(len(p) for p in prompts) + cfg.max_new_tokens
    if longest > model.config.max_seq_len:
        log.warning(
            "generating up to %d positions, past the model's max_seq_len=%d (RoPE extrapolates "
            "poorly beyond the trained length)",
            longest,
            model.config.max_seq_len,
        )
    cache = model.new_kv_cache(batch, width + cfg.max_new_tokens)
    positions, prefill_mask = padded_causal_mask(is_real)
    logits = model(ids, position_ids=positions, attn_mask=prefill_mask, kv_cache=cache)[:, -1]

    key_is_real = torch.cat([is_real, is_real.new_ones(batch, cfg.max_new_tokens)], dim=1)
    next_position = positions[:, -1:] + 1
    active = torch.arange(batch, device=device)  # original row of each cache row
    for step in range(cfg.max_new_tokens):
        tokens = sample_next(logits, cfg, generator)
        stopped = torch.isin(tokens, stop_ids)
        for row, token, stop in zip(active.tolist(), tokens.tolist(), stopped.tolist()):
            if stop:
                finished[row] = True
            else:
                completions[row].append(token)
        if step == cfg.max_new_tokens - 1:
            break
        if stopped.any():
            keep = (~stopped).nonzero().squeeze(-1)
            if keep.numel() == 0:
                break
            cache.select(keep)
            active, tokens = active[keep], tokens[keep]
            key_is_real, next_position = key_is_real[keep], next_position[keep]
        length = cache.length + 1
        logits = model(
            tokens[:, None],
            position_ids=next_position,
            attn_mask=key_is_real[:, None, None, :length],
            kv_cache=cache,
        )[:, -1]
        next_position = next_position + 1
    return GenerationOutput(completions, finished)


def generate_chat(model: Transformer, tokenizer, conversations: list[list[dict]], cfg: SamplingConfig) -> list[str]:
    """Reply to each conversation: render with the generation prompt, stop at <|end|>/<|eos|>
    (plus any `cfg.stop_token_ids`), decode without special tokens."""
    prompts = [tokenizer.encode_chat(conversation, add_generation_prompt=True)[0] for conversation in conversations]
    stops = tuple(sorted({*cfg.stop_token_ids, tokenizer.end_of_turn_id, tokenizer.eos_id}))
    out = generate(model, prompts, replace(cfg, stop_token_ids=stops), pad_id=tokenizer.pad_id)
    return [tokenizer.decode(ids) for ids in out.completions]
