"""Foundation fixtures: a small default corpus and a BPE tokenizer trained on it, once per session."""

from __future__ import annotations

import pytest
import torch

from lmforge.data.default_corpus import build_default_corpus, iter_corpus_texts
from lmforge.tokenizer import Tokenizer, train_tokenizer


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    return build_default_corpus(tmp_path_factory.mktemp("corpus"), max_docs_per_domain=25)


@pytest.fixture(scope="session")
def bpe(small_corpus) -> Tokenizer:
    return train_tokenizer(iter_corpus_texts(small_corpus), vocab_size=640, show_progress=False)


@pytest.fixture(scope="session")
def bpe_dir(bpe, tmp_path_factory):
    return bpe.save(tmp_path_factory.mktemp("tokenizer"))
