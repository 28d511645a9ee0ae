"""Held-out log-likelihood of a pretrained checkpoint and of its shape untrained, sequence by sequence.

    python scripts/eval_ppl.py ckpt=artifacts/e2e/pretrain shards=artifacts/e2e/shards [n=0] [out=report.json]

Both models score the same sequences of the validation shards (never trained on): all of them
(`n=0`, the default) or the first `n`. The untrained
model is the checkpoint's shape freshly initialised with `seed`, which is what pretraining starts
from. The report keeps each sequence's mean log-likelihood per token under both (`items`), so the
main job tests "pretraining lowers held-out perplexity" item by item (e2e/stage_claims.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from lmforge.checkpoint import load_for_inference
from lmforge.model import build_model
from serving.quality import held_out_shard_sequences, sequence_nlls


@dataclass
class EvalPplConfig:
    ckpt: str = "???"
    shards: str = "???"
    n: int = 0  # held-out sequences; 0: every validation sequence (the embedded corpus has about 80)
    seed: int = 1337  # the untrained model's initialisation (conf/train.yaml's default seed)
    threads: int = 2
    out: str | None = None


def sequence_logliks(model: torch.nn.Module, sequences: list[list[int]]) -> list[float]:
    """Mean log-likelihood per predicted token of each sequence (`serving.quality.sequence_nlls`)."""
    return [-nll / tokens for nll, tokens in sequence_nlls(model, sequences)]


def main() -> None:
    cfg: EvalPplConfig = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EvalPplConfig), OmegaConf.from_cli()))
    torch.set_num_threads(cfg.threads)
    loaded = load_for_inference(cfg.ckpt)
    sequences = held_out_shard_sequences(cfg.shards, cfg.n or None, loaded.tokenizer)
    sequences = sequences[: cfg.n] if cfg.n else sequences
    if len(sequences) < max(cfg.n, 1):
        raise SystemExit(
            f"error: shards={cfg.shards} holds {len(sequences)} validation sequences, fewer than n={cfg.n}"
        )
    torch.manual_seed(cfg.seed)
    untrained = build_model(loaded.model_config).eval()
    trained = sequence_logliks(loaded.model, sequences)
    init = sequence_logliks(untrained, sequences)
    ppl, ppl_init = (math.exp(-sum(x) / len(x)) for x in (trained, init))
    report = {
        "ckpt": str(cfg.ckpt),
        "config": asdict(cfg),
        "n": len(sequences),
        "ppl": ppl,
        "ppl_init": ppl_init,
        "items": {
            "seq_id": list(range(len(sequences))),
            "loglik": [round(x, 6) for x in trained],
            "loglik_init": [round(x, 6) for x in init],
        },
    }
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{cfg.ckpt}: held-out perplexity {ppl_init:.1f} untrained -> {ppl:.1f} (n={len(sequences)} sequences)")


if __name__ == "__main__":
    main()
