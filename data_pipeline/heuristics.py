"""Rule-based quality filters with the published default thresholds, calibrated to datatrove.

- Gopher quality + repetition: Rae et al. 2021, "Scaling Language Models: Methods,
  Analysis & Insights from Training Gopher", appendix A.1.1 (MassiveWeb filters).
- C4: Raffel et al. 2020, "Exploring the Limits of Transfer Learning ..." section 2.2.
- FineWeb: Penedo et al. 2024, "The FineWeb Datasets", section 3.3 (custom filters).

The papers leave the unit of each ratio open (words or tokens? characters of the words or
of the page?). The definitions here follow datatrove 0.10.1, the implementation FineWeb was
built with, rule by rule: tokens include punctuation tokens, character fractions are over
the whole page, lines and paragraphs are split the way it splits them.
tests/data_pipeline/test_datatrove_agreement.py feeds the same pages to both and checks
that every rule agrees on >= 99% of them; docs/curation.md lists the measured agreement.
datatrove tokenises with spaCy (~10k words/s); ``tokens`` is one regular expression that
reproduces spaCy's English splitting where it moves the statistics (punctuation, clitics,
numbers, abbreviations, URLs).

Each filter returns the first failed rule as the removal reason (``gopher_word_count``,
``c4_lorem_ipsum``, ...), so the funnel can rank reasons.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
from rensa import RMinHash

from data_pipeline import ngram_kernels
from lmforge.formats.corpus import Document

# spaCy-style tokenisation (what datatrove's English filters count): whitespace chunks, then
# prefixes and suffixes peeled off one at a time, then infixes split what is left. These are
# the rules of spaCy's English tokenizer that matter for the statistics, written out here.
_QUOTES = "'\"”“`‘´’‚„»«"
_ICONS = "\u00a6\u00a9\u00ae\u00b0\ufffd"  # a few So-category symbols spaCy splits everywhere
_PUNCT = ",:;!?¿¡()[]{}<>_#*&。？！，、；：～·"
_PREFIX_RE = re.compile(rf"[§%=—–…{re.escape(_PUNCT + _QUOTES + _ICONS)}$£€¥]|\+(?![0-9])|\.\.+")
_SUFFIX_RE = re.compile(
    rf"(?:[…{re.escape(_PUNCT + _QUOTES + _ICONS)}%—–]|\.\.+|['’][sS]|(?<=[0-9])[+$£€¥]"
    r"|(?<=[0-9a-zß-öø-ÿ%²\-+'\"”’)\]},:;!?…<>_#*&\ufffd])\.|(?<=[A-Z][A-Z])\.)$"
)
_INFIX_RE = re.compile(
    r"\.\.+|…|[\u00a6\u00a9\u00ae\u00b0\ufffd]|(?<=[0-9])[+\-*^](?=[0-9-])|(?<=[a-z'\"])\.(?=[A-Z'\"])|(?<=[^\W\d_]),(?=[^\W\d_])"
    r"|(?<=[^\W_])(?:---|--|-|–|—|~)(?=[^\W\d_])|(?<=[^\W_])[:<>=/](?=[^\W\d_])"
)
_URL_RE = re.compile(r"(?:[\w+.-]{2,}://)?(?:\S+@)?(?:[\w-]+\.)+[a-z]{2,}(?::\d+)?(?:[/?#]\S*)?|[\w+.-]{2,}://\S+")
_ABBREVIATIONS = frozenset(
    "Mr. Mrs. Ms. Dr. St. Jr. Sr. Prof. Inc. Ltd. Co. Corp. vs. e.g. i.e. Jan. Feb. Mar. Apr. Jun. Jul. Aug. "
    "Sep. Sept. Oct. Nov. Dec. Mt. p. ca. cf. Gen. Gov. Rep. Sen. Rev. and/or "
    # emoticons spaCy keeps whole
    ":) :-) ;) ;-) :( :-( ): (: (; :D :P :p =) '' -- ".split()
)
_SPLIT_WORDS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta"), "dont": ("do", "nt")}
_CLITIC_RE = re.compile(r"(?i)(?<=[^\W\d_])(n['’]t|['’](?:m|re|ve|ll|d))$")


def _special(chunk: str) -> tuple[str, ...] | None:
    if chunk in _ABBREVIATIONS or (len(chunk) == 2 and chunk[1] == "." and chunk[0].isalpha()):
        return (chunk,)
    if chunk in ("id", "Id"):  # read as "I'd"
        return (chunk[0], "d")
    low = chunk.lower()
    if low in _SPLIT_WORDS:
        a, b = _SPLIT_WORDS[low]
        return (chunk[: len(a)], chunk[len(a) :])
    if (m := _CLITIC_RE.search(chunk)) and chunk[: m.start()].isalpha():
        return (chunk[: m.start()], m.group(1))
    return None


@functools.lru_cache(maxsize=1 << 16)
def _split_chunk(chunk: str) -> tuple[str, ...]:
    prefixes: list[str] = []
    suffixes: list[str] = []
    core = chunk
    while core:
        if (special := _special(core)) is not None:
            return (*prefixes, *special, *reversed(suffixes))
        m = _PREFIX_RE.match(core)
        if m:
            prefixes.append(m.group())
            core = core[m.end() :]
            if (special := _special(core)) is not None:
                return (*prefixes, *special, *reversed(suffixes))
        n = _SUFFIX_RE.search(core) if core else None
        if n and n.start() > 0 or (n and not m):
            suffixes.append(n.group())
            core = core[: n.start()]
        if not m and not n:
            break
    out = prefixes
    if core:
        if _URL_RE.fullmatch(core):
            out.append(core)
        else:
            start = 0
            for m in _INFIX_RE.finditer(core):
                if m.start() > start:
                    out.append(core[start : m.start()])
                if m.end() > m.start():
                    out.append(m.group())
                start = m.end()
            if start < len(core):
                out.append(core[start:])
    out.extend(reversed(suffixes))
    return tuple(out)


# Unicode sentence terminals (the STerm property) of the scripts we expect to see.
SENTENCE_END = (
    "!.?\u0589\u061f\u06d4\u0700\u0701\u0702\u07f9\u0964\u0965\u104a\u104b\u1362\u1367\u1368\u166e"
    "\u1803\u1809\u1944\u1945\u203c\u203d\u2047\u2048\u2049\u2e2e\u3002\ua4ff\ua60e\ua60f\ua6f3"
    "\ua6f7\ufe12\ufe15\ufe16\ufe52\ufe56\ufe57\uff01\uff0e\uff1f\uff61"
)
SENTENCE_END_TUPLE = tuple(SENTENCE_END)
C4_END_PUNCT = (".", "?", "!", '"', "'")  # C4's own list (quotes count, colons do not)
C4_CITATION_RE = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
BULLETS = ("•", "-")  # Gopher's bullet marks, as datatrove reads them
GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_PARAGRAPH_RE = re.compile(r"\n{2,}")
_LINES_RE = re.compile(r"\n+")


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
    # "words": the paper's definition, punctuation marks are not words. "tokens": datatrove's,
    # which counts every punctuation token against the page and removes most technical
    # documentation (docs/curation.md has the measurement).
    alpha_ratio_over: str = "words"
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
    # characters of n-grams that repeat an earlier one (left-to-right, non-overlapping), n = 5..10
    dup_ngram_char_frac: dict[str, float] = field(
        default_factory=lambda: {"5": 0.15, "6": 0.14, "7": 0.13, "8": 0.12, "9": 0.11, "10": 0.10}
    )
    # false: lines with no letter or digit ("}", "});", "----") are not compared as duplicate
    # lines, so code samples in documentation do not read as boilerplate; true: datatrove's count.
    count_symbol_lines: bool = False


@dataclass
class C4Config:
    enabled: bool = True
    min_words_per_line: int = 3
    min_sentences: int = 5
    max_word_length: int = 1000  # a line with a longer word is dropped
    drop_lines_without_terminal_punct: bool = True
    remove_citations: bool = True  # "[1]", "[edit]", "[citation needed]"
    filter_lorem_ipsum: bool = True
    filter_javascript_lines: bool = True
    # Published C4 drops any page whose kept lines contain "{": that removes every programming
    # book and docs page with a code sample, so it is off by default (true gives C4 parity).
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
    count_symbol_lines: bool = False  # as in GopherRepetitionConfig, for the duplicate-line rule


# Rule families a filter profile may exempt, and how each is switched off (docs/curation.md).
EXEMPTABLE_RULES = (
    "gopher_repetition",  # the whole Gopher repetition filter
    "gopher_dup_paragraphs",  # gopher_dup_paragraphs, gopher_dup_paragraph_chars
    "gopher_dup_lines",  # gopher_dup_lines, gopher_dup_line_chars
    "gopher_top_ngrams",  # gopher_top_{2,3,4}gram
    "gopher_dup_ngrams",  # gopher_dup_{5..10}gram
    "fineweb_dup_line_chars",
)
DOCUMENTATION_URLS = r"^https?://(docs|devdocs|developer)\.|readthedocs\.io|/docs?/|/api/|/manual/"


@dataclass
class DocumentationProfile:
    """Technical documentation: pages whose crawled URL matches ``pattern`` skip the within-page
    repetition rules named in ``exempt``; every other rule runs with its usual threshold.

    An API reference repeats itself by construction: every function's entry restates its
    parameter types, return value and error cases in the same words, and the same history or
    deprecation note. Gopher's repetition rules and FineWeb's duplicate-line rule read that as
    boilerplate (they were tuned on web crawls); on the regression set they removed 37 of 74
    clean documentation pages. Repeats across pages are still removed by dedup, and language
    identification, the quality rules, C4 and the quality model still see these pages.
    """

    pattern: str = DOCUMENTATION_URLS  # regex over the crawled URL (not file://); "" turns the profile off
    exempt: list[str] = field(default_factory=lambda: ["gopher_repetition", "fineweb_dup_line_chars"])


@dataclass
class HeuristicsConfig:
    domains: list[str] | None = field(default_factory=lambda: ["web", "prose"])
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    c4: C4Config = field(default_factory=C4Config)
    fineweb: FineWebConfig = field(default_factory=FineWebConfig)
    documentation: DocumentationProfile = field(default_factory=DocumentationProfile)


def exempted(cfg: HeuristicsConfig, rules: list[str]) -> HeuristicsConfig:
    """``cfg`` with the named rule families switched off (names from ``EXEMPTABLE_RULES``)."""
    unknown = sorted(set(rules) - set(EXEMPTABLE_RULES))
    if unknown:
        raise ValueError(f"heuristics profile: unknown rules {unknown}; choose from {list(EXEMPTABLE_RULES)}")
    rep, fineweb = cfg.gopher_repetition, cfg.fineweb
    if "gopher_repetition" in rules:
        rep = replace(rep, enabled=False)
    if "gopher_dup_paragraphs" in rules:
        rep = replace(rep, max_dup_para_frac=math.inf, max_dup_para_char_frac=math.inf)
    if "gopher_dup_lines" in rules:
        rep = replace(rep, max_dup_line_frac=math.inf, max_dup_line_char_frac=math.inf)
    if "gopher_top_ngrams" in rules:
        rep = replace(rep, top_ngram_char_frac={})
    if "gopher_dup_ngrams" in rules:
        rep = replace(rep, dup_ngram_char_frac={})
    if "fineweb_dup_line_chars" in rules:
        fineweb = replace(fineweb, max_dup_line_char_ratio=math.inf)
    return replace(cfg, gopher_repetition=rep, fineweb=fineweb)


def _chunk_tokens(chunk: str) -> tuple[str, ...]:
    if chunk.isalnum() and (len(chunk) > 6 or len(chunk) == 3 or len(chunk) < 2 or not _special(chunk)):
        return (chunk,)
    return _split_chunk(chunk)


_cached_chunk_tokens = functools.lru_cache(maxsize=1 << 18)(_chunk_tokens)


def tokens(text: str) -> list[str]:
    """Word and punctuation tokens, split the way spaCy's English tokenizer splits them."""
    return list(itertools.chain.from_iterable(map(_cached_chunk_tokens, text.split())))


