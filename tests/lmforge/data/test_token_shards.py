"""Shard writer and TokenShardDataModule: packing, manifest, fingerprint check, mixing, resume."""

import gzip
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import webdataset as wds

from lmforge.data.shard_writer import is_validation, write_shards
from lmforge.data.token_shards import DomainStream, MixedTokenStream, TokenShardDataModule
from lmforge.tokenizer import Tokenizer, TokenizerMismatchError, train_tokenizer
from tests.support.word_shards import WORD_SHARD_SEQ as SEQ


def _manifest(shards: Path) -> dict:
    return json.loads((shards / "manifest.json").read_text())


def _read_all(shards: Path, manifest: dict, domain: str, split: str) -> list[np.ndarray]:
    """Every sequence of a (domain, split), read with plain webdataset in shard order."""
    rows = []
    for shard in manifest["domains"][domain][split]["shards"]:
        for s in wds.WebDataset(str(shards / shard["path"]), shardshuffle=False, empty_check=False):
            rows.append(np.frombuffer(s["tokens.bin"], dtype=manifest["format"]["dtype"]))
    return rows


def _expected_stream(docs: list[dict], tok: Tokenizer, split: str, val_fraction: float = 0.1) -> list[int]:
    """Brute force: each document of the split encoded alone, EOS appended, concatenated."""
    return [
        t
        for d in docs
        if is_validation(d["id"], val_fraction) == (split == "val")
        for t in tok.encode(d["text"], add_eos=True)
    ]


def test_packing_keeps_every_token_in_document_order(shards, shard_corpus, words_tokenizer_dir):
    tok = Tokenizer.load(words_tokenizer_dir)
    manifest = _manifest(shards)
    for domain in ("prose", "code"):
        lines = gzip.open(shard_corpus / domain / "part-00000.jsonl.gz", "rt").read().splitlines()
        docs = [json.loads(line) for line in lines if line.startswith('{"')]
        for split in ("train", "val"):
            expected = _expected_stream(docs, tok, split)
            rows = _read_all(shards, manifest, domain, split)
            written = np.concatenate(rows).tolist()
            stats = manifest["domains"][domain][split]
            assert all(len(r) == SEQ for r in rows)
            # Windows are back-to-back; only the tail under one window is dropped.
            assert written == expected[: len(written)]
            assert len(expected) - len(written) == stats["dropped_tail_tokens"] < SEQ
            # Manifest counts equal recounts.
            assert stats["documents"] == sum(is_validation(d["id"], 0.1) == (split == "val") for d in docs)
            assert stats["sequences"] == len(rows) and stats["tokens"] == len(written)
            assert [s["sequences"] for s in stats["shards"]] == [
                sum(1 for _ in wds.WebDataset(str(shards / s["path"]), shardshuffle=False)) for s in stats["shards"]
            ]
        # Decoding the stream gives the documents back, EOS-separated.
        eos = tok.eos_id
        train = np.concatenate(_read_all(shards, manifest, domain, "train")).tolist()
        first_doc = train[: train.index(eos)]
        train_docs = [d for d in docs if not is_validation(d["id"], 0.1)]
        assert tok.decode(first_doc) == train_docs[0]["text"]
    assert manifest["corrupt_records"]["count"] == 2
    assert manifest["corrupt_records"]["by_reason"] == {"invalid JSON": 2}
    assert manifest["totals"]["train"]["sequences"] == sum(
        manifest["domains"][d]["train"]["sequences"] for d in ("prose", "code")
    )


def test_rerun_is_skipped_and_manifest_is_stable(shards, shard_corpus, words_tokenizer_dir, shard_config):
    before = (shards / "manifest.json").read_text()
    again = write_shards(shard_config(shard_corpus, words_tokenizer_dir, shards))
    assert json.dumps(again, indent=2) == before


def test_process_pool_writes_identical_shards(shards, shard_corpus, words_tokenizer_dir, shard_config, tmp_path):
    write_shards(shard_config(shard_corpus, words_tokenizer_dir, tmp_path, num_proc=2, docs_per_task=7))
    one, two = _manifest(shards), _manifest(tmp_path)
    assert one["domains"] == two["domains"] and one["job_key"] == two["job_key"]
    for domain in ("prose", "code"):
        for shard in one["domains"][domain]["train"]["shards"] + one["domains"][domain]["val"]["shards"]:
            assert (shards / shard["path"]).read_bytes() == (tmp_path / shard["path"]).read_bytes()


