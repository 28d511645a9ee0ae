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
    # Free-form name for logs and manifests ("tiny", "7b", ...); does not change the shape.
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


def rotary_cos_sin(
    position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of shape [B, T, head_dim] for the given positions.

    Computed per call rather than cached in a buffer: it is cheap, and a model built on the
    meta device (FSDP, param counting) then needs no buffer re-initialisation.
    """
    work = torch.promote_types(dtype, torch.float32)  # fp32 tables, fp64 under precision=64-true
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.int64).to(work) / head_dim)
    )
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
    """

    def __init__(
        self, cfg: ModelConfig, batch_size: int, max_len: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        shape = (batch_size, cfg.n_kv_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.length = 0
        self.max_len = max_len

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
        attn_mask: torch.Tensor | None,
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
        attn_mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        return_hidden: bool = False,
    ) -> torch.Tensor:
        """
        input_ids: [B, T] token ids.
        position_ids: [B, T]; defaults to 0..T-1 offset by the cache length. Packed sequences
            pass positions that restart at each document.
        attn_mask: bool, broadcastable to [B, 1, T, S], True where a query may attend a key
            (S = cached + new positions). None means causal over the current chunk.
        kv_cache: when given, new keys/values are appended and attention covers the cache.
        return_hidden: return the final normalised hidden states [B, T, d] instead of logits
            (reward heads, chunked losses).
        """
        bsz, seq = input_ids.shape
        offset = kv_cache.length if kv_cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(offset, offset + seq, device=input_ids.device).expand(bsz, seq)
        if kv_cache is not None and attn_mask is None and offset > 0:
            # Causal over cache + chunk: query i sits at absolute position offset + i.
            keys = torch.arange(offset + seq, device=input_ids.device)
            queries = torch.arange(offset, offset + seq, device=input_ids.device)
            attn_mask = (keys[None, :] <= queries[:, None])[None, None]
        x = self.embed_tokens(input_ids)
        cos, sin = rotary_cos_sin(position_ids, self.config.head_dim, self.config.rope_theta, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, attn_mask, kv_cache)
        if kv_cache is not None:
            kv_cache.length += seq
        x = self.norm(x)
        return x if return_hidden else self.lm_head(x)

    def new_kv_cache(self, batch_size: int, max_len: int) -> KVCache:
        p = self.embed_tokens.weight
        return KVCache(self.config, batch_size, max_len, p.device, p.dtype)


def build_model(cfg: ModelConfig, device: str | torch.device | None = None) -> Transformer:
    """Build on `device` ("meta" builds shapes only: no memory, used for counting and FSDP)."""
    with torch.device(device) if device is not None else nullcontext():
        return Transformer(cfg)
