"""Main-content extraction from HTML (resiliparse by default, trafilatura optional).

resiliparse's ``main_content`` mode drops nav/footer/aside blocks by DOM heuristics and
runs ~10-50x faster than trafilatura here (see README.md, data pipeline "Benchmark", for the numbers);
trafilatura is kept as the option that favours precision on article pages.
"""

from __future__ import annotations

from dataclasses import dataclass

from resiliparse.extract.html2text import extract_plain_text

from data_pipeline.normalize import normalize_text
from lmforge.formats.corpus import Document


@dataclass
class ExtractConfig:
    method: str = "resiliparse"  # resiliparse | trafilatura
    main_content: bool = True
    min_chars: int = 1


def extract_text(html: str, method: str = "resiliparse", main_content: bool = True) -> str:
    if method == "resiliparse":
        return extract_plain_text(
            html, main_content=main_content, alt_texts=False, links=False, list_bullets=True, preserve_formatting=True
        )
    if method == "trafilatura":
        import trafilatura  # slow import (~1 s); only paid when chosen

        return (
            trafilatura.extract(
                html, include_comments=False, include_tables=True, favor_precision=main_content, deduplicate=False
            )
            or ""
        )
    raise ValueError(f"extract.method must be 'resiliparse' or 'trafilatura', got {method!r}")


class HtmlExtractor:
    name = "extract"
    domains = None  # every document with HTML is extracted

    def __init__(self, cfg: ExtractConfig) -> None:
        self.cfg = cfg
        extract_text("<p>warm up</p>", cfg.method, cfg.main_content)  # fail fast on a bad method

    def __call__(self, doc: Document) -> str | None:
        if doc.html is None:
            return None
        # Numeric entities (&#1;, &#xFFFE;) decode to code points CLD2 rejects: normalise again.
        doc.text = normalize_text(extract_text(doc.html, self.cfg.method, self.cfg.main_content))[0].strip()
        doc.html = None
        if len(doc.text) < self.cfg.min_chars:
            return "no_main_content"
        return None
