"""Build the embedded default input: a small crawl made from material on this machine.

Sources (each optional except the Python standard library, which is always there):
- prose: the Rust book's HTML chapters (if rustup docs are installed) and long module
  docstrings of the Python standard library, published under ``books.example.org``;
- web:   HTML pages under /usr/share/doc and rustup's other HTML guides, under
  ``web.example.com``, each wrapped in a site menu, cookie banner and footer;
- code:  Python standard-library modules as JSONL rows;
- junk:  planted exact and near duplicates (placed in other shards than their originals),
  German/French/Spanish pages, PII, spam, menus, lorem ipsum, exploit payloads, abuse;
- corrupt: a truncated WARC and a JSONL file with a broken line and undecodable bytes.

Written as WARC/gzip shards (warcio) plus JSONL, deterministically from ``seed``.
"""

from __future__ import annotations

import ast
import glob
import html
import io
import json
import logging
import random
import sysconfig
import uuid
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from data_pipeline import synthetic
from lmforge.formats.files import atomic_path, write_json

log = logging.getLogger(__name__)

RUST_DOCS = "~/.rustup/toolchains/*/share/doc/rust/html"
WEB_GLOBS = [
    "/usr/share/doc/**/*.html",
    f"{RUST_DOCS}/*.html",
    f"{RUST_DOCS}/edition-guide/**/*.html",
    f"{RUST_DOCS}/cargo/**/*.html",
    f"{RUST_DOCS}/embedded-book/**/*.html",
]
BOOK_GLOBS = [f"{RUST_DOCS}/book/*.html"]


def _glob(patterns: list[str], limit: int, max_bytes: int = 400_000) -> list[Path]:
    found: set[Path] = set()
    for pattern in patterns:
        for p in glob.glob(str(Path(pattern).expanduser()), recursive=True):
            path = Path(p)
            if path.is_file() and 500 < path.stat().st_size < max_bytes:
                found.add(path)
    return sorted(found)[:limit]


