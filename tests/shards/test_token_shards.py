"""Shard writer and TokenShardDataModule: packing, manifest, fingerprint check, mixing, resume."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from data_pipeline.shards import ShardConfig, is_validation, write_shards
from lmforge.data.token_shards import MixedTokenStream, TokenShardDataModule
from lmforge.tokenizer import TokenizerMismatchError, train_tokenizer

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def _doc(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, size=n)) + "."


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    for domain, count in (("prose", 120), ("code", 60)):
        (root / domain).mkdir()
        with gzip.open(root / domain / "part-00000.jsonl.gz", "wt") as f:
            for i in range(count):
                f.write(json.dumps({"id": f"{domain}-{i}", "text": _doc(rng, int(rng.integers(5, 80))), "domain": domain}) + "\n")
            f.write("{not json\n")  # a corrupt record: counted, not fatal
    return root


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, corpus) -> Path:
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer([" ".join(WORDS)] * 50, vocab_size=384, show_progress=False).save(out)
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory, corpus, tokenizer_dir) -> Path:
    out = tmp_path_factory.mktemp("shards")
    write_shards(ShardConfig(corpus=str(corpus), tokenizer=str(tokenizer_dir), out=str(out), seq_len=16,
                             sequences_per_shard=20, val_fraction=0.1))
    return out


def _read_all(shards: Path, manifest: dict, domain: str, split: str) -> list[np.ndarray]:
    rows = []
    for shard in manifest["domains"][domain][split]["shards"]:
        for s in wds.WebDataset(str(shards / shard["path"]), shardshuffle=False):
            rows.append(np.frombuffer(s["tokens.bin"], dtype=manifest["format"]["dtype"]))
    return rows


def test_packing_keeps_every_token_in_document_order(shards, corpus, tokenizer_dir):
    from lmforge.tokenizer import Tokenizer

    tok = Tokenizer.load(tokenizer_dir)
    manifest = json.loads((shards / "manifest.json").read_text())
    for domain in ("prose", "code"):
        lines = gzip.open(corpus / domain / "part-00000.jsonl.gz", "rt").read().splitlines()
        docs = [json.loads(l) for l in lines if l.startswith("{\"")]
        for split in ("train", "val"):
            expected = [t for d in docs if is_validation(d["id"], 0.1) == (split == "val")
                        for t in tok.encode(d["text"], add_eos=True)]
            written = np.concatenate(_read_all(shards, manifest, domain, split)).tolist()
            stats = manifest["domains"][domain][split]
            # Windows are back-to-back; only the tail under one window is dropped.
            assert written == expected[: len(written)]
            assert len(expected) - len(written) == stats["dropped_tail_tokens"] < 16
            assert stats["sequences"] == len(written) // 16 and stats["tokens"] == len(written)
            assert sum(s["sequences"] for s in stats["shards"]) == stats["sequences"]
    assert manifest["corrupt_records"]["count"] == 2


def test_rerun_is_skipped_and_manifest_is_stable(shards, corpus, tokenizer_dir):
    before = (shards / "manifest.json").read_text()
    again = write_shards(ShardConfig(corpus=str(corpus), tokenizer=str(tokenizer_dir), out=str(shards), seq_len=16,
                                     sequences_per_shard=20, val_fraction=0.1))
    assert json.dumps(again, indent=2) == before


def test_shards_from_another_tokenizer_are_refused(shards, tmp_path):
    other = tmp_path / "other_tok"
    train_tokenizer(["completely different text " * 20], vocab_size=300, show_progress=False).save(other)
    manifest = json.loads((shards / "manifest.json").read_text())
    dm = TokenShardDataModule(str(shards), str(other), batch_size=2)
    with pytest.raises(TokenizerMismatchError) as err:
        dm.setup()
    from lmforge.tokenizer import Tokenizer

    assert manifest["tokenizer_fingerprint"] in str(err.value)
    assert Tokenizer.load(other).fingerprint in str(err.value)


def test_domain_sampling_follows_the_weights(shards, tokenizer_dir):
    dm = TokenShardDataModule(str(shards), str(tokenizer_dir), {"prose": 3, "code": 1}, batch_size=8)
    dm.setup()
    stream = MixedTokenStream(dm.root, dm.manifest, dm.weights, 8, seed=0)
    choices = stream.domain_choices(0, 40_000)
    share_prose = float(np.mean(choices == stream.domains.index("prose")))
    assert abs(share_prose - 0.75) < 0.01
    # Any range is reproducible on its own (resume does not replay from zero).
    assert np.array_equal(stream.domain_choices(70_000, 70_100), stream.domain_choices(0, 140_000)[70_000:70_100])


def _batches(dm: TokenShardDataModule, n: int) -> list[torch.Tensor]:
    it = iter(dm.train_dataloader())
    return [next(it)["input_ids"] for _ in range(n)]


def test_resume_continues_exactly_and_workers_keep_the_order(shards, tokenizer_dir):
    kwargs = dict(weights={"prose": 1, "code": 1}, batch_size=4, seq_len=16)
    full = _batches(TokenShardDataModule(str(shards), str(tokenizer_dir), **kwargs), 30)  # > 1 epoch of code
    resumed = TokenShardDataModule(str(shards), str(tokenizer_dir), **kwargs)
    resumed.load_state_dict({"batches_consumed": 11, "seed": 0, "weights": {"prose": 1.0, "code": 1.0}})
    assert all(torch.equal(a, b) for a, b in zip(full[11:], _batches(resumed, 19)))
    workers = TokenShardDataModule(str(shards), str(tokenizer_dir), num_workers=2, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(full, _batches(workers, 12)))


def test_two_ranks_partition_the_global_batch(shards, tokenizer_dir):
    dm = TokenShardDataModule(str(shards), str(tokenizer_dir), {"prose": 1, "code": 1}, batch_size=6)
    single = _batches(dm, 5)
    ranks = [iter(MixedTokenStream(dm.root, dm.manifest, dm.weights, 3, seed=0, rank=r, world_size=2)) for r in (0, 1)]
    for global_batch in single:
        assert torch.equal(torch.cat([next(ranks[0])["input_ids"], next(ranks[1])["input_ids"]]), global_batch)


def test_validation_rows_are_the_held_out_split(shards, tokenizer_dir):
    dm = TokenShardDataModule(str(shards), str(tokenizer_dir), {"prose": 1, "code": 1}, batch_size=4,
                              val_sequences_per_domain=None)
    dm.setup()
    rows = torch.cat([b["input_ids"] for b in dm.val_dataloader()])
    manifest = dm.manifest
    expected = sum(manifest["domains"][d]["val"]["sequences"] for d in ("prose", "code"))
    assert rows.shape == (expected, 16)
