"""`report.html`: the Markdown report as one self-contained page, every plot embedded as a data URI,
so it opens from a mail attachment or an artifact store without its folder."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import markdown

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 64rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; }
code, pre { background: #f6f6f6; }
"""
IMAGE = re.compile(r'<img alt="([^"]*)" src="([^"]+\.png)"\s*/?>')


def _embed_images(body: str, folder: Path) -> str:
    def inline(match: re.Match) -> str:
        alt, src = match.group(1), match.group(2)
        path = folder / src
        if not path.is_file():
            return f"<em>(missing plot {html.escape(src)})</em>"
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<img alt="{alt}" src="data:image/png;base64,{data}">'

    return IMAGE.sub(inline, body)


def write_html(report_md: Path, title: str = "lmforge end-to-end report") -> Path:
    """report.md -> report.html beside it."""
    report_md = Path(report_md)
    body = markdown.markdown(report_md.read_text(), extensions=["tables", "fenced_code"])
    page = (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n{_embed_images(body, report_md.parent)}\n</body></html>\n"
    )
    out = report_md.with_suffix(".html")
    out.write_text(page)
    return out