def test_plain_text_and_jsonl_inputs_and_corrupt_bytes(words_tokenizer_dir, shard_config, tmp_path):
    shard_corpus = tmp_path / "plain"
    (shard_corpus / "notes").mkdir(parents=True)
    (shard_corpus / "notes" / "a.txt").write_text("alpha beta gamma. " * 5)
    (shard_corpus / "notes" / "b.txt").write_text("delta epsilon. " * 7)
    (shard_corpus / "loose.jsonl").write_bytes(
        b'{"text": "zeta eta theta"}\n' + b'{"text": "bad \xff byte"}\n' + b'{"id": 3}\n' + b'{"text": ""}\n'
    )
    lines = "".join(json.dumps({"id": str(i), "text": f"iota kappa {i}"}) + "\n" for i in range(300))
    truncated = gzip.compress(lines.encode())[:-40]  # a copy cut short: the lines before the cut count
    (shard_corpus / "notes" / "cut.jsonl.gz").write_bytes(truncated)
    # Curation writes the records it set aside beside the domains; they are never trained on.
    (shard_corpus / "rejects").mkdir()
    (shard_corpus / "rejects" / "crawl.jsonl").write_text(json.dumps({"id": "x", "text": "spam", "reason": "r"}) + "\n")
    manifest = write_shards(
        shard_config(shard_corpus, words_tokenizer_dir, tmp_path / "out", seq_len=4, val_fraction=0.0)
    )
    assert sorted(manifest["domains"]) == ["notes", "text"]  # top-level files form `default_domain`; no rejects
    assert manifest["domains"]["text"]["train"]["documents"] == 1
    assert manifest["empty_documents"] == 1
    assert manifest["corrupt_records"]["by_reason"] == {
        "invalid UTF-8": 1,
        "no string 'text' field": 1,
        "unreadable file (EOFError)": 1,
    }
    tok = Tokenizer.load(words_tokenizer_dir)
    written = np.concatenate(_read_all(tmp_path / "out", manifest, "notes", "train")).tolist()
    whole = tok.encode("alpha beta gamma. " * 5, add_eos=True) + tok.encode("delta epsilon. " * 7, add_eos=True)
    assert written[: len(whole)] == whole  # files in name order, the truncated gzip's lines after them
    assert manifest["domains"]["notes"]["train"]["documents"] > 2


def test_shards_from_another_tokenizer_are_refused(shards, tmp_path):
    other = tmp_path / "other_tok"
    train_tokenizer(["completely different text " * 20], vocab_size=300, show_progress=False).save(other)
    dm = TokenShardDataModule(str(shards), str(other), batch_size=2)
    with pytest.raises(TokenizerMismatchError) as err:
        dm.setup()
    assert _manifest(shards)["tokenizer_fingerprint"] in str(err.value)
    assert Tokenizer.load(other).fingerprint in str(err.value)


def _datamodule(shards: Path, words_tokenizer_dir: Path, **kw) -> TokenShardDataModule:
    kw = {"weights": {"prose": 1, "code": 1}, "batch_size": 4, "seq_len": SEQ, **kw}
    return TokenShardDataModule(str(shards), str(words_tokenizer_dir), **kw)


def test_domain_sampling_follows_the_weights(shards, words_tokenizer_dir):
    dm = _datamodule(shards, words_tokenizer_dir, weights={"prose": 3, "code": 1}, batch_size=8)
    dm.setup()
    stream = MixedTokenStream(dm.root, dm.manifest, dm.weights, 8, seed=0)
    choices = stream.domain_choices(0, 40_000)
    share_prose = float(np.mean(choices == stream.domains.index("prose")))
    assert abs(share_prose - 0.75) < 0.01  # 4.6 standard errors
    # Any range is reproducible on its own (resume does not replay from zero).
    assert np.array_equal(stream.domain_choices(70_000, 70_100), stream.domain_choices(0, 140_000)[70_000:70_100])
    # The batches themselves: which domain each row came from, recovered from the shards' contents.
    code_rows = {r.tobytes() for r in _read_all(shards, dm.manifest, "code", "train")}
    it = iter(dm.train_dataloader())
    rows = torch.cat([next(it)["input_ids"] for _ in range(50)])
    from_code = [r.numpy().astype(dm.manifest["format"]["dtype"]).tobytes() in code_rows for r in rows]
    expected = stream.domain_choices(0, 400) == stream.domains.index("code")
    assert from_code == expected.tolist()


