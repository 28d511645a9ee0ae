"""Text normalisation applied to every record before a C library (resiliparse, pycld2) sees it.

CLD2 refuses any string holding a code point outside "interchange-valid" Unicode and raises
``input contains invalid UTF-8`` for the whole page: C0 controls other than tab, newline, form
feed and carriage return, DEL, the C1 range U+0080-U+009F, and the noncharacters (U+FDD0-U+FDEF
and the last two code points of every plane). Lone surrogates (from ``surrogateescape`` or broken
JSON escapes) cannot even be encoded. This module maps all of them to valid text:

- C1 controls in crawled text are almost always Windows-1252 bytes decoded as Latin-1 (curly
  quotes, dashes, the ellipsis); they become the cp1252 character, which is also what ftfy's
  ``fix_c1_controls`` does. The five bytes cp1252 leaves undefined are removed;
- vertical tab and form feed become a newline (line and page breaks in man pages and licences);
- other C0 controls, DEL and noncharacters are removed; lone surrogates become U+FFFD.
"""

from __future__ import annotations

import re

# BMP code points to fix, plus every astral one: a class listing the 32 astral noncharacters one
# by one scans ~15x slower than a range, so astral matches are sorted out in the replacement.
SCAN_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe-\U0010ffff]")


def _replacement(ch: str) -> str:
    cp = ord(ch)
    if 0x80 <= cp <= 0x9F:
        try:
            return bytes([cp]).decode("cp1252")
        except UnicodeDecodeError:  # 0x81, 0x8D, 0x8F, 0x90, 0x9D: undefined in cp1252
            return ""
    if ch in "\x0b\x0c":
        return "\n"
    if 0xD800 <= cp <= 0xDFFF:
        return "\ufffd"
    return ""


_INVALID_CODE_POINTS = [
    *range(0x00, 0x09),
    0x0B,
    0x0C,
    *range(0x0E, 0x20),
    *range(0x7F, 0xA0),
    *range(0xD800, 0xE000),
    *range(0xFDD0, 0xFDF0),
    *(plane * 0x10000 + low for plane in range(17) for low in (0xFFFE, 0xFFFF)),
]
_TABLE = {chr(cp): _replacement(chr(cp)) for cp in _INVALID_CODE_POINTS}


def normalize_text(text: str) -> tuple[str, int]:
    """Return (valid text, number of code points changed); clean text is returned as is."""
    if not SCAN_RE.search(text):
        return text, 0
    changed = 0

    def repl(m: re.Match) -> str:
        nonlocal changed
        ch = m.group(0)
        fixed = _TABLE.get(ch, ch)  # astral characters other than noncharacters stay
        changed += fixed != ch
        return fixed

    fixed = SCAN_RE.sub(repl, text)
    return (fixed, changed) if changed else (text, 0)
