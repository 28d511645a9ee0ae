"""Heuristic filters: vectorised n-gram statistics against plain-loop references; rule outcomes."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from data_pipeline.heuristics import (
    C4Config,
    FineWebConfig,
    GopherQualityConfig,
    HeuristicFilter,
    HeuristicsConfig,
    _dup_ngram_char_frac,
    _ngram_hashes,
    _top_ngram_char_frac,
    c4_filter,
    fineweb_filter,
    gopher_quality,
)
from lmforge.formats.corpus import Document
from tests.support.pipeline_docs import prose_doc


def ref_top(words: list[str], n: int) -> float:
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    if not grams:
        return 0.0
    gram, count = grams.most_common(1)[0]
    return 0.0 if count < 2 else sum(map(len, gram)) * count / sum(map(len, words))


def ref_dup(words: list[str], n: int) -> float:
    seen, covered = set(), [False] * len(words)
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        if gram in seen:
            covered[i : i + n] = [True] * n
        seen.add(gram)
    return sum(len(w) for w, c in zip(words, covered) if c) / sum(map(len, words))


@pytest.mark.parametrize("seed", range(5))
def test_ngram_statistics_match_plain_loops(seed):
    rng = random.Random(seed)
    vocab = ["a", "bb", "ccc", "dddd", "eeeee", "ff"][: rng.randint(2, 6)]
    words = [rng.choice(vocab) for _ in range(rng.randint(5, 300))]
    ids = {w: i for i, w in enumerate(sorted(set(words)))}
    word_ids = np.array([ids[w] for w in words], dtype=np.uint64)
    lengths = np.array([len(w) for w in words])
    grams = _ngram_hashes(word_ids, 10)
    for n in (2, 3, 4):
        assert _top_ngram_char_frac(grams, lengths, n) == pytest.approx(ref_top(words, n))
    for n in range(5, 11):
        assert _dup_ngram_char_frac(grams, lengths, n) == pytest.approx(ref_dup(words, n))


def doc(text: str) -> Document:
    return Document(id="d", text=text, source="t", domain="web")


def test_rules_fire_on_the_documents_they_target():
    rng = random.Random(0)
    good = prose_doc(rng, 20)
    assert HeuristicFilter(HeuristicsConfig())(doc(good)) is None
    assert gopher_quality("too short to count", GopherQualityConfig()) == "gopher_word_count"
    no_stop_words = " ".join(["green", "apples", "grow", "quickly", "near", "rivers"] * 12)
    assert gopher_quality(no_stop_words, GopherQualityConfig()) == "gopher_stop_words"
    assert HeuristicFilter(HeuristicsConfig())(doc("\n".join([good.split(".")[0] + "."] * 40))) == "gopher_dup_lines"
    assert c4_filter(doc("Lorem ipsum dolor sit amet. " * 20), C4Config()) == "c4_lorem_ipsum"
    menu = "\n".join(["Home", "About us", "Contact", "Blog"] * 3 + [good])
    d = doc(menu)
    assert c4_filter(d, C4Config()) is None and "About us" not in d.text  # C4 drops unpunctuated lines
    assert (
        fineweb_filter("\n".join(["Home", "Shop", "Cart", "Help", "A longer line that ends well."]), FineWebConfig())
        == "fineweb_short_line_ratio"
    )
