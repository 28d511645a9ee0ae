"""Normalised text is accepted by CLD2 for every Unicode code point, and clean text is untouched."""

from __future__ import annotations

import pycld2
import pytest

from data_pipeline.extract import ExtractConfig, HtmlExtractor, extract_text
from data_pipeline.normalize import normalize_text
from lmforge.formats.corpus import Document


def cld2_accepts(text: str) -> bool:
    try:
        pycld2.detect(text, bestEffort=True)
    except pycld2.error:
        return False
    return True


def test_every_code_point_is_made_acceptable_to_cld2():
    rejected_raw = 0
    for start in range(0, 0x110000, 1024):  # 1,088 blocks of 1,024 code points, surrogates included
        raw = " ".join(chr(cp) for cp in range(start, start + 1024))
        clean, changed = normalize_text(raw)
        assert cld2_accepts(clean), hex(start)
        if changed == 0:
            assert clean is raw  # clean input is returned as is: no copy on the common path
        elif not 0xD800 <= start < 0xE000:
            rejected_raw += not cld2_accepts(raw)
    assert rejected_raw == 18  # the blocks with C0/C1, U+FDD0-FDEF and the 17 planes' last two


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("say \x93hello\x94 \x96 bye\x85", "say \u201chello\u201d \u2013 bye\u2026"),  # cp1252 read as Latin-1
        ("page one\x0cpage two\x0bline", "page one\npage two\nline"),
        ("nul\x00 esc\x1b del\x7f non\ufffe char\U0010ffff", "nul esc del non char"),
        ("lone \ud800 surrogate", "lone \ufffd surrogate"),
        ("undefined \x81\x8d\x8f\x90\x9d gone", "undefined  gone"),
        (
            "tab\tnewline\ncr\r kept, caf\u00e9 \u4e2d\u6587 \U0001f600",
            "tab\tnewline\ncr\r kept, caf\u00e9 \u4e2d\u6587 \U0001f600",
        ),
    ],
)
def test_mapping(raw, expected):
    assert normalize_text(raw)[0] == expected


def test_extracted_text_is_normalised_too():
    """resiliparse decodes numeric entities into the very code points CLD2 rejects."""
    html = "<html><body><main><p>alpha &#x85; beta &#0; gamma &#xFFFE; delta &#x93;q&#x94; &#1; end</p></main></body></html>"
    assert not cld2_accepts(extract_text(html))
    doc = Document(id="e", text="", html=html, source="test", domain="web")
    assert HtmlExtractor(ExtractConfig())(doc) is None
    assert cld2_accepts(doc.text) and "\u201cq\u201d" in doc.text
