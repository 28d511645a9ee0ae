"""RL/CAI fixtures: a tokenizer trained on generated task text and a very small model shape."""

from __future__ import annotations

import pytest
import torch

from lmforge.data.tasks import make_tasks
from lmforge.tokenizer import train_tokenizer


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:
    texts = []
    for task in make_tasks("mix", 400, 0, "train"):
        texts += [task.prompt, task.response()]
    return str(train_tokenizer(texts, vocab_size=384, show_progress=False).save(tmp_path_factory.mktemp("tok")))


@pytest.fixture()
def model_cfg() -> dict:
    torch.manual_seed(0)
    return dict(vocab_size=384, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=128, name="t")
