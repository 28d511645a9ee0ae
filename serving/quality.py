"""Measured quality and size of each export against the unquantized checkpoint.

Every export is reloaded through `transformers` (`AutoModelForCausalLM.from_pretrained`, which
decompresses compressed-tensors on CPU), so the figures describe the artifact on disk, not the
in-memory torchao model:

    size        bytes of the export's safetensors, and the ratio to a bf16 copy of the same weights
    perplexity  token perplexity on held-out sequences, and its delta to the fp32 checkpoint
    agreement   greedy continuations of probe prompts compared token by token with the fp32
                checkpoint's own greedy continuations (our KV-cache `generate`)
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lmforge.checkpoint import LoadedModel
from lmforge.formats.checkpoint_meta import read_export_manifest
from lmforge.generate import SamplingConfig, generate

log = logging.getLogger(__name__)

QUALITY_JSON = "quality.json"
QUALITY_MD = "quality.md"


@dataclass
class QualityProbe:
    eval_sequences: list[list[int]]  # perplexity is measured over these token sequences
    eval_source: str  # where they came from (held-out shards / texts)
    prompts: list[list[int]]  # greedy-agreement prompts
    new_tokens: int

    @classmethod
    def from_config(cls, cfg, loaded: LoadedModel) -> QualityProbe:
        tokenizer = loaded.tokenizer
        if cfg.val_shards:
            sequences, source = held_out_shard_sequences(cfg.val_shards, cfg.val_sequences, tokenizer), cfg.val_shards
        elif cfg.val_texts:
            if tokenizer is None:
                raise ValueError("val_texts needs the checkpoint's tokenizer")
            sequences = [[tokenizer.bos_id, *tokenizer.encode(t)] for t in cfg.val_texts]
            source = f"{len(cfg.val_texts)} held-out texts"
        else:
            raise ValueError("the quality report needs held-out data: set val_shards=<token shards dir> or val_texts")
        if cfg.probe_texts:
            if tokenizer is None:
                raise ValueError("probe_texts needs the checkpoint's tokenizer")
            prompts = [[tokenizer.bos_id, *tokenizer.encode(t)] for t in cfg.probe_texts]
        else:  # the first half of each held-out sequence (at most 32 tokens)
            prompts = [seq[: min(32, max(2, len(seq) // 2))] for seq in sequences[:8]]
        return cls(sequences, source, prompts, cfg.probe_new_tokens)


def held_out_shard_sequences(shards_dir: str, per_domain: int, tokenizer) -> list[list[int]]:
    from lmforge.data.token_shards import read_validation
    from lmforge.formats.shards import read_manifest as load_shard_manifest
    from lmforge.tokenizer import check_fingerprint

    manifest = load_shard_manifest(shards_dir)
    if tokenizer is not None:
        check_fingerprint(tokenizer.fingerprint, manifest["tokenizer_fingerprint"], f"validation shards {shards_dir}")
    tokens = read_validation(Path(shards_dir), manifest, sorted(manifest["domains"]), per_domain)
    return tokens.tolist()


@dataclass
class QualityRow:
    quant: str
    format: str
    size_bytes: int
    size_vs_bf16: float
    perplexity: float
    perplexity_delta: float  # vs the fp32 checkpoint
    greedy_token_agreement: float  # fraction of continuation tokens equal to the reference's, position by position
    greedy_exact: float  # fraction of prompts whose whole continuation matches


def _sequence_nll(logits: torch.Tensor, sequence: list[int]) -> tuple[float, int]:
    targets = torch.tensor(sequence[1:])
    nll = torch.nn.functional.cross_entropy(logits[0, :-1].float(), targets, reduction="sum")
    return float(nll), len(sequence) - 1


@torch.no_grad()
def sequence_nlls(forward, sequences: list[list[int]]) -> list[tuple[float, int]]:
    """(summed token NLL, predicted tokens) of each sequence, one at a time (no padding);
    `forward(ids [1, T]) -> logits [1, T, V]`."""
    return [_sequence_nll(forward(torch.tensor([sequence])), sequence) for sequence in sequences]


def perplexity(forward, sequences: list[list[int]]) -> float:
    """exp(mean token NLL) over all the sequences' tokens."""
    nlls = sequence_nlls(forward, sequences)
    return math.exp(sum(nll for nll, _ in nlls) / max(sum(n for _, n in nlls), 1))


