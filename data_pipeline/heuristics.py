"""Rule-based quality filters with the published default thresholds.

- Gopher quality + repetition: Rae et al. 2021, "Scaling Language Models: Methods,
  Analysis & Insights from Training Gopher", appendix A.1.1 (MassiveWeb filters).
- C4: Raffel et al. 2020, "Exploring the Limits of Transfer Learning ..." section 2.2.
- FineWeb: Penedo et al. 2024, "The FineWeb Datasets", section 3.3 (custom filters).

Each filter returns the first failed rule as the removal reason (``gopher_word_count``,
``c4_lorem_ipsum``, ...), so the funnel can rank reasons.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from data_pipeline.records import Document

WORD_RE = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]+")
ALPHA_RE = re.compile(r"[^\W\d_]")
TERMINAL_PUNCT = (".", "!", "?", '"', "'", "”", "’", ":", ";")
BULLETS = ("•", "*", "-", "–", "‣", "◦", "·", "●", "▪")
GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
                  "use cookies")


@dataclass
class GopherQualityConfig:
    enabled: bool = True
    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    min_alpha_words_ratio: float = 0.8
    min_stop_words: int = 2


@dataclass
class GopherRepetitionConfig:
    enabled: bool = True
    max_dup_line_frac: float = 0.30
    max_dup_para_frac: float = 0.30
    max_dup_line_char_frac: float = 0.20
    max_dup_para_char_frac: float = 0.20
    # most frequent n-gram's share of characters, n = 2, 3, 4
    top_ngram_char_frac: dict[str, float] = field(default_factory=lambda: {"2": 0.20, "3": 0.18, "4": 0.16})
    # characters covered by n-grams that occur more than once, n = 5..10
    dup_ngram_char_frac: dict[str, float] = field(default_factory=lambda: {
        "5": 0.15, "6": 0.14, "7": 0.13, "8": 0.12, "9": 0.11, "10": 0.10})


@dataclass
class C4Config:
    enabled: bool = True
    min_words_per_line: int = 3
    min_sentences: int = 5
    max_word_length: int = 1000
    drop_lines_without_terminal_punct: bool = True
    filter_lorem_ipsum: bool = True
    filter_javascript_lines: bool = True
    # Published C4 drops any page containing "{": that removes every programming book and
    # docs page with a code sample, so it is off by default (true gives C4 parity).
    filter_curly_bracket: bool = False
    filter_policy_lines: bool = True


@dataclass
class FineWebConfig:
    enabled: bool = True
    min_line_punct_ratio: float = 0.12
    max_short_line_ratio: float = 0.67
    short_line_chars: int = 30
    max_dup_line_char_ratio: float = 0.01
    max_newline_word_ratio: float = 0.3


@dataclass
class HeuristicsConfig:
    domains: list[str] | None = field(default_factory=lambda: ["web", "prose"])
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    c4: C4Config = field(default_factory=C4Config)
    fineweb: FineWebConfig = field(default_factory=FineWebConfig)


def words_of(text: str) -> list[str]:
    return [w for w in WORD_RE.findall(text) if ALPHA_RE.search(w) or w.isdigit()]


def gopher_quality(text: str, cfg: GopherQualityConfig) -> str | None:
    words = words_of(text)
    n = len(words)
    if n < cfg.min_words or n > cfg.max_words:
        return "gopher_word_count"
    mean_len = sum(map(len, words)) / n
    if not cfg.min_mean_word_length <= mean_len <= cfg.max_mean_word_length:
        return "gopher_mean_word_length"
    symbols = text.count("#") + text.count("...") + text.count("…")
    if symbols / n > cfg.max_symbol_word_ratio:
        return "gopher_symbol_ratio"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if lines:
        if sum(ln.lstrip().startswith(BULLETS) for ln in lines) / len(lines) > cfg.max_bullet_lines_ratio:
            return "gopher_bullet_lines"
        if sum(ln.rstrip().endswith(("...", "…")) for ln in lines) / len(lines) > cfg.max_ellipsis_lines_ratio:
            return "gopher_ellipsis_lines"
    if sum(bool(ALPHA_RE.search(w)) for w in words) / n < cfg.min_alpha_words_ratio:
        return "gopher_alpha_words"
    lowered = {w.lower() for w in words}
    if sum(s in lowered for s in GOPHER_STOP_WORDS) < cfg.min_stop_words:
        return "gopher_stop_words"
    return None


def _dup_fraction(items: list[str]) -> tuple[float, float]:
    """Share of items, and of their characters, that repeat an earlier item."""
    if not items:
        return 0.0, 0.0
    seen: set[str] = set()
    dup_items = dup_chars = 0
    for item in items:
        if item in seen:
            dup_items += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    total_chars = sum(map(len, items)) or 1
    return dup_items / len(items), dup_chars / total_chars


def _top_ngram_char_frac(words: list[str], n: int) -> float:
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    if not grams:
        return 0.0
    gram, count = grams.most_common(1)[0]
    if count < 2:
        return 0.0
    return sum(map(len, gram)) * count / (sum(map(len, words)) or 1)


def _dup_ngram_char_frac(words: list[str], n: int) -> float:
    """Characters of words covered by any n-gram seen before (overlaps counted once)."""
    seen: set[tuple[str, ...]] = set()
    covered = [False] * len(words)
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        if gram in seen:
            for j in range(i, i + n):
                covered[j] = True
        else:
            seen.add(gram)
    total = sum(map(len, words)) or 1
    return sum(len(w) for w, c in zip(words, covered) if c) / total


def gopher_repetition(text: str, cfg: GopherRepetitionConfig) -> str | None:
    paragraphs = [p.strip() for p in re.split(r"\n{2,}", text) if p.strip()]
    para_frac, para_char_frac = _dup_fraction(paragraphs)
    if para_frac > cfg.max_dup_para_frac:
        return "gopher_dup_paragraphs"
    if para_char_frac > cfg.max_dup_para_char_frac:
        return "gopher_dup_paragraph_chars"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line_frac, line_char_frac = _dup_fraction(lines)
    if line_frac > cfg.max_dup_line_frac:
        return "gopher_dup_lines"
    if line_char_frac > cfg.max_dup_line_char_frac:
        return "gopher_dup_line_chars"
    words = [w.lower() for w in words_of(text)]
    for n, limit in sorted(cfg.top_ngram_char_frac.items(), key=lambda kv: int(kv[0])):
        if _top_ngram_char_frac(words, int(n)) > limit:
            return f"gopher_top_{n}gram"
    for n, limit in sorted(cfg.dup_ngram_char_frac.items(), key=lambda kv: int(kv[0])):
        if _dup_ngram_char_frac(words, int(n)) > limit:
            return f"gopher_dup_{n}gram"
    return None


def c4_filter(doc: Document, cfg: C4Config) -> str | None:
    """C4 is a line filter: it rewrites ``doc.text`` and drops the page if too little is left."""
    text = doc.text
    lowered = text.lower()
    if cfg.filter_lorem_ipsum and "lorem ipsum" in lowered:
        return "c4_lorem_ipsum"
    if cfg.filter_curly_bracket and "{" in text:
        return "c4_curly_bracket"
    kept: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            if kept and kept[-1] != "":
                kept.append("")  # keep paragraph breaks
            continue
        words = stripped.split()
        if any(len(w) > cfg.max_word_length for w in words):
            return "c4_long_word"
        if cfg.drop_lines_without_terminal_punct and not stripped.endswith(TERMINAL_PUNCT):
            continue
        if len(words) < cfg.min_words_per_line:
            continue
        line_lower = stripped.lower()
        if cfg.filter_javascript_lines and "javascript" in line_lower:
            continue
        if cfg.filter_policy_lines and any(p in line_lower for p in POLICY_PHRASES):
            continue
        kept.append(stripped)
    new_text = "\n".join(kept).strip()
    if len(re.findall(r"[.!?]+(?:\s|$)", new_text)) < cfg.min_sentences:
        return "c4_too_few_sentences"
    doc.text = new_text
    return None


def fineweb_filter(text: str, cfg: FineWebConfig) -> str | None:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return "fineweb_empty"
    if sum(ln.endswith(TERMINAL_PUNCT) for ln in lines) / len(lines) < cfg.min_line_punct_ratio:
        return "fineweb_line_punct_ratio"
    if sum(len(ln) <= cfg.short_line_chars for ln in lines) / len(lines) > cfg.max_short_line_ratio:
        return "fineweb_short_line_ratio"
    _, dup_chars = _dup_fraction(lines)
    if dup_chars > cfg.max_dup_line_char_ratio:
        return "fineweb_dup_line_chars"
    words = text.split()
    if words and text.count("\n") / len(words) > cfg.max_newline_word_ratio:
        return "fineweb_newline_ratio"
    return None


class HeuristicFilter:
    """Gopher repetition -> Gopher quality -> C4 -> FineWeb, in FineWeb's order."""

    name = "heuristics"

    def __init__(self, cfg: HeuristicsConfig) -> None:
        self.cfg = cfg

    def __call__(self, doc: Document) -> str | None:
        cfg = self.cfg
        if cfg.domains is not None and doc.domain not in cfg.domains:
            return None
        if cfg.gopher_repetition.enabled and (why := gopher_repetition(doc.text, cfg.gopher_repetition)):
            return why
        if cfg.gopher_quality.enabled and (why := gopher_quality(doc.text, cfg.gopher_quality)):
            return why
        if cfg.c4.enabled and (why := c4_filter(doc, cfg.c4)):
            return why
        if cfg.fineweb.enabled and (why := fineweb_filter(doc.text, cfg.fineweb)):
            return why
        return None
