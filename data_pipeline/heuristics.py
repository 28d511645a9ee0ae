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
from dataclasses import dataclass, field

import numpy as np
from rensa import RMinHash

from lmforge.formats.corpus import Document

WORD_RE = re.compile(r"\w+(?:['’]\w+)*")
ALPHA_RE = re.compile(r"[^\W\d_]")
TERMINAL_PUNCT = (".", "!", "?", '"', "'", "”", "’", ":", ";")
BULLETS = ("•", "*", "-", "–", "‣", "◦", "·", "●", "▪")
GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


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
    dup_ngram_char_frac: dict[str, float] = field(
        default_factory=lambda: {"5": 0.15, "6": 0.14, "7": 0.13, "8": 0.12, "9": 0.11, "10": 0.10}
    )


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
    """Word tokens (letters/digits, inner apostrophes); punctuation is not a word."""
    return WORD_RE.findall(text)


def gopher_quality(text: str, cfg: GopherQualityConfig, words: list[str] | None = None) -> str | None:
    words = words_of(text) if words is None else words
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
    non_alpha = sum(1 for w in words if not w.isalpha() and not ALPHA_RE.search(w))  # isalpha: fast path
    if 1 - non_alpha / n < cfg.min_alpha_words_ratio:
        return "gopher_alpha_words"
    lowered = set(words) if words[0].islower() or words[0].isdigit() else {w.lower() for w in words}
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


def _ngram_hashes(word_ids: np.ndarray, max_n: int) -> dict[int, np.ndarray]:
    """Polynomial hashes of every n-gram window for n = 1..max_n, each built from the (n-1)-grams.

    uint64 arithmetic wraps, which is fine: only equality of hashes is used.
    """
    hashes = {1: word_ids}
    for n in range(2, max_n + 1):
        prev = hashes[n - 1]
        if len(prev) < 2:
            break
        hashes[n] = prev[:-1] * np.uint64(1_000_003) + word_ids[n - 1 :]
    return hashes


