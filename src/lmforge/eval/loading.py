"""Load the model under evaluation: a checkpoint / run dir / HF export dir through the
training spine's `load_for_inference`, or (no checkpoint given) a randomly initialised model
with a tokenizer trained on benchmark text, which exercises every code path in seconds."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmforge.model import ModelConfig, Transformer, build_model
from lmforge.tokenizer import Tokenizer, train_tokenizer

log = logging.getLogger(__name__)


@dataclass
class EvalModel:
    model: Transformer
    tokenizer: Tokenizer
    model_id: str  # cache key: changes whenever the weights could have changed
    manifest: dict = field(default_factory=dict)


def _file_identity(path: Path) -> str:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    parts = [f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def load_checkpoint(path: str | Path, device: str = "cpu") -> EvalModel:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    from lmforge.checkpoint import load_for_inference  # the training spine's loader (.ckpt, run dir, HF dir)

    loaded = load_for_inference(path, device=device)
    manifest = dict(getattr(loaded, "manifest", None) or {})
    return EvalModel(loaded.model.eval(), loaded.tokenizer, f"{path.resolve()}@{_file_identity(path)}", manifest)


def smoke_tokenizer(benchmarks_root: str | Path, vocab_size: int = 4096, max_texts: int = 4000) -> Tokenizer:
    """A BPE trained on benchmark questions: realistic tokens for a random-weight smoke model."""
    from lmforge.eval.data import read_jsonl

    root = Path(benchmarks_root)
    texts = [r["question"] + "\n" + r["answer"] for r in read_jsonl(root / "gsm8k" / "train.jsonl")[:max_texts]]
    texts += [
        r["prompt"] + r.get("canonical_solution", "") for r in read_jsonl(root / "humaneval" / "HumanEval.jsonl.gz")
    ]
    for csv_file in itertools.islice(sorted((root / "mmlu" / "dev").glob("*.csv")), 57):
        texts.append(csv_file.read_text(encoding="utf-8"))
    return train_tokenizer(texts, vocab_size=vocab_size, show_progress=False)


def random_model(model_cfg: ModelConfig | dict, tokenizer: Tokenizer, seed: int = 0, device: str = "cpu") -> EvalModel:
    cfg = model_cfg if isinstance(model_cfg, ModelConfig) else ModelConfig(**model_cfg)
    if cfg.vocab_size < tokenizer.vocab_size:
        raise ValueError(f"model vocab {cfg.vocab_size} < tokenizer vocab {tokenizer.vocab_size}")
    torch.manual_seed(seed)
    model = build_model(cfg, device)
    model.init_weights()
    identity = hashlib.sha256(json.dumps([cfg.to_dict(), seed, tokenizer.fingerprint]).encode()).hexdigest()[:16]
    return EvalModel(model.eval(), tokenizer, f"random:{identity}", {"stage": "random-init", "parent": None})
