"""Heuristic filters: compiled n-gram statistics against plain-loop references; rule outcomes."""

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
    c4_filter,
    fineweb_filter,
    gopher_quality,
    tokens,
)
from data_pipeline.ngram_kernels import dup_ngram_chars, top_ngram_chars
from lmforge.formats.corpus import Document
from tests.support.pipeline_docs import prose_doc


def ref_top(words: list[str], n: int) -> int:
    """Characters of the most frequent n-gram, words joined by a space, times its count."""
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    if not grams:
        return 0
    gram, count = grams.most_common(1)[0]
    return len(" ".join(gram)) * count


def ref_dup(words: list[str], n: int) -> int:
    """Left-to-right scan: a repeat of a visited n-gram counts its characters and jumps n ahead."""
    seen, total, i = set(), 0, 0
    while i < len(words) - n + 1:
        gram = tuple(words[i : i + n])
        if gram in seen:
            total += sum(map(len, gram))
            i += n
        else:
            seen.add(gram)
            i += 1
    return total


@pytest.mark.parametrize("seed", range(8))
def test_ngram_statistics_match_plain_loops(seed):
    rng = random.Random(seed)
    vocab = ["a", "bb", "ccc", "dddd", "eeeee", "ff"][: rng.randint(2, 6)]
    words = [rng.choice(vocab) for _ in range(rng.randint(1, 300))]
    ids = {w: i for i, w in enumerate(sorted(set(words)))}
    word_ids = np.array([ids[w] for w in words], dtype=np.uint64)
    lengths = np.array([len(w) for w in words], dtype=np.int64)
    top = top_ngram_chars(word_ids, lengths, np.array([2, 3, 4]))
    assert top.tolist() == [ref_top(words, n) for n in (2, 3, 4)]
    dup = dup_ngram_chars(word_ids, lengths, np.arange(5, 11))
    assert dup.tolist() == [ref_dup(words, n) for n in range(5, 11)]


def test_tokens_split_like_spacy_english():
    text = "I can't go (see: foo.bar), e.g. to U.S. docs... Smith's end.Next x-y 3.5% C++ --help"
    assert tokens(text) == [
        "I", "ca", "n't", "go", "(", "see", ":", "foo.bar", ")", ",", "e.g.", "to", "U.S.", "docs", "...",
        "Smith", "'s", "end", ".", "Next", "x", "-", "y", "3.5", "%", "C++", "--help",
    ]  # fmt: skip


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


def test_documented_differences_from_datatrove():
    """Defaults that knowingly differ (docs/curation.md): punctuation tokens are not words for the
    alpha-word ratio, and lines with no letter or digit are not compared as duplicates."""
    rng = random.Random(1)
    prose = prose_doc(rng, 12)
    sentences = "\n".join(s.strip() + "." for s in prose.replace("\n", " ").split(".") if s.strip())
    text = sentences + "\n" + "\n".join(["}", "});"] * 10)
    punctuated = " ".join(f"{w} ( ) ;" if i % 3 == 0 else w for i, w in enumerate(prose.split()))
    parity = GopherQualityConfig(alpha_ratio_over="tokens")
    assert gopher_quality(punctuated, parity) == "gopher_alpha_words"
    assert gopher_quality(punctuated, GopherQualityConfig()) is None
    assert fineweb_filter(text, FineWebConfig(count_symbol_lines=True)) == "fineweb_dup_line_chars"
    assert fineweb_filter(text, FineWebConfig()) != "fineweb_dup_line_chars"


def api_reference(rng: random.Random) -> str:
    """An API reference page: every function's entry repeats the same parameter and error sentences."""
    entries = []
    for name in ("open", "close", "read", "write", "seek", "stat", "sync", "truncate"):
        entries += [
            f"The fs.{name}() method is described here. {prose_doc(rng, 3).replace(chr(10), ' ')}",
            "If options is a string, then it specifies the encoding of the file.",
            "A TypeError is thrown if path is not a string or a buffer.",
        ]
    return "\n".join(entries)


def test_documentation_profile_exempts_only_the_named_repetition_rules():
    """Pages under a documentation URL skip the within-page repetition rules named in
    heuristics.documentation.exempt (docs/curation.md); every other rule still applies to them."""
    page = api_reference(random.Random(2))
    web = Document(id="a", text=page, source="", domain="web", url="https://example.com/blog/fs")
    docs = Document(id="b", text=page, source="", domain="web", url="https://docs.example.org/api/fs.html")
    local = Document(id="c", text=page, source="", domain="web", url="file:///usr/share/doc/node/fs.html")
    default = HeuristicFilter(HeuristicsConfig())
    removed = default(web)  # a repetition rule, as on any web page
    assert removed == "gopher_dup_lines"
    assert "heuristics_profile" not in web.metadata
    assert default(local) == removed  # a local path says nothing about the page
    assert default(docs) is None and docs.metadata["heuristics_profile"] == "documentation"
    # The profile is not a way around the quality rules: a short page under the same URL still goes.
    assert default(Document(id="d", text="Home\nDocs", source="", domain="web", url=docs.url)) == "gopher_word_count"
    # Off with an empty pattern (FineWeb's behaviour on every page); unknown rule names fail at start.
    off = HeuristicsConfig()
    off.documentation.pattern = ""
    docs2 = Document(id="e", text=page, source="", domain="web", url=docs.url)
    assert HeuristicFilter(off)(docs2) == removed
    narrow = HeuristicsConfig()
    narrow.documentation.exempt = ["fineweb_dup_line_chars"]
    docs3 = Document(id="f", text=page, source="", domain="web", url=docs.url)
    assert HeuristicFilter(narrow)(docs3) == "gopher_dup_lines"  # not exempted: still removes it
    typo = HeuristicsConfig()
    typo.documentation.exempt = ["gopher_dup_5grams"]
    with pytest.raises(ValueError, match="gopher_dup_5grams"):
        HeuristicFilter(typo)
