"""Every Gopher/C4/FineWeb rule against datatrove 0.10.1's implementation, on the same pages.

Pages: real text from this machine (regression set: documentation, READMEs, licences,
man pages in four languages) plus synthetic spam/menu/list pages, truncated so spaCy's
tokenisation on datatrove's side stays within seconds.
"""

from __future__ import annotations

import pytest

pytest.importorskip("datatrove", reason="datatrove comes with the bench extra (pip install -e '.[all]')")

from tests.data_pipeline.agreement import KNOWN_DIFFERENCES, agreement, chain_pair, synthetic_pages  # noqa: E402
from tests.data_pipeline.regression_corpus import regression_records  # noqa: E402


@pytest.fixture(scope="module")
def pages() -> list[str]:
    real = [r["text"][:6000] for r in regression_records(1.0)[::4]]  # every kind, a quarter of each
    return [t for t in real + synthetic_pages(60) if t.split()]


@pytest.fixture(scope="module")
def cache() -> dict:
    return {}


def test_every_rule_agrees_with_datatrove_on_99_percent(pages, cache):
    result = agreement(pages, cache, parity=True)
    low = {
        name: f"{row['agree'] / row['n']:.3f} (pages {row['disagree'][:5]})"
        for name, row in result.items()
        if row["agree"] / row["n"] < 0.99
    }
    assert len(pages) >= 200
    assert not low, f"rules below 99% agreement with datatrove: {low}"
    # The page set exercises both verdicts of the main rules.
    for name in ("gopher_word_count", "gopher_stop_words", "gopher_dup_5gram", "c4", "fineweb_dup_line_chars"):
        assert 0 < result[name]["theirs_removed"] < len(pages), name


def test_known_differences_only_keep_more(pages, cache):
    """lmforge's defaults differ from datatrove on the named rules, and only by keeping pages."""
    result = agreement(pages, cache, parity=False)
    for name, row in result.items():
        if name in KNOWN_DIFFERENCES:
            assert row["ours_removed"] <= row["theirs_removed"], name
        else:
            assert row["agree"] / row["n"] >= 0.99, name


def test_whole_chain_keeps_the_same_pages_and_text(pages):
    mine, theirs = chain_pair(parity=True)
    same = sum(mine(t) == theirs(t) for t in pages)
    assert same / len(pages) >= 0.98
