"""Rule-by-rule comparison of data_pipeline.heuristics with datatrove's filters on the same pages.

Each rule is isolated on both sides (every other threshold of the filter switched off), so a
disagreement is pinned to one rule. ``python -m tests.data_pipeline.agreement`` prints the
table for the regression set (docs/curation.md quotes it).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable

from data_pipeline import synthetic
from data_pipeline.heuristics import (
    C4Config,
    FineWebConfig,
    GopherQualityConfig,
    GopherRepetitionConfig,
    HeuristicFilter,
    HeuristicsConfig,
    c4_filter,
    fineweb_filter,
    gopher_quality,
    gopher_repetition,
)
from lmforge.formats.corpus import Document

INF = math.inf
OFF_REPETITION = dict(
    max_dup_line_frac=INF,
    max_dup_para_frac=INF,
    max_dup_line_char_frac=INF,
    max_dup_para_char_frac=INF,
    top_ngram_char_frac={},
    dup_ngram_char_frac={},
)
OFF_QUALITY = dict(
    min_words=0,
    max_words=10**12,
    min_mean_word_length=0,
    max_mean_word_length=INF,
    max_symbol_word_ratio=INF,
    max_bullet_lines_ratio=INF,
    max_ellipsis_lines_ratio=INF,
    min_alpha_words_ratio=0,
    min_stop_words=0,
)
OFF_FINEWEB = dict(
    min_line_punct_ratio=0, max_short_line_ratio=INF, max_dup_line_char_ratio=INF, max_newline_word_ratio=INF
)

# Rules where lmforge's defaults knowingly differ from datatrove, with the reason (docs/curation.md).
# With ``parity=True`` these switch to datatrove's definition and must agree like the rest; with
# the defaults lmforge may only keep more pages than datatrove on them, never fewer.
KNOWN_DIFFERENCES: dict[str, str] = {
    "gopher_alpha_words": "the paper counts words; datatrove also counts punctuation tokens, which "
    "removes most documentation pages with code or option lists (alpha_ratio_over=words)",
    "gopher_dup_lines": "lines with no letter or digit ('}', '});') are not compared, so code "
    "samples do not read as boilerplate (count_symbol_lines=false)",
    "gopher_dup_line_chars": "as gopher_dup_lines",
    "fineweb_dup_line_chars": "as gopher_dup_lines",
}


def _dt_keep(verdict) -> bool:
    return verdict is True or (isinstance(verdict, tuple) and verdict[0] is True)


def rule_pairs(parity: bool = True) -> dict[str, tuple[Callable[[str], bool], Callable[[str], bool]]]:
    """rule -> (ours keeps text?, datatrove keeps text?), each with only that rule switched on.

    ``parity``: the rules of KNOWN_DIFFERENCES use datatrove's definition; else lmforge's defaults.
    """
    from datatrove.data import Document as DtDocument
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    def dt(filter_) -> Callable[[str], bool]:
        return lambda text: _dt_keep(filter_.filter(DtDocument(text=text, id="x")))

    pairs: dict[str, tuple] = {}
    rep_off = dict(dup_line_frac=None, dup_para_frac=None, dup_line_char_frac=None, dup_para_char_frac=None)
    for name, ours_key, dt_key, value in (
        ("gopher_dup_paragraphs", "max_dup_para_frac", "dup_para_frac", 0.3),
        ("gopher_dup_paragraph_chars", "max_dup_para_char_frac", "dup_para_char_frac", 0.2),
        ("gopher_dup_lines", "max_dup_line_frac", "dup_line_frac", 0.3),
        ("gopher_dup_line_chars", "max_dup_line_char_frac", "dup_line_char_frac", 0.2),
    ):
        cfg = GopherRepetitionConfig(**{**OFF_REPETITION, ours_key: value}, count_symbol_lines=parity)
        theirs = GopherRepetitionFilter(**{**rep_off, dt_key: value}, top_n_grams=(), dup_n_grams=())
        pairs[name] = (lambda t, c=cfg: gopher_repetition(t, c) is None, dt(theirs))
    for n, value in ((2, 0.2), (3, 0.18), (4, 0.16)):
        cfg = GopherRepetitionConfig(**{**OFF_REPETITION, "top_ngram_char_frac": {str(n): value}})
        theirs = GopherRepetitionFilter(**rep_off, top_n_grams=((n, value),), dup_n_grams=())
        pairs[f"gopher_top_{n}gram"] = (lambda t, c=cfg: gopher_repetition(t, c) is None, dt(theirs))
    for n, value in ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)):
        cfg = GopherRepetitionConfig(**{**OFF_REPETITION, "dup_ngram_char_frac": {str(n): value}})
        theirs = GopherRepetitionFilter(**rep_off, top_n_grams=(), dup_n_grams=((n, value),))
        pairs[f"gopher_dup_{n}gram"] = (lambda t, c=cfg: gopher_repetition(t, c) is None, dt(theirs))

    q_off = dict(
        min_doc_words=None,
        max_doc_words=None,
        min_avg_word_length=None,
        max_avg_word_length=None,
        max_symbol_word_ratio=None,
        max_bullet_lines_ratio=None,
        max_ellipsis_lines_ratio=None,
        max_non_alpha_words_ratio=None,
        min_stop_words=None,
    )
    for name, ours, theirs in (
        ("gopher_word_count", dict(min_words=50, max_words=100_000), dict(min_doc_words=50, max_doc_words=100_000)),
        (
            "gopher_mean_word_length",
            dict(min_mean_word_length=3, max_mean_word_length=10),
            dict(min_avg_word_length=3, max_avg_word_length=10),
        ),
        ("gopher_symbol_ratio", dict(max_symbol_word_ratio=0.1), dict(max_symbol_word_ratio=0.1)),
        ("gopher_bullet_lines", dict(max_bullet_lines_ratio=0.9), dict(max_bullet_lines_ratio=0.9)),
        ("gopher_ellipsis_lines", dict(max_ellipsis_lines_ratio=0.3), dict(max_ellipsis_lines_ratio=0.3)),
        ("gopher_alpha_words", dict(min_alpha_words_ratio=0.8), dict(max_non_alpha_words_ratio=0.8)),
        ("gopher_stop_words", dict(min_stop_words=2), dict(min_stop_words=2)),
    ):
        cfg = GopherQualityConfig(**{**OFF_QUALITY, **ours}, alpha_ratio_over="tokens" if parity else "words")
        pairs[name] = (lambda t, c=cfg: gopher_quality(t, c) is None, dt(GopherQualityFilter(**{**q_off, **theirs})))

    for curly in (False, True):
        cfg = C4Config(filter_curly_bracket=curly)
        theirs = C4QualityFilter(filter_curly_bracket=curly)

        def ours_c4(t: str, c: C4Config = cfg) -> bool:
            return c4_filter(Document(id="x", text=t, source="", domain="web"), c) is None

        pairs["c4" + ("_with_curly_bracket" if curly else "")] = (ours_c4, dt(theirs))

    for name, ours, theirs in (
        ("fineweb_line_punct_ratio", dict(min_line_punct_ratio=0.12), dict(line_punct_thr=0.12)),
        ("fineweb_short_line_ratio", dict(max_short_line_ratio=0.67), dict(short_line_thr=0.67)),
        ("fineweb_dup_line_chars", dict(max_dup_line_char_ratio=0.01), dict(char_duplicates_ratio=0.01)),
        ("fineweb_newline_ratio", dict(max_newline_word_ratio=0.3), dict(new_line_ratio=0.3)),
    ):
        cfg = FineWebConfig(**{**OFF_FINEWEB, **ours}, count_symbol_lines=parity)
        dt_off = dict(line_punct_thr=0, short_line_thr=INF, char_duplicates_ratio=INF, new_line_ratio=INF)
        pairs[name] = (lambda t, c=cfg: fineweb_filter(t, c) is None, dt(FineWebQualityFilter(**{**dt_off, **theirs})))
    return pairs


def chain_pair(parity: bool = True) -> tuple[Callable[[str], str | None], Callable[[str], str | None]]:
    """The whole chain, both sides: the text that survives, or None."""
    from datatrove.data import Document as DtDocument
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    filters = [
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(filter_curly_bracket=False),
        FineWebQualityFilter(),
    ]
    cfg = HeuristicsConfig()
    if parity:
        cfg.gopher_quality.alpha_ratio_over = "tokens"
        cfg.gopher_repetition.count_symbol_lines = cfg.fineweb.count_symbol_lines = True
    ours = HeuristicFilter(cfg)

    def theirs(text: str) -> str | None:
        doc = DtDocument(text=text, id="x")
        return doc.text if all(_dt_keep(f.filter(doc)) for f in filters) else None

    def mine(text: str) -> str | None:
        doc = Document(id="x", text=text, source="", domain="web")
        return doc.text if ours(doc) is None else None

    return mine, theirs


def synthetic_pages(n: int, seed: int = 0) -> list[str]:
    """Web-like pages that trip the rules (spam, menus, lists, repeats) so both verdicts get exercised."""
    rng = random.Random(seed)
    pages = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            pages.append(synthetic.spam_page(rng, rng.randint(5, 60)))
        elif kind == 1:
            pages.append(synthetic.menu_page(rng))
        elif kind == 2:
            pages.append(synthetic.neutral_text(rng, rng.randint(2, 12)))
        elif kind == 3:
            base = synthetic.neutral_text(rng, rng.randint(3, 8))
            pages.append("\n\n".join([base] * rng.randint(1, 3) + [synthetic.neutral_text(rng, 4)]))
        else:
            pages.append("\n".join(f"- {synthetic.neutral_text(rng, 1)}" for _ in range(rng.randint(3, 30))))
    return pages


def agreement(texts: list[str], cache: dict | None = None, parity: bool = True) -> dict[str, dict]:
    """rule -> {agree, n, ours_removed, theirs_removed, disagree (indices)}.

    ``cache`` ((rule, text) -> datatrove's verdict) lets a calibration loop skip spaCy reruns.
    """
    pairs = rule_pairs(parity)
    cache = {} if cache is None else cache
    out = {name: {"agree": 0, "n": 0, "ours_removed": 0, "theirs_removed": 0, "disagree": []} for name in pairs}
    for i, text in enumerate(texts):
        for name, (ours, theirs) in pairs.items():
            key = (name, text)
            if key not in cache:
                cache[key] = theirs(text)
            a, b = ours(text), cache[key]
            row = out[name]
            row["n"] += 1
            row["agree"] += a == b
            row["ours_removed"] += not a
            row["theirs_removed"] += not b
            if a != b:
                row["disagree"].append(i)
    return out


def _main() -> None:
    import pickle
    import sys

    from tests.data_pipeline.regression_corpus import regression_texts

    texts = [t for t in regression_texts() + synthetic_pages(200) if t.split()]  # datatrove divides by 0 on ""
    cache_file = sys.argv[1] if len(sys.argv) > 1 else None
    cache = pickle.load(open(cache_file, "rb")) if cache_file and os.path.exists(cache_file) else {}
    result = agreement(texts, cache)
    defaults = agreement(texts, cache, parity=False)
    if cache_file:
        pickle.dump(cache, open(cache_file, "wb"))
    print(f"{'rule':<30}{'agree':>8}{'ours -':>8}{'dt -':>8}   (n={len(texts)}; parity definitions)")
    for name, row in result.items():
        print(
            f"{name:<30}{row['agree'] / row['n']:>8.2%}{row['ours_removed']:>8}{row['theirs_removed']:>8}"
            f"   {row['disagree'][:8]}"
        )
    print("lmforge defaults on the rules that knowingly differ:")
    for name in KNOWN_DIFFERENCES:
        row = defaults[name]
        print(f"{name:<30}{row['agree'] / row['n']:>8.2%}{row['ours_removed']:>8}{row['theirs_removed']:>8}")
    mine, theirs = chain_pair()
    same_verdict = same_text = 0
    for t in texts:
        a, b = mine(t), theirs(t)
        same_verdict += (a is None) == (b is None)
        same_text += a == b
    print(f"{'whole chain (verdict)':<30}{same_verdict / len(texts):>8.2%}")
    print(f"{'whole chain (output text)':<30}{same_text / len(texts):>8.2%}")


if __name__ == "__main__":
    _main()