def _sorted_rows(grams: dict[int, np.ndarray], ns: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack the n-gram hash arrays of several n as rows and sort each row (stable).

    Returns (order, new_group, valid): per-call numpy overhead, not arithmetic, dominates on
    page-sized inputs, so every n is handled in one 2-D call. Padding cells get distinct
    values from 2^64-1 down, so they never group with anything.
    """
    width = max(len(grams[n]) for n in ns)
    matrix = np.empty((len(ns), width), dtype=np.uint64)
    lengths = np.array([len(grams[n]) for n in ns])
    for row, n in enumerate(ns):
        matrix[row, : lengths[row]] = grams[n]
        matrix[row, lengths[row] :] = np.uint64(2**64 - 1) - np.arange(width - lengths[row], dtype=np.uint64)
    order = matrix.argsort(axis=1, kind="stable")
    ordered = np.take_along_axis(matrix, order, axis=1)
    new_group = np.ones_like(ordered, dtype=bool)
    new_group[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    valid = np.arange(width)[None, :] < lengths[:, None]
    return order, new_group, valid


def _top_ngram_char_fracs(grams: dict[int, np.ndarray], lengths: np.ndarray, ns: list[int]) -> dict[int, float]:
    """For each n: characters of the most frequent n-gram times its count, over all word characters.

    Ties go to the n-gram seen first, as ``Counter.most_common`` does.
    """
    ns = [n for n in ns if n in grams]
    out = {n: 0.0 for n in ns}
    if not ns:
        return out
    order, new_group, _ = _sorted_rows(grams, ns)
    width = order.shape[1]
    starts = np.flatnonzero(new_group)  # flat indices of run starts (row-major)
    counts = np.diff(np.append(starts, new_group.size))
    rows = starts // width
    counts = np.minimum(counts, (rows + 1) * width - starts)  # a run never crosses its row's end
    first_col = order.ravel()[starts]  # stable sort: the run's first item is its earliest position
    # Best run per row: highest count, then earliest first occurrence.
    best = np.lexsort((first_col, -counts, rows))
    is_first_of_row = np.concatenate(([True], rows[best][1:] != rows[best][:-1]))
    total = max(int(lengths.sum()), 1)
    cum = np.concatenate(([0], np.cumsum(lengths)))
    for idx in best[is_first_of_row]:
        n = ns[rows[idx]]
        if counts[idx] >= 2:
            col = first_col[idx]
            out[n] = float((cum[col + n] - cum[col]) * counts[idx] / total)
    return out


def _top_ngram_char_frac(grams: dict[int, np.ndarray], lengths: np.ndarray, n: int) -> float:
    return _top_ngram_char_fracs(grams, lengths, [n]).get(n, 0.0)


def _dup_ngram_char_fracs(grams: dict[int, np.ndarray], lengths: np.ndarray, ns: list[int]) -> dict[int, float]:
    """For each n: characters of words covered by an n-gram seen earlier in the text (overlaps once)."""
    ns = [n for n in ns if n in grams]
    out = {n: 0.0 for n in ns}
    if not ns:
        return out
    order, new_group, valid = _sorted_rows(grams, ns)
    first = np.zeros_like(new_group)
    rows, _ = np.nonzero(new_group)
    first[rows, order[new_group]] = True  # stable sort: a group's first sorted item is its earliest
    n_of_row = np.array(ns)
    rows, cols = np.nonzero(~first & valid)
    cover = np.zeros((len(ns), len(lengths) + 1), dtype=np.int32)
    np.add.at(cover, (rows, cols), 1)
    np.add.at(cover, (rows, cols + n_of_row[rows]), -1)
    covered = np.cumsum(cover[:, :-1], axis=1) > 0
    fracs = (covered * lengths[None, :]).sum(axis=1) / max(int(lengths.sum()), 1)
    return {n: float(f) for n, f in zip(ns, fracs)}


def _dup_ngram_char_frac(grams: dict[int, np.ndarray], lengths: np.ndarray, n: int) -> float:
    return _dup_ngram_char_fracs(grams, lengths, [n]).get(n, 0.0)


def gopher_repetition(text: str, cfg: GopherRepetitionConfig, words: list[str] | None = None) -> str | None:
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
    words = words_of(text.lower()) if words is None else words
    if not words:
        return None
    word_ids = np.asarray(RMinHash.hash_token_sets([words])[0], dtype=np.uint64)  # hashed in Rust
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    top, dup = cfg.top_ngram_char_frac, cfg.dup_ngram_char_frac
    grams = _ngram_hashes(word_ids, max(int(n) for n in [*top, *dup, "1"]))
    top_fracs = _top_ngram_char_fracs(grams, lengths, sorted(int(n) for n in top))
    for n, limit in sorted(top.items(), key=lambda kv: int(kv[0])):
        if top_fracs.get(int(n), 0.0) > limit:
            return f"gopher_top_{n}gram"
    fracs = _dup_ngram_char_fracs(grams, lengths, sorted(int(n) for n in dup))
    for n, limit in sorted(dup.items(), key=lambda kv: int(kv[0])):
        if fracs.get(int(n), 0.0) > limit:
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
        if len(stripped) > cfg.max_word_length and max(map(len, words)) > cfg.max_word_length:
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
        self.domains = cfg.domains

    def __call__(self, doc: Document) -> str | None:
        cfg = self.cfg
        words = words_of(doc.text.lower())  # tokenised once for both Gopher filters
        if cfg.gopher_repetition.enabled and (why := gopher_repetition(doc.text, cfg.gopher_repetition, words)):
            return why
        if cfg.gopher_quality.enabled and (why := gopher_quality(doc.text, cfg.gopher_quality, words)):
            return why
        if cfg.c4.enabled and (why := c4_filter(doc, cfg.c4)):
            return why
        if cfg.fineweb.enabled and (why := fineweb_filter(doc.text, cfg.fineweb)):
            return why
        return None