words_of = tokens  # the name older callers use


_ALNUM_RE = re.compile(r"[^\W_]")


def _is_symbol(token: str) -> bool:
    return _ALNUM_RE.search(token) is None


def gopher_quality(text: str, cfg: GopherQualityConfig, words: list[str] | None = None) -> str | None:
    words = tokens(text) if words is None else words
    n = len(words)
    # Per distinct token, not per token: a page has a few hundred distinct ones.
    n_symbol = symbol_chars = n_alpha = 0
    for tok, count in Counter(words).items():
        if tok.isalpha():
            n_alpha += count
        elif _is_symbol(tok):
            n_symbol += count
            symbol_chars += len(tok) * count
        elif any(ch.isalpha() for ch in tok):
            n_alpha += count
    # Counts and mean length ignore punctuation tokens; the ratios below divide by all tokens.
    n_real = n - n_symbol
    if n_real == 0 or n_real < cfg.min_words or n_real > cfg.max_words:
        return "gopher_word_count"
    mean_len = (sum(map(len, words)) - symbol_chars) / n_real
    if not cfg.min_mean_word_length <= mean_len <= cfg.max_mean_word_length:
        return "gopher_mean_word_length"
    if text.count("#") / n > cfg.max_symbol_word_ratio:
        return "gopher_symbol_ratio"
    if (text.count("...") + text.count("…")) / n > cfg.max_symbol_word_ratio:
        return "gopher_symbol_ratio"
    lines = text.splitlines()  # blank lines count in the denominator, as in datatrove
    if lines:
        if sum(ln.lstrip().startswith(BULLETS) for ln in lines) / len(lines) > cfg.max_bullet_lines_ratio:
            return "gopher_bullet_lines"
        if sum(ln.rstrip().endswith(("...", "…")) for ln in lines) / len(lines) > cfg.max_ellipsis_lines_ratio:
            return "gopher_ellipsis_lines"
    if n_alpha / (n_real if cfg.alpha_ratio_over == "words" else n) < cfg.min_alpha_words_ratio:
        return "gopher_alpha_words"
    present = set(words)  # case-sensitive: "The" is not the stop word "the"
    if sum(s in present for s in GOPHER_STOP_WORDS) < cfg.min_stop_words:
        return "gopher_stop_words"
    return None