def _stdlib_docstrings(limit: int, min_chars: int = 1500) -> list[tuple[str, str]]:
    """Module docstrings read with ``ast`` (importing arbitrary modules has side effects)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(stdlib.glob("*.py")):
        if path.stem.startswith("_"):
            continue
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        if len(doc) >= min_chars:
            out.append((path.stem, doc))
        if len(out) >= limit:
            break
    return out


def _stdlib_modules(limit: int) -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [p for p in sorted(stdlib.glob("*.py")) if 2_000 < p.stat().st_size < 60_000][:limit]


def _wrap(title: str, body_html: str, rng: random.Random) -> str:
    menu = "".join(f'<li><a href="/{m.lower()}">{m}</a></li>' for m in rng.sample(synthetic.MENU_ITEMS, 7))
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
        f"<header><nav><ul>{menu}</ul></nav></header>"
        f"<div class='cookie'>This site uses cookies. <a href='/privacy'>Privacy Policy</a></div>"
        f"<main><article><h1>{html.escape(title)}</h1>{body_html}</article></main>"
        f"<aside><h3>Related</h3><ul>{menu}</ul></aside>"
        f"<footer>© 2024 Example Inc. | <a href='/terms'>Terms of Use</a> | <a href='/privacy'>Privacy</a>"
        f"</footer></body></html>"
    )


def _paragraphs_html(text: str) -> str:
    return "".join(f"<p>{html.escape(p.strip())}</p>" for p in text.split("\n\n") if p.strip())


def _inject_boilerplate(page: str, rng: random.Random) -> str:
    """Real pages keep their own markup; a site menu and footer are added around the body."""
    menu = "".join(f'<li><a href="/{m.lower()}">{m}</a></li>' for m in rng.sample(synthetic.MENU_ITEMS, 6))
    lower = page.lower()
    start = lower.find("<body")
    start = lower.find(">", start) + 1 if start >= 0 else 0
    end = lower.rfind("</body>")
    end = end if end >= 0 else len(page)
    return (
        page[:start]
        + f"<nav class='site'><ul>{menu}</ul></nav>"
        + page[start:end]
        + "<footer>© 2024 Example Inc. | Terms of Use | Privacy Policy</footer>"
        + page[end:]
    )


def _write_warc(path: Path, pages: list[tuple[str, str]], seed: int) -> None:
    rng = random.Random(seed)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for url, page in pages:
            http_headers = StatusAndHeaders(
                "200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1"
            )
            record_id = f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128))}>"
            record = writer.create_warc_record(
                url,
                "response",
                payload=io.BytesIO(page.encode("utf-8")),
                http_headers=http_headers,
                warc_headers_dict={"WARC-Record-ID": record_id, "WARC-Date": "2024-01-01T00:00:00Z"},
            )
            writer.write_record(record)


def build_sample_input(
    out_dir: str | Path,
    seed: int = 0,
    n_shards: int = 4,
    max_web_pages: int = 300,
    max_book_pages: int = 120,
    max_docstrings: int = 120,
    max_code_files: int = 150,
) -> Path:
    """Write the default crawl under ``out_dir`` (idempotent: reuses a finished build)."""
    out = Path(out_dir)
    if (out / "_SUCCESS").exists():
        return out
    rng = random.Random(seed)
    pages: list[tuple[str, str]] = []  # (url, html)
    prose_texts: list[str] = []
    for path in _glob(BOOK_GLOBS, max_book_pages):
        raw = path.read_text(errors="replace")
        pages.append((f"https://books.example.org/rust-book/{path.name}", raw))
    for name, doc in _stdlib_docstrings(max_docstrings):
        prose_texts.append(doc)
        pages.append(
            (
                f"https://books.example.org/python-stdlib/{name}.html",
                _wrap(f"The {name} module", _paragraphs_html(doc), rng),
            )
        )
    for path in _glob(WEB_GLOBS, max_web_pages):
        page = path.read_text(errors="replace")
        slug = "/".join(path.parts[-3:])
        pages.append((f"https://web.example.com/{slug}", _inject_boilerplate(page, rng)))

    originals = list(pages)
    junk: list[tuple[str, str]] = []
    for i, (url, page) in enumerate(rng.sample(originals, k=min(30, len(originals)))):
        junk.append((f"https://mirror{i % 3}.example.net/copy/{i}", page))  # exact duplicates
    for i, doc in enumerate(rng.sample(prose_texts, k=min(25, len(prose_texts)))):
        junk.append(
            (
                f"https://mirror{i % 3}.example.net/near/{i}",
                _wrap("Mirror", _paragraphs_html(synthetic.perturb_words(doc, rng)), rng),
            )
        )
    for lang in ("de", "fr", "es"):
        for i in range(12):
            junk.append(
                (
                    f"https://web.example.com/{lang}/news/{i}",
                    _wrap(f"{lang} news {i}", f"<p>{synthetic.foreign_page(lang, rng)}</p>", rng),
                )
            )
    for i, doc in enumerate(rng.sample(prose_texts, k=min(20, len(prose_texts)))):
        paragraphs = doc.split("\n\n")
        paragraphs.insert(len(paragraphs) // 2, synthetic.pii_paragraph(rng))
        junk.append(
            (
                f"https://web.example.com/forum/thread-{i}",
                _wrap(f"Thread {i}", _paragraphs_html("\n\n".join(paragraphs)), rng),
            )
        )
    for i in range(30):
        junk.append(
            (f"https://web.example.com/deals/{i}", _wrap("Deals", _paragraphs_html(synthetic.spam_page(rng)), rng))
        )
    for i in range(15):
        junk.append(
            (f"https://web.example.com/nav/{i}", _wrap("Menu", _paragraphs_html(synthetic.menu_page(rng)), rng))
        )
    for i in range(5):
        junk.append(
            (
                f"https://web.example.com/template/{i}",
                _wrap(
                    "Template", "<p>" + "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 12 + "</p>", rng
                ),
            )
        )
    base = prose_texts or ["The quick brown fox jumps over the lazy dog."]
    for i, payload in enumerate(synthetic.EXPLOITS):
        text = rng.choice(base)[:1500] + "\n\n" + payload
        junk.append((f"https://web.example.com/paste/{i}", _wrap(f"Paste {i}", _paragraphs_html(text), rng)))
    for i in range(8):
        text = rng.choice(base)[:800] + "\n\n" + synthetic.toxic_text(rng, 8)
        junk.append((f"https://web.example.com/comments/{i}", _wrap("Comments", _paragraphs_html(text), rng)))

    out.mkdir(parents=True, exist_ok=True)
    # Round-robin over shards after a seeded shuffle: a copy lands in another shard than its
    # original most of the time, so deduplication must work across shards.
    everything = originals + junk
    rng.shuffle(everything)
    for shard in range(n_shards):
        _write_warc(out / f"crawl-{shard:03d}.warc.gz", everything[shard::n_shards], seed + shard)

    code_rows = [
        {
            "id": f"stdlib/{p.name}",
            "text": p.read_text(errors="replace"),
            "domain": "code",
            "url": f"https://code.example.org/cpython/Lib/{p.name}",
        }
        for p in _stdlib_modules(max_code_files)
    ]
    with atomic_path(out / "code-000.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in code_rows))

    # Corrupt inputs: the run must count them and go on.
    broken = out / "broken-000.warc.gz"
    _write_warc(broken, junk[:6], seed + 99)
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) * 2 // 3])
    (out / "broken-001.jsonl").write_bytes(
        b'{"id": "ok-1", "text": "A valid row.", "domain": "web"}\n{"id": "bad-1", "text": \n'
        b'{"id": "bad-2", "text": "\xff\xfe not utf-8"}\n'
    )
    write_json(out / "_SUCCESS", {"pages": len(everything), "code_files": len(code_rows), "seed": seed})
    log.info("built sample input at %s: %d pages, %d code files", out, len(everything), len(code_rows))
    return out
