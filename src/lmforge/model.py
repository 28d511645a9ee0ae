"""The lmforge architecture: a Llama-style decoder, top to bottom in one file.

Config -> RMSNorm -> rotary embeddings -> attention (GQA, SDPA) -> SwiGLU MLP -> block -> model.

Module and parameter names follow HF `LlamaForCausalLM` one-to-one (minus its `model.`
prefix), so export/import is a rename table (`lmforge.hf`) and `peft` target names such as
`q_proj` mean the same thing here as on any HF Llama. This module imports torch only.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ModelConfig:
    """Shape of the decoder. Fields carry HF `LlamaConfig` semantics (names in `lmforge.hf`)."""

    vocab_size: int = 512
    d_model: int = 64  # hidden_size
    n_layers: int = 2  # num_hidden_layers
    n_heads: int = 4  # num_attention_heads
    n_kv_heads: int | None = None  # num_key_value_heads; None means n_heads (no GQA)
    ffn_dim: int = 172  # intermediate_size
    max_seq_len: int = 256  # max_position_embeddings
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5  # rms_norm_eps
    tie_embeddings: bool = False  # tie_word_embeddings
    head_dim: int | None = None  # None means d_model // n_heads
    init_std: float = 0.02
    # HF `rope_scaling`: None (plain RoPE) or {"rope_type": "llama3", "factor", "low_freq_factor",
    # "high_freq_factor", "original_max_position_embeddings"} (Llama-3.1/3.2).
    rope_scaling: dict[str, Any] | None = None
    # Free-form name for logs and manifests ("tiny", "7b", ...); does not change the shape.
    # "auto" (conf/model/auto.yaml) means: every field comes from `init_from`.
    name: str = field(default="custom")

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                raise ValueError(f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}")
            self.head_dim = self.d_model // self.n_heads
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"model.n_heads={self.n_heads} must be a multiple of model.n_kv_heads={self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")
        self.rope_scaling = check_rope_scaling(self.rope_scaling)

    def to_dict(self) -> dict:
        return asdict(self)

    def num_params(self, include_embeddings: bool = True) -> int:
        """Exact parameter count, computed from the shape (no model needed)."""
        d, h, kv, hd = self.d_model, self.n_heads, self.n_kv_heads, self.head_dim
        attn = d * h * hd + 2 * d * kv * hd + h * hd * d
        mlp = 3 * d * self.ffn_dim
        per_layer = attn + mlp + 2 * d
        embed = self.vocab_size * d
        head = 0 if self.tie_embeddings else self.vocab_size * d
        total = self.n_layers * per_layer + d + head
        return total + embed if include_embeddings else total

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6N for the matmuls plus causal attention scores.

        N excludes the input embedding (a lookup, not a matmul) but counts the LM head.
        Attention: QK^T and AV are 2 matmuls of 2*T*head_dim*n_heads FLOPs per token forward,
        x3 for forward+backward, halved for the causal mask's average context of T/2 -> 6*L*H*hd*T.
        """
        n = self.num_params(include_embeddings=False)
        if self.tie_embeddings:
            n += self.vocab_size * self.d_model
        attn = 6 * self.n_layers * self.n_heads * self.head_dim * seq_len
        return 6 * n + attn


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """`x` in fp32 for norms, softmaxes and losses; fp64 stays fp64, so a float64 run is float64
    end to end (parity tests rely on it to be independent of the CPU's kernels)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 (fp64 stays fp64) and cast back before the scale, as HF Llama does:
        # bf16 logits match.
        dtype = x.dtype
        x32 = at_least_fp32(x)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


LLAMA3_ROPE_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def check_rope_scaling(scaling: dict[str, Any] | None) -> dict[str, Any] | None:
    """The scaling in canonical form: None for plain RoPE (also `{rope_type: default}`), else a
    complete llama3 dict. Anything else is refused naming the key, never silently ignored."""
    if not scaling:
        return None
    scaling = dict(scaling)
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "default":
        return None
    if kind != "llama3":
        raise ValueError(f"model.rope_scaling.rope_type={kind!r} is not implemented (supported: 'default', 'llama3')")
    missing = [k for k in LLAMA3_ROPE_KEYS if scaling.get(k) is None]
    if missing:
        raise ValueError(f"model.rope_scaling (llama3) lacks {missing}")
    if scaling["high_freq_factor"] <= scaling["low_freq_factor"]:
        raise ValueError("model.rope_scaling: high_freq_factor must be greater than low_freq_factor")
    canonical = {"rope_type": "llama3", **{k: float(scaling[k]) for k in LLAMA3_ROPE_KEYS}}
    canonical["original_max_position_embeddings"] = int(scaling["original_max_position_embeddings"])
    return canonical


def llama3_inv_freq(inv_freq: torch.Tensor, scaling: dict[str, Any]) -> torch.Tensor:
    """Llama-3.1's frequency-dependent RoPE scaling: wavelengths shorter than
    original_len / high_freq_factor are kept, those longer than original_len / low_freq_factor are
    divided by `factor`, and the band between is interpolated linearly in original_len / wavelength."""
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    original = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    long_scaled = torch.where(wavelen > original / low, inv_freq / factor, inv_freq)
    smooth = (original / wavelen - low) / (high - low)
    blended = (1 - smooth) * long_scaled / factor + smooth * long_scaled
    in_band = (wavelen >= original / high) & (wavelen <= original / low)
    return torch.where(in_band, blended, long_scaled)


def rotary_cos_sin(
    position_ids: torch.Tensor,
    head_dim: int,
    theta: float,
    dtype: torch.dtype,
    scaling: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of shape [B, T, head_dim] for the given positions.

    Computed per call rather than cached in a buffer: it is cheap, and a model built on the
    meta device (FSDP, param counting) then needs no buffer re-initialisation.
    """
    work = torch.promote_types(dtype, torch.float32)  # fp32 tables, fp64 under precision=64-true
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.int64).to(work) / head_dim)
    )
    if scaling is not None:
        inv_freq = llama3_inv_freq(inv_freq, scaling)
    freqs = position_ids.to(work)[..., None] * inv_freq  # [B, T, hd/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate [B, H, T, hd] by the [B, T, hd] tables (HF's half-split convention, so HF
    q/k weights load without the permutation Meta's interleaved layout would need)."""
    return x * cos[:, None] + _rotate_half(x) * sin[:, None]