def test_each_epoch_visits_every_sequence_once_in_a_new_order(shards, words_tokenizer_dir):
    manifest = _manifest(shards)
    shard_list = manifest["domains"]["prose"]["train"]["shards"]
    stream = DomainStream(shards, shard_list, manifest["format"]["dtype"], seed=0, domain="prose")
    n = stream.size
    epochs = [[stream.get(p).tobytes() for p in range(e * n, (e + 1) * n)] for e in range(2)]
    everything = sorted(r.tobytes() for r in _read_all(shards, manifest, "prose", "train"))
    assert sorted(epochs[0]) == everything and sorted(epochs[1]) == everything
    assert epochs[0] != epochs[1]
    fresh = DomainStream(shards, shard_list, manifest["format"]["dtype"], seed=0, domain="prose")
    assert fresh.get(n + 5).tobytes() == epochs[1][5]  # random access equals sequential reading


def _batches(loader, n: int) -> list[torch.Tensor]:
    it = iter(loader)
    return [next(it)["input_ids"] for _ in range(n)]


def test_resume_continues_exactly_and_workers_keep_the_order(shards, words_tokenizer_dir):
    full = _batches(_datamodule(shards, words_tokenizer_dir).train_dataloader(), 30)  # > 1 epoch of code
    first = _datamodule(shards, words_tokenizer_dir)
    first.trainer = SimpleNamespace(global_step=11, accumulate_grad_batches=1, global_rank=0, world_size=1)
    state = first.state_dict()
    resumed = _datamodule(shards, words_tokenizer_dir)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(full[11:], _batches(resumed.train_dataloader(), 19), strict=True))
    workers = _datamodule(shards, words_tokenizer_dir, num_workers=2)
    assert all(torch.equal(a, b) for a, b in zip(full, _batches(workers.train_dataloader(), 12)))


def test_a_restarted_iteration_continues_from_the_trained_position(shards, words_tokenizer_dir):
    # Lightning re-iterates the loader each epoch (limit_train_batches): no replay from batch 0.
    full = _batches(_datamodule(shards, words_tokenizer_dir).train_dataloader(), 12)
    dm = _datamodule(shards, words_tokenizer_dir)
    dm.trainer = SimpleNamespace(global_step=0, accumulate_grad_batches=2, global_rank=0, world_size=1)
    loader = dm.train_dataloader()
    assert all(torch.equal(a, b) for a, b in zip(full[:4], _batches(loader, 4)))
    dm.trainer.global_step = 2  # 2 optimizer steps x 2 accumulated batches
    assert all(torch.equal(a, b) for a, b in zip(full[4:], _batches(loader, 8), strict=True))


def test_two_ranks_partition_the_global_batch(shards, words_tokenizer_dir):
    single = _batches(_datamodule(shards, words_tokenizer_dir, batch_size=6).train_dataloader(), 5)
    loaders = []
    for rank in (0, 1):
        dm = _datamodule(shards, words_tokenizer_dir, batch_size=3)
        dm.trainer = SimpleNamespace(global_step=0, accumulate_grad_batches=1, global_rank=rank, world_size=2)
        loaders.append(iter(dm.train_dataloader()))
    for global_batch in single:
        assert torch.equal(torch.cat([next(loaders[0])["input_ids"], next(loaders[1])["input_ids"]]), global_batch)


def test_validation_rows_are_the_held_out_split(shards, words_tokenizer_dir):
    dm = _datamodule(shards, words_tokenizer_dir, val_sequences_per_domain=None)
    dm.setup()
    rows = torch.cat([b["input_ids"] for b in dm.val_dataloader()])
    expected = np.concatenate([np.stack(_read_all(shards, dm.manifest, d, "val")) for d in ("code", "prose")])
    assert torch.equal(rows, torch.from_numpy(expected.astype(np.int64)))


def test_seq_len_mismatch_is_refused(shards, words_tokenizer_dir):
    with pytest.raises(ValueError, match="seq_len=32"):
        _datamodule(shards, words_tokenizer_dir, seq_len=32).setup()
