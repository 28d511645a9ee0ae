"""A small gzipped WARC (and a JSONL twin) built from real text on this machine that nobody on
the project wrote: Debian HTML documentation, licence files, and German/French/Spanish manual
pages. A few records carry what real crawls carry: C1 control characters (cp1252 quotes that a
mis-declared charset turned into U+0093/U+0094), NUL and other C0 bytes, noncharacters, and
bytes that are not valid UTF-8 although the header says utf-8.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

DOC_ROOT = Path("/usr/share/doc")
LICENSES = Path("/usr/share/common-licenses")
MAN = Path("/usr/share/man")


def doc_pages(limit: int) -> list[tuple[str, bytes]]:
    """(URL, HTML bytes) of the largest-first sorted HTML files under /usr/share/doc."""
    files = sorted(p for p in DOC_ROOT.rglob("*.html") if p.is_file() and p.stat().st_size > 2000)
    return [(f"https://docs.example.net/{p.relative_to(DOC_ROOT)}", p.read_bytes()) for p in files[:limit]]


def licence_texts(limit: int) -> list[tuple[str, str]]:
    files = sorted(p for p in LICENSES.iterdir() if p.is_file() and not p.is_symlink())
    return [(f"https://licenses.example.org/{p.name}.txt", p.read_text("utf-8", "replace")) for p in files[:limit]]


def _untroff(source: str) -> str:
    """Manual-page source to rough prose: drop requests and font escapes, join filled lines."""
    lines = []
    for line in source.splitlines():
        if line.startswith(('.\\"', "'\\\"")):
            continue
        if line.startswith("."):
            parts = line.split(None, 1)
            line = parts[1].strip('"') if len(parts) > 1 and parts[0] in (".SH", ".SS", ".B", ".I", ".IP") else ""
        line = re.sub(r"\\f[BIRP]|\\f\(..|\\\(..|\\[&-]|\\e", lambda m: "-" if m.group(0) == "\\-" else "", line)
        lines.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def man_pages(language: str, limit: int) -> list[tuple[str, str]]:
    files = sorted((MAN / language / "man1").glob("*.1.gz"))
    out = []
    for p in files:
        text = _untroff(gzip.decompress(p.read_bytes()).decode("utf-8", "replace"))
        if len(text) > 3000:
            out.append((f"https://man.example.org/{language}/{p.name[:-3]}", text))
        if len(out) == limit:
            break
    return out


def _html(title: str, body: str) -> str:
    paras = "".join(f"<p>{p}</p>" for p in re.split(r"\n\s*\n", body) if p.strip())
    return f"<html><head><meta charset='utf-8'><title>{title}</title></head><body><main>{paras}</main></body></html>"


def dirty_records(pages: list[tuple[str, bytes]], german: str) -> list[tuple[str, str, bytes]]:
    """(URL, content type, payload) of pages with control characters and invalid UTF-8."""
    _, first = pages[0]
    text = re.sub(r"<[^>]+>", " ", first.decode("utf-8", "replace"))
    text = re.sub(r"\s+", " ", text)[:4000]
    c1 = text.replace(" the ", " \u0093the\u0094 ").replace(". ", ".\u0085 ", 5)
    return [
        # C1 controls as UTF-8 code points: what pycld2 rejects ("invalid UTF-8 around byte N").
        ("https://dirty.example.com/c1.html", "text/html; charset=utf-8", _html("c1", c1).encode()),
        # NUL, escape, DEL, vertical tab and a noncharacter inside otherwise good prose.
        (
            "https://dirty.example.com/c0.html",
            "text/html; charset=utf-8",
            _html("c0", text.replace(". ", ".\x00\x1b\x7f\x0b\ufffe ", 8)).encode(),
        ),
        # Declared utf-8, but a German page (real umlauts) with a few bytes that are not UTF-8.
        (
            "https://dirty.example.com/bytes.txt",
            "text/plain; charset=utf-8",
            german.encode().replace(b" die ", b" di\xe9\xff \x80 ", 10),
        ),
    ]


def build_real_crawl(directory: Path, n_pages: int = 24, n_licences: int = 8, n_man: int = 3) -> dict[str, Path]:
    """Write ``crawl.warc.gz`` and ``crawl.jsonl`` (the same text, no HTML) under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    pages = doc_pages(n_pages)
    texts = licence_texts(n_licences) + [pg for lang in ("de", "fr", "es") for pg in man_pages(lang, n_man)]
    records: list[tuple[str, str, bytes]] = [(u, "text/html; charset=utf-8", b) for u, b in pages]
    records += [(u, "text/plain; charset=utf-8", t.encode()) for u, t in texts]
    german = next(t for u, t in texts if "/de/" in u)
    records += dirty_records(pages, german)
    warc = directory / "crawl.warc.gz"
    with open(warc, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for url, content_type, payload in records:
            headers = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
            writer.write_record(
                writer.create_warc_record(url, "response", payload=io.BytesIO(payload), http_headers=headers)
            )
    jsonl = directory / "crawl.jsonl"
    with open(jsonl, "w", encoding="utf-8") as f:
        for url, text in texts:
            f.write(json.dumps({"url": url, "text": text}) + "\n")
        for url, body in pages:
            plain = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body.decode("utf-8", "replace")))
            f.write(json.dumps({"url": url, "text": plain}) + "\n")
    return {"warc": warc, "jsonl": jsonl, "records": len(records)}
