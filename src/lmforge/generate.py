"""Batched sampling with a KV cache: the one decoding loop RL, CAI, eval and serving tests use.

Prompts of different lengths are right-padded for the prefill, so plain causal attention (the
fused SDPA kernels, no [B, 1, T, T] mask) already keeps every real token from seeing padding;
each row's first logits are read at its own last prompt token. New tokens then go to the same
cache slot for every row, and the decode step's [B, 1, 1, S] key mask hides the pad slots.
Position ids count real tokens only, so a row decodes exactly as it would alone (greedy output
of a batch equals the per-prompt output, and both equal a full-recompute decode).

Eager decoding drops rows that emit a stop token from the batch and the cache
(`KVCache.select`), so the work shrinks as sequences finish. `SamplingConfig.compile` instead
runs a compiled decode step over a static cache (`KVCache(static=True)`): the batch is padded
to a power of two and the cache length rounded up to one, finished rows keep their slot, so
one compiled graph serves every step and every batch in the same bucket.

`SamplingConfig.freeze_weights` (CPU) also lets inductor fold the weights into that graph and
pack them for its own C++ GEMM kernels, which at decode's one-row GEMMs beat the generic matmul
several-fold. A frozen graph is valid only for the weights it was built from, so each call
checks every parameter's storage and version counter, and rebuilds the step (counted against
`MAX_DECODE_COMPILES`) when they changed. It suits fixed weights: eval and serving, not RL.
"""

from __future__ import annotations

import itertools
import logging
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from lmforge.model import KVCache, Transformer, rotary_cos_sin

log = logging.getLogger(__name__)


@dataclass
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 => greedy (argmax)
    top_k: int = 0  # 0 => no top-k filtering
    top_p: float = 1.0  # 1.0 => no nucleus filtering
    stop_token_ids: Sequence[int] = field(default_factory=tuple)
    seed: int | None = None  # None => torch's global RNG
    # torch.compile the decode step over a static KV cache (CUDA graphs on GPU). Pays a compile
    # per (batch, cache) bucket, so it suits long generations and repeated calls.
    compile: bool = False
    # With compile on CPU: fold and pack the weights into the decode graph (2-4x faster decoding
    # at small batch; ~10-30 s more per compile). Rebuilt whenever the weights change, so leave
    # it off where they change between calls (RL).
    freeze_weights: bool = False

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
    return draw(logits.softmax(dim=-1), generator)


def draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One index per row of `probs` [B, V], by inverse CDF: one uniform per row, placed in the
    row's cumulative sum (fp64, so the tail of a 128k vocabulary keeps its mass). An index of
    probability 0 is never drawn: its CDF step is empty. torch.multinomial instead draws an
    exponential per vocabulary entry; on CPU that took 0.97 ms at 8 x 8192, a fifth of a
    sampled decode step."""
    cdf = probs.double().cumsum(dim=-1)
    u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=cdf.dtype)
    index = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    return index.clamp_(max=probs.shape[-1] - 1).squeeze(-1)


def _right_pad(prompts: Sequence[Sequence[int]], pad_id: int, rows: int, device: torch.device):
    """ids [rows, P] right-padded and the real-token mask [rows, P]; rows past len(prompts)
    are one-pad-token fillers (a compiled step's batch bucket)."""
    lengths = [len(p) for p in prompts]
    if any(n == 0 for n in lengths):
        raise ValueError(f"empty prompt at index {lengths.index(0)}: every prompt needs >= 1 token")
    lengths += [1] * (rows - len(prompts))
    ids = torch.full((rows, max(lengths)), pad_id, dtype=torch.long)
    is_real = torch.zeros(ids.shape, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)] = torch.tensor(list(prompt), dtype=torch.long)
    for row, n in enumerate(lengths):
        is_real[row, :n] = True
    return ids.to(device), is_real.to(device), torch.tensor(lengths, device=device)


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


def _bucket(n: int, floor: int = 1) -> int:
    return max(floor, 1 << math.ceil(math.log2(n)))


# Distinct (model, batch, cache, dtype, weights) shapes the compiled decode step has been built
# for. Buckets are powers of two, so this stays small; past the bound, decoding runs eagerly.
MAX_DECODE_COMPILES = 8
_decode_shapes: set[tuple] = set()
_compiled_steps: dict[object, object] = {}
_static_caches: dict[tuple, KVCache] = {}  # one per compiled shape, so at most MAX_DECODE_COMPILES
# Frozen steps: per model, the weights fingerprint its current frozen step was built from.
_frozen_weights: dict[int, tuple] = {}
_frozen_builds = itertools.count()
# Inductor options of a frozen CPU step: constant weights, packed for its C++ GEMM template
# (max_autotune picks between that and ATen per GEMM at compile time).
FROZEN_CPU_OPTIONS = {"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN"}


