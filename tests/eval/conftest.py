"""Session fixtures for the evaluation tests: a tokenizer trained on benchmark text and a
random-weight model in the tiny shape (long enough context for few-shot prompts)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from lmforge.model import ModelConfig

REPO = Path(__file__).resolve().parents[2]
# `benchmarks` (the shared MMLU/GSM8K/HumanEval/MT-Bench folder) is in tests/conftest.py.


@pytest.fixture(scope="session")
def tiny_eval_model(benchmarks):
    from lmforge.eval.loading import random_model, smoke_tokenizer

    torch.set_num_threads(2)
    tokenizer = smoke_tokenizer(benchmarks, vocab_size=2048, max_texts=1500)
    cfg = ModelConfig(**yaml.safe_load((REPO / "conf" / "model" / "tiny.yaml").read_text()))
    cfg = dataclasses.replace(cfg, vocab_size=2048, max_seq_len=768)
    return random_model(cfg, tokenizer, seed=0)
