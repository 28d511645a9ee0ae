"""MinHash against brute-force Jaccard, LSH clustering, and cross-shard near-dup removal."""

from __future__ import annotations

import random

import numpy as np

from data_pipeline.dedup import (
    DedupConfig,
    estimated_jaccard,
    find_duplicates,
    normalize,
    normalized_words,
    shingles,
    signatures,
)
from data_pipeline.pipeline import run_pipeline
from tests.support.pipeline_docs import fast_config, prose_doc, read_corpus, write_jsonl


def brute_force_jaccard(a: str, b: str, n: int) -> float:
    sa, sb = set(shingles(normalize(a), n)), set(shingles(normalize(b), n))
    return len(sa & sb) / len(sa | sb)


def test_minhash_estimate_matches_bruteforce_jaccard():
    rng = random.Random(7)
    vocab = [f"w{i}" for i in range(400)]
    cfg = DedupConfig()
    errors = []
    for _ in range(60):
        base = [rng.choice(vocab) for _ in range(300)]
        other = list(base)
        for i in rng.sample(range(300), k=rng.randint(0, 120)):  # sweep similarity 0..1
            other[i] = rng.choice(vocab)
        a, b = " ".join(base), " ".join(other)
        _, sigs = signatures([a, b], cfg)
        errors.append(estimated_jaccard(sigs[0], sigs[1]) - brute_force_jaccard(a, b, cfg.ngram))
    errors = np.abs(errors)
    # 112 permutations: std of the estimate <= sqrt(0.25/112) ~ 0.047.
    assert errors.mean() < 0.04 and errors.max() < 0.16


def test_lsh_clusters_and_keeps_first_in_input_order():
    rng = random.Random(3)
    docs = [prose_doc(rng, 30) for _ in range(30)]
    words = docs[4].split(" ")
    for i in (5, 40, 80):
        words[i] = "changed"
    texts = docs + [" ".join(words), docs[9], docs[9].upper()]
    hashes, sigs = signatures(texts, DedupConfig())
    result = find_duplicates(hashes, sigs, DedupConfig())
    assert result.drop == {30: "near_duplicate", 31: "exact_duplicate", 32: "exact_duplicate"}


def test_planted_near_duplicates_removed_across_shards(tmp_path):
    rng = random.Random(11)
    originals = [prose_doc(rng, 30) for _ in range(40)]
    shard_rows = [[], [], []]
    for i, text in enumerate(originals):
        shard_rows[i % 3].append({"id": f"orig-{i}", "text": text, "domain": "web"})
    planted = {}
    for i in range(0, 40, 4):  # near-copy of doc i placed in a different shard
        words = originals[i].split(" ")
        for j in rng.sample(range(len(words)), k=3):
            words[j] = rng.choice(["new", "revised", "updated"])
        planted[f"near-{i}"] = f"orig-{i}"
        shard_rows[(i + 1) % 3].append({"id": f"near-{i}", "text": " ".join(words), "domain": "web"})
    for k, rows in enumerate(shard_rows):
        write_jsonl(tmp_path / f"in/shard{k}.jsonl", rows) if (tmp_path / "in").exists() else (
            (tmp_path / "in").mkdir(),
            write_jsonl(tmp_path / f"in/shard{k}.jsonl", rows),
        )
    out = run_pipeline(fast_config(tmp_path / "in", tmp_path / "out"))
    ids = [r["id"] for r in read_corpus(out)]
    assert len(ids) == len(set(ids))
    # The original sits in an earlier shard or row for some pairs and a later one for others;
    # either way exactly one of each pair survives and every distinct document survives.
    for near, orig in planted.items():
        assert (near in ids) != (orig in ids), (near, orig)
    distinct = {f"orig-{i}" for i in range(40)} - set(planted.values())
    assert distinct <= set(ids)


def test_vectorised_word_hashes_follow_normalized_words():
    """The numpy tokeniser splits exactly where ``normalized_words`` does (ASCII and not), and
    equal words hash equal across documents."""
    from data_pipeline.dedup import word_hashes

    texts = [
        "Hello, WORLD! It's a_b 3.5 x--y",
        "hello world it s a_b 3 5 x y",
        "Ünïcödé café – naïve… «quoted» ﬁne Straße",
        "",
        "   ",
        "unicode CAFÉ naïve",
        "İstanbul emoji 😀emoji x\u00adsoft 𝐁old “quote”",  # combining dot, astral symbol and letter, soft hyphen
    ]
    flat, offsets = word_hashes(texts)
    seen: dict[str, int] = {}
    for i, text in enumerate(texts):
        words = normalized_words(text)
        got = flat[offsets[i] : offsets[i + 1]].tolist()
        assert len(got) == len(words), text
        for w, h in zip(words, got):
            assert seen.setdefault(w, h) == h, w
    assert len(set(seen.values())) == len(seen)
    hashes, _ = signatures(texts, DedupConfig())
    assert hashes[0] == hashes[1] and hashes[3] == hashes[4] and hashes[0] != hashes[2]


def test_signatures_do_not_depend_on_batching(monkeypatch):
    """Texts are encoded and hashed in batches of bounded size; the split must not change a row."""
    import data_pipeline.dedup as dedup

    rng = random.Random(5)
    texts = [prose_doc(rng, rng.randint(0, 12)) for _ in range(40)] + ["", "Ünïcödé café", "a b c d e f"]
    whole = signatures(texts, DedupConfig())
    monkeypatch.setattr(dedup, "_BATCH_CHARS", 500)
    assert len(list(dedup._batches(texts))) > 5
    batched = signatures(texts, DedupConfig())
    assert np.array_equal(whole[0], batched[0]) and np.array_equal(whole[1], batched[1])