def _decode_step(model: Transformer, tokens, positions, key_mask, cache: KVCache) -> torch.Tensor:
    """One token per row through a static cache. No Python int in here changes between steps
    (the write slot is `cache.write_pos`, a tensor), so dynamo traces it once."""
    cfg = model.config
    x = model.embed_tokens(tokens)
    cos, sin = rotary_cos_sin(positions, cfg.head_dim, cfg.rope_theta, x.dtype, cfg.rope_scaling)
    for layer in model.layers:
        x = layer(x, cos, sin, key_mask, cache)
    return model.lm_head(model.norm(x))[:, -1]


def compiled_decode_step(device_type: str, frozen_for: tuple | None = None):
    """The decode step compiled for this device: CUDA graphs ("reduce-overhead") on GPU,
    inductor's default (C++/OpenMP) backend on CPU. Static shapes: one graph per bucket.

    `frozen_for` (CPU; a weights fingerprint) builds a step with frozen, packed weights. Dynamo
    keeps its compiled graphs on the function's code object and its guards do not look at
    weight values, so each fingerprint gets its own copy of the code: a step frozen for other
    weights can never be picked up."""
    if frozen_for is not None and device_type == "cpu":
        if frozen_for not in _compiled_steps:
            code = _decode_step.__code__.replace(co_name=f"_decode_step_frozen_{next(_frozen_builds)}")
            fn = type(_decode_step)(code, _decode_step.__globals__)
            _compiled_steps[frozen_for] = _under_frozen_options(torch.compile(fn, dynamic=False))
        return _compiled_steps[frozen_for]
    mode = "reduce-overhead" if device_type == "cuda" else "default"
    if mode not in _compiled_steps:
        _compiled_steps[mode] = torch.compile(_decode_step, mode=mode, dynamic=False)
    return _compiled_steps[mode]


def _under_frozen_options(step):
    """Inductor reads `freezing` from its global config when it compiles (lazily, on a call), not
    from `torch.compile(options=...)`, so the options are patched around each call."""

    def call(*args):
        with torch._inductor.config.patch(FROZEN_CPU_OPTIONS):
            return step(*args)

    return call


def weights_fingerprint(model: torch.nn.Module) -> tuple:
    """Identity of the current weights: each tensor's storage and version counter (bumped by
    every in-place write: optimizer steps, load_state_dict, `mul_`)."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    return (id(model), *((t.data_ptr(), t._version) for t in tensors))


def _frozen_key(model: Transformer, device_type: str) -> tuple | None:
    """The fingerprint a frozen step must be built for, dropping the model's stale frozen steps."""
    if device_type != "cpu":
        return None
    key = weights_fingerprint(model)
    stale = _frozen_weights.get(id(model))
    if stale is not None and stale != key:
        log.warning(
            "freeze_weights: the weights changed since the decode step was frozen (a training step "
            "or a load?); rebuilding it. Leave freeze_weights off where weights change between calls"
        )
        _compiled_steps.pop(stale, None)
    if stale is None:  # a frozen step holds a copy of the weights: drop it with the model
        weakref.finalize(model, _forget_frozen, id(model))
    _frozen_weights[id(model)] = key
    return key


def _forget_frozen(model_id: int) -> None:
    _compiled_steps.pop(_frozen_weights.pop(model_id, None), None)


def _use_compiled(model: Transformer, rows: int, cache_len: int, dtype: torch.dtype, frozen_for=None) -> bool:
    key = (id(model), rows, cache_len, dtype, frozen_for)
    if key in _decode_shapes:
        return True
    if len(_decode_shapes) >= MAX_DECODE_COMPILES:
        log.warning(
            "compiled decode step: %d shapes already compiled (bound %d); batch %d x cache %d decodes eagerly",
            len(_decode_shapes),
            MAX_DECODE_COMPILES,
            rows,
            cache_len,
        )
        return False
    _decode_shapes.add(key)
    log.info("compiled decode step: compiling for batch %d x cache %d (shape %d)", rows, cache_len, len(_decode_shapes))
    return True