def _without_symbol_lines(lines: list[str]) -> list[str]:
    return [ln for ln in lines if not _is_symbol(ln)]


def _dup_fraction(items: list[str], total: int | None = None) -> tuple[float, int]:
    """Share of items that repeat an earlier item (of ``total`` items, default all of them),
    and the characters of those repeats."""
    if not items:
        return 0.0, 0
    seen: set[str] = set()
    dup_items = dup_chars = 0
    for item in items:
        if item in seen:
            dup_items += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    return dup_items / (total or len(items)), dup_chars


def gopher_repetition(text: str, cfg: GopherRepetitionConfig, words: list[str] | None = None) -> str | None:
    if not text:
        return "gopher_empty"
    size = len(text)
    paragraphs = _PARAGRAPH_RE.split(text.strip())
    para_frac, para_chars = _dup_fraction(paragraphs)
    if para_frac > cfg.max_dup_para_frac:
        return "gopher_dup_paragraphs"
    if para_chars / size > cfg.max_dup_para_char_frac:
        return "gopher_dup_paragraph_chars"
    lines = _LINES_RE.split(text)
    line_frac, line_chars = _dup_fraction(lines if cfg.count_symbol_lines else _without_symbol_lines(lines), len(lines))
    if line_frac > cfg.max_dup_line_frac:
        return "gopher_dup_lines"
    if line_chars / size > cfg.max_dup_line_char_frac:
        return "gopher_dup_line_chars"
    words = tokens(text) if words is None else words
    if not words:
        return None
    word_ids = np.asarray(RMinHash.hash_token_sets([words])[0], dtype=np.uint64)  # hashed in Rust
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    top = sorted((int(n), limit) for n, limit in cfg.top_ngram_char_frac.items())
    chars = ngram_kernels.top_ngram_chars(word_ids, lengths, np.array([n for n, _ in top], dtype=np.int64))
    for (n, limit), c in zip(top, chars.tolist()):
        if c / size > limit:
            return f"gopher_top_{n}gram"
    dup = sorted((int(n), limit) for n, limit in cfg.dup_ngram_char_frac.items())
    chars = ngram_kernels.dup_ngram_chars(word_ids, lengths, np.array([n for n, _ in dup], dtype=np.int64))
    for (n, limit), c in zip(dup, chars.tolist()):
        if c / size > limit:
            return f"gopher_dup_{n}gram"
    return None


