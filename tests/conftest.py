"""Session settings and the fixtures several test folders share, built once per session.

Tokenizers are trained on the text each kind of test needs (thresholds were measured with them):
- `corpus_tokenizer_dir`: the embedded default corpus (pretraining, configs, the CLI);
- `task_tokenizer_dir` / `tokenizer`: generated task text (SFT, DPO, reward, LoRA);
- `rl_tokenizer_dir`: generated task text at vocab 384 (RL and CAI, with `rl_model_cfg`);
- `words_tokenizer_dir`: twelve words (token-shard packing, where ids are easy to follow);
- `bpe` / `bpe_dir`: a 25-document default corpus (the tokenizer's own tests);
- `other_tokenizer_dir`: same vocab size as the task and corpus tokenizers, another fingerprint.
Checkpoints: `memorised_checkpoint` (export and serving), `tiny_eval_model` (evaluation).
Helpers tests import live in tests/support/.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra.core.global_hydra import GlobalHydra

from lmforge.config_paths import conf_dir
from lmforge.data.default_corpus import build_default_corpus, ensure_default_corpus
from lmforge.data.shard_writer import ShardConfig, write_shards
from lmforge.data.tasks import make_tasks, sft_record
from lmforge.formats.corpus import iter_texts
from lmforge.model import ModelConfig
from lmforge.tokenizer import Tokenizer, train_tokenizer
from tests.support.compose import compose_job, compose_train
from tests.support.memorised import MemorisedCheckpoint, build_memorised_checkpoint
from tests.support.word_shards import WORDS, word_shard_config

# wandb fails with no key and no mode; tests never reach the network.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TORCHAO_NO_KERNEL_WARNINGS", "1")

REPO = Path(__file__).resolve().parents[1]

# Libraries write os.environ as a side effect (Lightning's SLURMEnvironment sets MASTER_ADDR, Ray
# its RAY_* keys, in-process fits PL_GLOBAL_SEED), and every later subprocess inherits it: a
# leaked MASTER_ADDR made the two-process DDP test wait for a host that does not exist.
_LEAK_PRONE = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "RANK")


@pytest.fixture(autouse=True)
def _environment_does_not_leak_between_tests():
    before = dict(os.environ)
    yield
    added = set(os.environ) - set(before)
    os.environ.clear()
    os.environ.update(before)
    leaked = sorted(k for k in added if k in _LEAK_PRONE)
    assert not leaked, f"the test left {leaked} in os.environ; set them with monkeypatch"


# As conf/eval.yaml resolves it: $LMFORGE_BENCHMARKS, else ../shared/benchmarks beside the clone.
BENCHMARKS = Path(os.environ.get("LMFORGE_BENCHMARKS") or REPO.parent / "shared" / "benchmarks").resolve()


@pytest.fixture(scope="session")
def benchmarks() -> Path:
    """The real benchmark files. They are licensed data kept outside the repo (never copied in),
    beside the clone in ../shared or at $LMFORGE_BENCHMARKS; without them these tests cannot run."""
    if not BENCHMARKS.exists():
        pytest.skip(f"shared benchmark files not found at {BENCHMARKS}")
    return BENCHMARKS


# ----- corpora and tokenizers -----
@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    return ensure_default_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def corpus_tokenizer_dir(tmp_path_factory, corpus_dir) -> Path:
    texts = [t[:4000] for t in iter_texts(corpus_dir)]
    return train_tokenizer(texts, vocab_size=512, show_progress=False).save(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    return build_default_corpus(tmp_path_factory.mktemp("small_corpus"), max_docs_per_domain=25)


@pytest.fixture(scope="session")
def bpe(small_corpus) -> Tokenizer:
    return train_tokenizer(iter_texts(small_corpus), vocab_size=640, show_progress=False)


@pytest.fixture(scope="session")
def bpe_dir(bpe, tmp_path_factory):
    return bpe.save(tmp_path_factory.mktemp("bpe"))


def _task_texts(n: int, with_wrong_answers: bool) -> list[str]:
    texts = []
    for task in make_tasks("mix", n, 0, "train"):
        texts += [task.prompt, task.response(), *(task.wrong_answers if with_wrong_answers else [])]
    return texts


@pytest.fixture(scope="session")
def task_tokenizer_dir(tmp_path_factory) -> str:
    tokenizer = train_tokenizer(_task_texts(600, with_wrong_answers=True), vocab_size=512, show_progress=False)
    return str(tokenizer.save(tmp_path_factory.mktemp("task_tokenizer")))


@pytest.fixture(scope="session")
def tokenizer(task_tokenizer_dir) -> Tokenizer:
    return Tokenizer.load(task_tokenizer_dir)


@pytest.fixture(scope="session")
def rl_tokenizer_dir(tmp_path_factory) -> str:
    tokenizer = train_tokenizer(_task_texts(400, with_wrong_answers=False), vocab_size=384, show_progress=False)
    return str(tokenizer.save(tmp_path_factory.mktemp("rl_tokenizer")))


@pytest.fixture(scope="session")
def other_tokenizer_dir(tmp_path_factory) -> str:
    """Same vocabulary size, different merges: a different fingerprint."""
    tokenizer = train_tokenizer(
        ["the quick brown fox jumps over the lazy dog " * 3] * 50, vocab_size=512, show_progress=False
    )
    return str(tokenizer.save(tmp_path_factory.mktemp("other_tokenizer")))


# ----- model shapes and batches -----
@pytest.fixture()
def model_cfg() -> dict:
    torch.manual_seed(0)
    return dict(
        vocab_size=512, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=128, name="test"
    )


@pytest.fixture()
def rl_model_cfg(model_cfg) -> dict:
    """`model_cfg` at the RL tokenizer's vocabulary size."""
    return {**model_cfg, "vocab_size": 384, "name": "t"}


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


