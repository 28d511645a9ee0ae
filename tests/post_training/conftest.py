"""Post-training fixtures: a tokenizer trained on task text and a small model shape."""

from __future__ import annotations

import pytest
import torch

from lmforge.data.tasks import make_tasks, sft_record
from lmforge.tokenizer import Tokenizer, train_tokenizer


def task_texts(n: int = 600, seed: int = 0) -> list[str]:
    texts = []
    for task in make_tasks("mix", n, seed, "train"):
        texts += [task.prompt, task.response(), *task.wrong_answers]
    return texts


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:
    tokenizer = train_tokenizer(task_texts(), vocab_size=512, show_progress=False)
    return str(tokenizer.save(tmp_path_factory.mktemp("tokenizer")))


@pytest.fixture(scope="session")
def other_tokenizer_dir(tmp_path_factory) -> str:
    """Same vocabulary size, different merges: a different fingerprint."""
    tokenizer = train_tokenizer(["the quick brown fox jumps over the lazy dog " * 3] * 50, vocab_size=512, show_progress=False)
    return str(tokenizer.save(tmp_path_factory.mktemp("other_tokenizer")))


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir) -> Tokenizer:
    return Tokenizer.load(tokenizer_dir)


@pytest.fixture()
def model_cfg() -> dict:
    torch.manual_seed(0)
    return dict(vocab_size=512, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=128, name="test")


@pytest.fixture()
def conversations() -> list[list[dict]]:
    convs = [sft_record(t)["messages"] for t in make_tasks("mix", 6, seed=3, split="train")]
    # a multi-turn conversation with a system turn: both assistant turns are trained on
    convs.append(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Reverse the letters of: abc"},
            {"role": "assistant", "content": "Answer: cba"},
            {"role": "user", "content": "And of: xy"},
            {"role": "assistant", "content": "Answer: yx"},
        ]
    )
    return convs