_INNER_SENTENCE_END_RE = re.compile(rf"[{re.escape(SENTENCE_END)}]\S*\s")


def _sentence_count(line: str) -> int:
    """Sentences in one line, counted like spaCy's sentencizer: a new sentence starts at the
    first non-punctuation token after a sentence-final mark."""
    if not _INNER_SENTENCE_END_RE.search(line):
        return 1  # no mark followed by more text: one sentence
    count, after_end = 1, False
    for tok in tokens(line):
        if tok in SENTENCE_END:  # one-character tokens only ("..." is not a sentence end)
            after_end = True
        elif after_end and not _is_symbol(tok):
            count += 1
            after_end = False
    return count


def c4_filter(doc: Document, cfg: C4Config) -> str | None:
    """C4 is a line filter: it rewrites ``doc.text`` and drops the page if too little is left."""
    kept: list[str] = []
    sentences = 0
    for line in doc.text.splitlines():
        line = line.strip()
        words = line.split()
        if not words:
            continue
        if len(line) > cfg.max_word_length and max(map(len, words)) > cfg.max_word_length:
            continue
        if cfg.remove_citations and "[" in line:
            line = C4_CITATION_RE.sub("", line)
        if cfg.drop_lines_without_terminal_punct and (not line.endswith(C4_END_PUNCT) or line.endswith("...")):
            continue
        if len(words) < cfg.min_words_per_line:
            continue
        lowered = line.lower()
        if cfg.filter_lorem_ipsum and "lorem ipsum" in lowered:
            return "c4_lorem_ipsum"
        if cfg.filter_javascript_lines and "javascript" in lowered:
            continue
        if cfg.filter_curly_bracket and "{" in line:
            return "c4_curly_bracket"
        if cfg.filter_policy_lines and any(p in lowered for p in POLICY_PHRASES):
            continue
        if sentences < cfg.min_sentences:  # counting stops once the page has enough
            sentences += _sentence_count(line)
        kept.append(line)
    if sentences < cfg.min_sentences:
        return "c4_too_few_sentences"
    doc.text = "\n".join(kept).strip()
    return None