def load_export_with_transformers(export_dir: Path):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per export is enough (quality_report's)
    return AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32).eval()


@torch.no_grad()
def hf_greedy(hf_model, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    outputs = []
    for prompt in prompts:  # one at a time: no padding, so no pad-position differences
        ids = torch.tensor([prompt])
        out = hf_model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=0,
        )
        outputs.append(out[0, len(prompt) :].tolist())
    return outputs


def agreement(reference: list[list[int]], candidate: list[list[int]]) -> tuple[float, float]:
    matched = sum(sum(a == b for a, b in zip(r, c)) for r, c in zip(reference, candidate))
    total = sum(len(r) for r in reference)
    exact = sum(r == c for r, c in zip(reference, candidate)) / max(len(reference), 1)
    return matched / max(total, 1), exact


def safetensors_bytes(export_dir: Path) -> int:
    return sum(p.stat().st_size for p in export_dir.glob("*.safetensors"))


def bf16_weight_bytes(loaded: LoadedModel) -> int:
    """What a bf16 export stores: every tensor at 2 bytes (lm_head omitted when tied)."""
    from lmforge.hf import hf_state_dict

    return sum(t.numel() * 2 for t in hf_state_dict(loaded.model, torch.float32).values())


def quality_report(
    loaded: LoadedModel, exports: dict[str, Path], probe: QualityProbe, dense_dtype: torch.dtype = torch.bfloat16
) -> list[QualityRow]:
    from tqdm import tqdm

    model = loaded.model.float().eval()
    reference_ppl = perplexity(lambda ids: model(ids), probe.eval_sequences)
    reference = generate(
        model, probe.prompts, SamplingConfig(max_new_tokens=probe.new_tokens, temperature=0.0), pad_id=0
    ).completions
    bf16_bytes = bf16_weight_bytes(loaded)
    rows = [QualityRow("checkpoint (fp32)", "-", bf16_bytes * 2, 2.0, reference_ppl, 0.0, 1.0, 1.0)]
    for quant, export_dir in tqdm(exports.items(), desc="quality report"):
        hf_model = load_export_with_transformers(export_dir)
        ppl = perplexity(lambda ids: hf_model(ids).logits, probe.eval_sequences)
        token_agreement, exact = agreement(reference, hf_greedy(hf_model, probe.prompts, probe.new_tokens))
        manifest = read_export_manifest(export_dir)
        size = safetensors_bytes(export_dir)
        rows.append(
            QualityRow(
                quant,
                manifest.get("format", "?"),
                size,
                size / bf16_bytes,
                ppl,
                ppl - reference_ppl,
                token_agreement,
                exact,
            )
        )
    log.info("quality measured on %d sequences (%s)", len(probe.eval_sequences), probe.eval_source)
    return rows


def format_table(rows: list[QualityRow]) -> str:
    header = (
        "| quant | format | size (MB) | size vs bf16 | perplexity | delta ppl | greedy token agreement | greedy exact |"
    )
    lines = [header, "|" + "---|" * 8]
    for r in rows:
        lines.append(
            f"| {r.quant} | {r.format} | {r.size_bytes / 1e6:.3f} | {r.size_vs_bf16:.3f} | "
            f"{r.perplexity:.3f} | {r.perplexity_delta:+.4f} | {r.greedy_token_agreement:.3f} | "
            f"{r.greedy_exact:.2f} |"
        )
    return "\n".join(lines)


def write_quality_report(rows: list[QualityRow], out_dir: Path) -> str:
    """Writes quality.json and quality.md into `out_dir`; returns the markdown table."""
    out_dir = Path(out_dir)
    table = format_table(rows)
    (out_dir / QUALITY_JSON).write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    (out_dir / QUALITY_MD).write_text(table + "\n")
    return table