def _static_cache(model: Transformer, rows: int, cache_len: int) -> KVCache:
    """The static cache of this (model, bucket), reused across calls: CUDA graphs replay on fixed
    addresses. Stale slots need no clearing: the prefill overwrites [0, width) and the key mask
    hides every later slot until the step that writes it."""
    p = next(model.parameters())
    shape = (model.config.n_layers, model.config.n_kv_heads, model.config.head_dim)
    key = (id(model), shape, rows, cache_len, p.dtype, p.device)
    cache = _static_caches.get(key)
    if cache is None:
        cache = _static_caches[key] = model.new_kv_cache(rows, cache_len, static=True)
        if p.device.type == "cuda":
            for t in (*cache.k, *cache.v):
                torch._dynamo.mark_static_address(t)
    cache.length, cache.write_pos = 0, None
    return cache


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

    width = max(len(p) for p in prompts)
    longest = width + cfg.max_new_tokens
    if longest > model.config.max_seq_len:
        log.warning(
            "generating up to %d positions, past the model's max_seq_len=%d (RoPE extrapolates "
            "poorly beyond the trained length)",
            longest,
            model.config.max_seq_len,
        )
    static = cfg.compile and cfg.max_new_tokens > 1
    rows, cache_len = batch, longest
    frozen_for = _frozen_key(model, device.type) if static and cfg.freeze_weights else None
    if static:
        rows, cache_len = _bucket(batch), _bucket(longest, floor=16)
        static = _use_compiled(model, rows, cache_len, next(model.parameters()).dtype, frozen_for)
        if not static:
            rows, cache_len = batch, longest
    ids, is_real, lengths = _right_pad(prompts, pad_id, rows, device)
    if static:
        cache = _static_cache(model, rows, cache_len)
    else:
        cache = model.new_kv_cache(rows, cache_len)
    # Right padding: causal attention alone keeps real tokens from seeing pads; no mask.
    # The head runs only at each row's last prompt token: over every position it was 40% of the
    # prefill's GEMM work at batch 8 x 64 (d_model 256, vocab 8192), all of it thrown away.
    logits = model(ids, kv_cache=cache, logits_at=(lengths - 1)[:, None])[:, 0]

    key_is_real = torch.zeros(rows, cache_len, dtype=torch.bool, device=device)
    key_is_real[:, :width] = is_real
    next_position = lengths[:, None]
    if static:
        step_fn = compiled_decode_step(device.type, frozen_for)
    active = torch.arange(rows, device=device)  # original row of each cache row
    done = [False] * rows
    for step in range(cfg.max_new_tokens):
        tokens = sample_next(logits, cfg, generator)
        stopped = torch.isin(tokens, stop_ids)
        for row, token, stop in zip(active.tolist(), tokens.tolist(), stopped.tolist()):
            if row >= batch or done[row]:
                continue
            if stop:
                finished[row] = done[row] = True
            else:
                completions[row].append(token)
        if step == cfg.max_new_tokens - 1 or all(done[:batch]):
            break
        slot = width + step  # the same cache slot for every row
        key_is_real[:, slot] = True
        if static:
            cache.write_pos = torch.tensor([slot], device=device)
            logits = step_fn(model, tokens[:, None], next_position, key_is_real[:, None, None, :], cache).clone()
        else:
            if stopped.any():
                keep = (~stopped).nonzero().squeeze(-1)
                cache.select(keep)
                active, tokens = active[keep], tokens[keep]
                key_is_real, next_position = key_is_real[keep], next_position[keep]
            cache.length = slot
            logits = model(
                tokens[:, None],
                position_ids=next_position,
                attn_mask=key_is_real[:, None, None, : slot + 1],
                kv_cache=cache,
            )[:, -1]
        next_position = next_position + 1
    return GenerationOutput(completions, finished)


def generate_chat(model: Transformer, tokenizer, conversations: list[list[dict]], cfg: SamplingConfig) -> list[str]:
    """Reply to each conversation: render with the generation prompt, stop at `tokenizer.stop_ids`
    (plus any `cfg.stop_token_ids`), decode without special tokens."""
    prompts = [tokenizer.encode_chat(conversation, add_generation_prompt=True)[0] for conversation in conversations]
    stops = tuple(sorted({*cfg.stop_token_ids, *tokenizer.stop_ids}))
    out = generate(model, prompts, replace(cfg, stop_token_ids=stops), pad_id=tokenizer.pad_id)
    return [tokenizer.decode(ids) for ids in out.completions]
