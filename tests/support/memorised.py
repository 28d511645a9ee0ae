"""A tiny Llama that has memorised a few sentences, saved as an HF checkpoint dir (the
`memorised_checkpoint` fixture in tests/conftest.py).

Memorisation makes greedy agreement meaningful: the fp32 model reproduces each sentence from its
first tokens, so a quantized export that still does is shown not to have lost what matters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lmforge.hf import export_hf
from lmforge.model import ModelConfig, build_model
from lmforge.tokenizer import Tokenizer, train_tokenizer

MEMORISED = [
    "The quick brown fox jumps over the lazy dog near the old river bank every morning.",
    "Serving a model needs a tokenizer, a config file, and weights stored as safetensors.",
    "Quantized weights should keep this memorised sentence intact when rounding is gentle.",
    "A small language model can learn three sentences by heart in a few hundred steps.",
]
HELD_OUT = [
    "The old dog sleeps by the river while the fox runs over the bank.",
    "A config file and a tokenizer are stored next to the model weights.",
]
PROMPT_TOKENS = 6


@dataclass
class MemorisedCheckpoint:
    path: Path  # HF dir, fp32
    tokenizer: Tokenizer
    config: ModelConfig
    sequences: list[list[int]]  # bos + tokens of each memorised sentence


def _overfit(model, sequences: list[list[int]], steps: int) -> float:
    length = max(map(len, sequences))
    ids = torch.zeros(len(sequences), length, dtype=torch.long)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = True
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits[mask[:, 1:]], ids[:, 1:][mask[:, 1:]])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def build_memorised_checkpoint(root: Path) -> MemorisedCheckpoint:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    tokenizer = train_tokenizer((MEMORISED + HELD_OUT) * 10, vocab_size=384, show_progress=False)
    # d_model and ffn_dim are multiples of 128 so w4a16's group size divides every input dim.
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        d_model=128,
        n_layers=2,
        n_heads=2,
        n_kv_heads=1,
        ffn_dim=256,
        max_seq_len=64,
        name="serving-test",
    )
    model = build_model(config, device="cpu")
    sequences = [[tokenizer.bos_id, *tokenizer.encode(text)] for text in MEMORISED]
    final_loss = _overfit(model, sequences, steps=150)
    assert final_loss < 0.05, f"fixture model did not memorise its sentences (loss {final_loss:.3f})"
    path = root / "memorised"
    export_hf(model.eval(), path, tokenizer, dtype=torch.float32, manifest={"parent": "tests/serving fixture"})
    return MemorisedCheckpoint(path, tokenizer, config, sequences)