@pytest.fixture(scope="session")
def token_rows(corpus_tokenizer_dir, corpus_dir) -> torch.Tensor:
    """[N, 33] rows of real corpus tokens (documents EOS-separated), for in-process fits."""
    tokenizer = Tokenizer.load(corpus_tokenizer_dir)
    ids: list[int] = []
    for text in iter_texts(corpus_dir):
        ids += tokenizer.encode(text[:3000]) + [tokenizer.eos_id]
    width = 33
    return torch.tensor(ids[: len(ids) // width * width]).view(-1, width)


# ----- token shards -----
@pytest.fixture(scope="session")
def shards_dir(tmp_path_factory, corpus_dir, corpus_tokenizer_dir) -> Path:
    """Token shards of the embedded corpus, seq_len = MICRO_MODEL's max_seq_len."""
    out = tmp_path_factory.mktemp("shards")
    write_shards(
        ShardConfig(
            corpus=str(corpus_dir),
            tokenizer=str(corpus_tokenizer_dir),
            out=str(out),
            seq_len=64,
            sequences_per_shard=256,
        )
    )
    return out


@pytest.fixture
def shard_overrides(shards_dir, corpus_dir) -> list[str]:
    """The default data config pointed at the test shards; batch of 8 sequences per device."""
    return [
        f"data.shards_dir={shards_dir}",
        f"data.corpus_dir={corpus_dir}",
        "data.batch_size=8",
        "data.val_sequences_per_domain=16",
    ]


@pytest.fixture(scope="session")
def shard_corpus(tmp_path_factory) -> Path:
    """Two domains of random twelve-word documents, each part ending in a corrupt line."""
    root = tmp_path_factory.mktemp("shard_corpus")
    rng = np.random.default_rng(0)
    for domain, count in (("prose", 120), ("code", 60)):
        (root / domain).mkdir()
        with gzip.open(root / domain / "part-00000.jsonl.gz", "wt") as f:
            for i in range(count):
                text = " ".join(rng.choice(WORDS, size=int(rng.integers(5, 80)))) + "."
                f.write(json.dumps({"id": f"{domain}-{i}", "text": text, "domain": domain}) + "\n")
            f.write("{not json\n")  # a corrupt record: counted, not fatal
    return root


@pytest.fixture(scope="session")
def words_tokenizer_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("words_tokenizer")
    train_tokenizer([" ".join(WORDS)] * 50, vocab_size=384, show_progress=False).save(out)
    return out


@pytest.fixture(scope="session")
def shards(tmp_path_factory, shard_corpus, words_tokenizer_dir) -> Path:
    out = tmp_path_factory.mktemp("word_shards")
    write_shards(word_shard_config(shard_corpus, words_tokenizer_dir, out))
    return out


@pytest.fixture
def shard_config():
    """`shard_config(corpus, tokenizer_dir, out, **overrides)`: the word shards' settings."""
    return word_shard_config


# ----- Hydra composition -----
@pytest.fixture
def compose_cfg():
    """`compose_cfg(overrides, run_dir=None)`: conf/train.yaml with the Hydra node kept."""
    yield compose_train
    GlobalHydra.instance().clear()


@pytest.fixture()
def compose_train_job():
    """`compose_train_job(overrides, run_dir)`: the task config `src/train.py` hands to a runner."""
    yield compose_job
    GlobalHydra.instance().clear()


# ----- checkpoints -----
@pytest.fixture(scope="session")
def memorised_checkpoint(tmp_path_factory) -> MemorisedCheckpoint:
    return build_memorised_checkpoint(tmp_path_factory.mktemp("serving"))


@pytest.fixture(scope="session")
def llama3_dir(tmp_path_factory) -> Path:
    """A Llama-3.1-style Hub folder (tests/support/hub_standins.py): byte-level BPE, llama3 RoPE."""
    from tests.support.hub_standins import llama3_standin

    return llama3_standin(tmp_path_factory.mktemp("llama3"))


@pytest.fixture(scope="session")
def llama32_dir(tmp_path_factory) -> Path:
    """Llama-3.2-style: as `llama3_dir` with tied embeddings."""
    from tests.support.hub_standins import llama3_standin

    return llama3_standin(tmp_path_factory.mktemp("llama32"), tie=True, seed=2)


@pytest.fixture(scope="session")
def llama2_dir(tmp_path_factory) -> Path:
    """A Llama-2-chat-style Hub folder: SentencePiece BPE converted to tokenizer.json, [INST] template."""
    from tests.support.hub_standins import llama2_standin

    return llama2_standin(tmp_path_factory.mktemp("llama2"))


@pytest.fixture(scope="session")
def tiny_eval_model(benchmarks):
    """Random weights in the tiny shape (context long enough for few-shot prompts), with a
    tokenizer trained on benchmark text."""
    from lmforge.eval.loading import random_model, smoke_tokenizer

    torch.set_num_threads(2)
    tokenizer = smoke_tokenizer(benchmarks, vocab_size=2048, max_texts=1500)
    cfg = ModelConfig(**yaml.safe_load((conf_dir() / "model" / "tiny.yaml").read_text()))
    cfg = dataclasses.replace(cfg, vocab_size=2048, max_seq_len=768)
    return random_model(cfg, tokenizer, seed=0)