def fineweb_filter(text: str, cfg: FineWebConfig, words: list[str] | None = None) -> str | None:
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if not lines:
        return "fineweb_empty"
    if sum(ln.endswith(SENTENCE_END_TUPLE) for ln in lines) / len(lines) < cfg.min_line_punct_ratio:
        return "fineweb_line_punct_ratio"
    if sum(len(ln) <= cfg.short_line_chars for ln in lines) / len(lines) > cfg.max_short_line_ratio:
        return "fineweb_short_line_ratio"
    _, dup_chars = _dup_fraction(lines if cfg.count_symbol_lines else _without_symbol_lines(lines))
    if dup_chars / max(len(text) - text.count("\n"), 1) > cfg.max_dup_line_char_ratio:
        return "fineweb_dup_line_chars"
    newlines = text.count("\n")
    # Every whitespace chunk is at least one token: tokenise only when that bound is not enough.
    if words is None and newlines / max(len(text.split()), 1) <= cfg.max_newline_word_ratio:
        return None
    n_words = len(tokens(text) if words is None else words)
    if newlines / max(n_words, 1) > cfg.max_newline_word_ratio:
        return "fineweb_newline_ratio"
    return None


class HeuristicFilter:
    """Gopher repetition -> Gopher quality -> C4 -> FineWeb, in FineWeb's order.

    A page whose URL matches ``cfg.documentation.pattern`` is checked with the documentation
    profile (its ``exempt`` rules off) and carries ``heuristics_profile: documentation``.
    """

    name = "heuristics"

    def __init__(self, cfg: HeuristicsConfig) -> None:
        self.cfg = cfg
        self.domains = cfg.domains
        profile = cfg.documentation
        self.documentation_re = re.compile(profile.pattern) if profile.pattern else None
        self.documentation_cfg = exempted(cfg, list(profile.exempt))

    def __call__(self, doc: Document) -> str | None:
        cfg = self.cfg
        # Only a crawled URL counts: a local file's file:// URL is where someone stored it.
        url = "" if doc.url.startswith("file:") else doc.url
        if self.documentation_re is not None and url and self.documentation_re.search(url):
            cfg = self.documentation_cfg
            doc.metadata["heuristics_profile"] = "documentation"
        words = tokens(doc.text)  # tokenised once for both Gopher filters
        if cfg.gopher_repetition.enabled and (why := gopher_repetition(doc.text, cfg.gopher_repetition, words)):
            return why
        if cfg.gopher_quality.enabled and (why := gopher_quality(doc.text, cfg.gopher_quality, words)):
            return why
        before = doc.text
        if cfg.c4.enabled and (why := c4_filter(doc, cfg.c4)):
            return why
        if cfg.fineweb.enabled:
            # C4 rewrites the text; FineWeb sees what C4 kept, as in FineWeb's own pipeline.
            fw_words = words if doc.text is before else None
            if why := fineweb_filter(doc.text, cfg.fineweb, fw_words):
                return why
        return None
