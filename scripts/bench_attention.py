"""Attention without dense masks, against the former dense-mask baseline, in one process.

Two cases, forward + backward of one attention call (GQA, fp32 on CPU / bf16 on CUDA):
  - packed: rows of --docs documents plus padding. dense = SDPA with the [B, 1, T, T] bool mask
    of `block_causal_mask`; docmask = `lmforge.model.DocumentMask` from the [B, T] document ids
    (flex_attention with a BlockMask on CUDA, one causal SDPA per document elsewhere);
  - prefill: left-padded prompts. dense = SDPA with `padded_causal_mask`'s [B, 1, T, T] mask;
    rightpad = what `lmforge.generate` and RL's scoring (`completion_logps`, rows rotated so their
    real tokens start at 0) do now: right-padded rows under plain causal SDPA.
The variants alternate within each round; prints median ms (with min-max) and peak memory
(CUDA: max_memory_allocated; CPU: the bytes of the mask each path materialises).

    python scripts/bench_attention.py                    # seq 2048 (the issue's comparison)
    python scripts/bench_attention.py --seq 256 --rounds 2 --batch 2   # smoke size
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lmforge.data.chat import block_causal_mask
from lmforge.model import DocumentMask


def padded_causal_mask(is_real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The dense baseline: position ids and the [N, 1, T, T] mask of a left-padded batch (a query
    sees the real tokens at or before it; a pad query only itself). Generation and RL scoring
    built this until 2026-12; both now need no mask (see the module docstring)."""
    width = is_real.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=is_real.device).tril()
    eye = torch.eye(width, dtype=torch.bool, device=is_real.device)
    mask = (causal & is_real.bool()[:, None, :]) | eye
    positions = (is_real.long().cumsum(dim=-1) - 1).clamp(min=0)
    return positions, mask[:, None]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device) -> tuple[float, float]:
    """(seconds, peak bytes) of fn() with a backward through its output."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    out, mask_bytes = fn()
    out.float().square().mean().backward()
    sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else mask_bytes
    return seconds, peak


def qkv(args, device, dtype):
    shape_q = (args.batch, args.heads, args.seq, args.head_dim)
    shape_kv = (args.batch, args.kv_heads, args.seq, args.head_dim)
    return [torch.randn(s, device=device, dtype=dtype, requires_grad=True) for s in (shape_q, shape_kv, shape_kv)]


def doc_ids(args, device) -> torch.Tensor:
    """Each row: --docs documents of random lengths, then ~5% padding (-1)."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.full((args.batch, args.seq), -1, dtype=torch.long)
    used = int(args.seq * 0.95)
    for row in range(args.batch):
        cuts = sorted(torch.randperm(used - 1, generator=gen)[: args.docs - 1].add(1).tolist())
        for doc, (s, e) in enumerate(zip([0, *cuts], [*cuts, used], strict=True)):
            ids[row, s:e] = row * args.docs + doc
    return ids.to(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--docs", type=int, default=8, help="documents per packed row")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    gqa = args.heads != args.kv_heads

    ids = doc_ids(args, device)
    lengths = torch.randint(args.seq // 4, args.seq + 1, (args.batch,), generator=torch.Generator().manual_seed(1))
    lengths[0] = args.seq
    cols = torch.arange(args.seq)
    left_real = (cols[None] >= args.seq - lengths[:, None]).to(device)

    def packed_dense():
        q, k, v = qkv(args, device, dtype)
        mask = block_causal_mask(ids)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa), mask.numel()

    def packed_docmask():
        q, k, v = qkv(args, device, dtype)
        return DocumentMask(ids).attend(q, k, v, gqa), ids.numel() * ids.element_size()

    def prefill_dense():
        q, k, v = qkv(args, device, dtype)
        _, mask = padded_causal_mask(left_real)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa), mask.numel()

    def prefill_rightpad():
        q, k, v = qkv(args, device, dtype)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa), 0

    variants = {
        "packed/dense": packed_dense,
        "packed/docmask": packed_docmask,
        "prefill/dense": prefill_dense,
        "prefill/rightpad": prefill_rightpad,
    }
    for fn in variants.values():  # warm-up (flex_attention compiles on CUDA here)
        timed(fn, device)
    times: dict[str, list[float]] = {name: [] for name in variants}
    peaks: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            seconds, peak = timed(fn, device)
            times[name].append(seconds)
            peaks[name] = max(peaks.get(name, 0), peak)
    what = "peak CUDA MiB" if device.type == "cuda" else "mask MiB"
    print(
        f"seq={args.seq} batch={args.batch} heads={args.heads}/{args.kv_heads} hd={args.head_dim} "
        f"docs={args.docs} device={device.type} dtype={str(dtype).removeprefix('torch.')} rounds={args.rounds}"
    )
    print(f"{'variant':<18} {'median ms':>10} {'min-max ms':>16} {what:>14}")
    for name, ts in times.items():
        ms = [t * 1e3 for t in ts]
        print(
            f"{name:<18} {statistics.median(ms):>10.2f} {f'{min(ms):.1f}-{max(ms):.1f}':>16} {peaks[name] / 2**20:>14.2f}"
        )
    for case, new in (("packed", "docmask"), ("prefill", "rightpad")):
        ratio = statistics.median(times[f"{case}/dense"]) / statistics.median(times[f"{case}/{new}"])
        print(f"{case}: {new} is {ratio:.2f}x the dense-mask speed")


if __name__ == "__main__":
    main()