class KVCache:
    """Preallocated keys/values for every layer: [B, n_kv_heads, max_len, head_dim].

    `length` is the number of filled positions; `Attention` appends at `length` and the
    model advances it once per forward, after all layers have written.

    `static=True` is the fixed-shape form a compiled decode step needs: new keys/values go to
    the cache indices in the tensor `write_pos` (set by the caller before each step) and
    attention always covers all `max_len` slots, so no Python int changes between steps and
    the step compiles once; the caller's mask hides the slots not yet written.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        batch_size: int,
        max_len: int,
        device: torch.device,
        dtype: torch.dtype,
        static: bool = False,
    ) -> None:
        shape = (batch_size, cfg.n_kv_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.length = 0
        self.max_len = max_len
        self.static = static
        self.write_pos: torch.Tensor | None = None  # static only: cache index of each new position [T]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.static and self.write_pos is not None:
            self.k[layer].index_copy_(2, self.write_pos, k)
            self.v[layer].index_copy_(2, self.write_pos, v)
            return self.k[layer], self.v[layer]
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > max_len={self.max_len}")
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def select(self, batch_index: torch.Tensor) -> None:
        """Keep only the given batch rows (drop finished sequences)."""
        self.k = [k[batch_index] for k in self.k]
        self.v = [v[batch_index] for v in self.v]


class DocumentMask:
    """Block-diagonal causal attention for rows that hold several documents, without a dense mask.

    `doc_ids` [B, T] (int) numbers the document of each position; each document is one
    contiguous run, and padding (-1) is one more run. Query t sees key s iff s <= t and both
    are in the same document: the same rule as the dense `[B, 1, T, T]` mask of
    `lmforge.data.chat.block_causal_mask`. On CUDA it runs as `flex_attention` with a BlockMask
    (fully masked key blocks are skipped); elsewhere as one causal SDPA call per run, since this
    torch's flex_attention has no CPU backward. Inside `torch.compile` on CPU the dense mask is
    built in the graph, so the compiled block never specialises on run boundaries.
    """

    def __init__(self, doc_ids: torch.Tensor) -> None:
        self.doc_ids = doc_ids
        self.block_mask = None
        self.runs: list[list[tuple[int, int]]] | None = None
        bsz, seq = doc_ids.shape
        if doc_ids.device.type == "cuda":
            from torch.nn.attention.flex_attention import create_block_mask

            def same_doc_causal(b, h, q_idx, kv_idx):
                return (kv_idx <= q_idx) & (doc_ids[b, q_idx] == doc_ids[b, kv_idx])

            self.block_mask = create_block_mask(same_doc_causal, bsz, None, seq, seq, device=doc_ids.device)
        elif not torch.compiler.is_compiling():
            self.runs = []
            for row in doc_ids.tolist():
                bounds = [0] + [t for t in range(1, seq) if row[t] != row[t - 1]] + [seq]
                self.runs.append(list(zip(bounds[:-1], bounds[1:], strict=True)))

    def dense(self) -> torch.Tensor:
        seq = self.doc_ids.shape[1]
        causal = torch.ones(seq, seq, dtype=torch.bool, device=self.doc_ids.device).tril()
        return ((self.doc_ids[:, :, None] == self.doc_ids[:, None, :]) & causal)[:, None]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gqa: bool) -> torch.Tensor:
        if self.block_mask is not None:
            return _flex_attention()(q, k, v, block_mask=self.block_mask, enable_gqa=gqa)
        if torch.compiler.is_compiling() or self.runs is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.dense(), enable_gqa=gqa)
        rows = []
        for b, runs in enumerate(self.runs):
            parts = [
                F.scaled_dot_product_attention(
                    q[b : b + 1, :, s:e],
                    k[b : b + 1, :, s:e],
                    v[b : b + 1, :, s:e],
                    is_causal=e - s > 1,
                    enable_gqa=gqa,
                )
                for s, e in runs
            ]
            rows.append(torch.cat(parts, dim=2))
        return torch.cat(rows, dim=0)


_FLEX = None


def _flex_attention():
    """flex_attention compiled once (its fused kernel exists only under torch.compile); called
    as-is when already inside a compiled region."""
    global _FLEX
    from torch.nn.attention.flex_attention import flex_attention

    if torch.compiler.is_compiling():
        return flex_attention
    if _FLEX is None:
        _FLEX = torch.compile(flex_attention, dynamic=False)
    return _FLEX


def _one_query_attention(q, k, v, key_mask: torch.Tensor) -> torch.Tensor:
    """A compiled decode step's attention: one query per row against the cache, written out so
    inductor fuses scores, mask and softmax into its own loops. SDPA would fall back to the
    flash kernel there, whose per-call cost is most of the attention time at this size.
    q [B, H, 1, D], k/v [B, KV, S, D], key_mask [B, 1, 1, S] bool; the query heads of a kv
    head are grouped as rows, so GQA needs no copies."""
    bsz, n_heads, _, head_dim = q.shape
    n_kv = k.shape[1]
    q = q.view(bsz, n_kv, n_heads // n_kv, head_dim)
    scores = (q @ k.transpose(-1, -2)) * head_dim**-0.5  # [B, KV, G, S]
    scores = scores.masked_fill(~key_mask.view(bsz, 1, 1, -1), float("-inf"))
    out = scores.softmax(dim=-1) @ v  # [B, KV, G, D]
    return out.view(bsz, n_heads, 1, head_dim)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attn_mask: torch.Tensor | DocumentMask | None,
        kv_cache: KVCache | None,
    ) -> torch.Tensor:
        bsz, seq, _ = x.shape
        q = self.q_proj(x).view(bsz, seq, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(bsz, seq, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(bsz, seq, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)
        # GQA: SDPA's enable_gqa broadcasts the kv heads without materialising copies.
        gqa = self.n_kv_heads != self.n_heads
        if attn_mask is None:
            # No mask given means plain causal self-attention over this chunk (training).
            out = F.scaled_dot_product_attention(q, k, v, is_causal=seq > 1, enable_gqa=gqa)
        elif isinstance(attn_mask, DocumentMask):
            out = attn_mask.attend(q, k, v, gqa)
        elif seq == 1 and attn_mask.dtype == torch.bool and torch.compiler.is_compiling():
            out = _one_query_attention(q, k, v, attn_mask)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=gqa)
        return self.o_proj(out.transpose(1, 2).reshape(bsz, seq, -1))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm block; the unit FSDP shards and activation checkpointing wraps."""

    def __init__(self, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, attn_mask=None, kv_cache=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, attn_mask, kv_cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    """Decoder-only LM. `forward` returns logits [B, T, vocab] (or final hidden states)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        if self.embed_tokens.weight.device.type != "meta":
            self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """GPT-2/Llama-style init; residual output projections scaled by 1/sqrt(2L) so the
        residual stream's variance does not grow with depth."""
        std = self.config.init_std
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                is_residual_out = name.endswith(("o_proj", "down_proj"))
                nn.init.normal_(module.weight, mean=0.0, std=residual_std if is_residual_out else std)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        position_ids: torch.Tensor | None = None,
        attn_mask: torch.Tensor | DocumentMask | None = None,
        kv_cache: KVCache | None = None,
        return_hidden: bool = False,
        logits_at: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        input_ids: [B, T] token ids.
        position_ids: [B, T]; defaults to 0..T-1 offset by the cache length. Packed sequences
            pass positions that restart at each document.
        attn_mask: bool, broadcastable to [B, 1, T, S], True where a query may attend a key
            (S = cached + new positions). None means causal over the current chunk. An integer
            [B, T] tensor (or a `DocumentMask`) gives document ids instead: causal within each
            contiguous document, no dense mask (packed rows, -1 on padding; no kv_cache).
        kv_cache: when given, new keys/values are appended and attention covers the cache.
        return_hidden: return the final normalised hidden states [B, T, d] instead of logits
            (reward heads, chunked losses).
        logits_at: [B, K] positions; the output is then [B, K, vocab], the head run only there
            (a sampler's last prompt token, a rollout's completion). The head is the largest
            GEMM of a small model, so skipping the positions nobody reads saves much of a step.
        """
        bsz, seq = input_ids.shape
        offset = kv_cache.length if kv_cache is not None else 0
        if offset + seq > self.config.max_seq_len:
            # Never silently: RoPE past the trained length degrades without any error.
            raise ValueError(
                f"sequence of {offset + seq} positions is longer than model.max_seq_len="
                f"{self.config.max_seq_len}; shorten the data (datamodule.max_seq_len / seq_len) or "
                "use a model with a longer context"
            )
        if position_ids is None:
            # One row, broadcast over the batch: the cos/sin tables are built once, not per row.
            position_ids = torch.arange(offset, offset + seq, device=input_ids.device)[None]
        if kv_cache is not None and attn_mask is None and offset > 0:
            # Causal over cache + chunk: query i sits at absolute position offset + i.
            keys = torch.arange(offset + seq, device=input_ids.device)
            queries = torch.arange(offset, offset + seq, device=input_ids.device)
            attn_mask = (keys[None, :] <= queries[:, None])[None, None]
        if (
            isinstance(attn_mask, torch.Tensor)
            and not attn_mask.dtype.is_floating_point
            and attn_mask.dtype != torch.bool
        ):
            attn_mask = DocumentMask(attn_mask)  # built once, shared by every layer
        x = self.embed_tokens(input_ids)
        cfg = self.config
        cos, sin = rotary_cos_sin(position_ids, cfg.head_dim, cfg.rope_theta, x.dtype, cfg.rope_scaling)
        for layer in self.layers:
            x = layer(x, cos, sin, attn_mask, kv_cache)
        if kv_cache is not None:
            kv_cache.length += seq
        if logits_at is not None:
            x = x.gather(1, logits_at[..., None].expand(-1, -1, x.shape[-1]))
        x = self.norm(x)
        return x if return_hidden else self.lm_head(x)

    def new_kv_cache(self, batch_size: int, max_len: int, static: bool = False) -> KVCache:
        p = self.embed_tokens.weight
        return KVCache(self.config, batch_size, max_len, p.device, p.dtype, static=static)


def build_model(cfg: ModelConfig, device: str | torch.device | None = None) -> Transformer:
    """Build on `device` ("meta" builds shapes only: no memory, used for counting and FSDP)."""
    with torch.device(device) if device is not None else nullcontext():
        return Transformer(cfg)
