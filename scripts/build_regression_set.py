"""Build the curation regression set: a gzipped WARC of real text nobody on this project wrote.

    .venv/bin/python scripts/build_regression_set.py OUT_DIR [--scale 1.0]

Sources already on a Debian machine (scripts/setup.sh installs the German/French/Spanish
manual pages): HTML documentation under /usr/share/doc, README files, licence texts under
/usr/share/common-licenses and the per-package copyright files (which repeat the same few
licences: real, redundant near-duplicates), manual pages in English, German, French and
Spanish. Mirrors add the redundancy a crawl sees: the same page under a second URL with its
own header and a handful of words changed.

Writes ``OUT_DIR/crawl/regression.warc.gz`` (the pipeline's input) and ``OUT_DIR/manifest.jsonl``:
one row per record with ``url``, ``kind`` (doc, doc_index, readme, licence, copyright,
man, mirror), ``lang``, ``clean`` (a documentation page of real prose, see ``is_clean``) and
``text`` (what the pipeline's extractor sees, for the test's brute-force Jaccard).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import re
import sys
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_pipeline.extract import extract_text  # noqa: E402

DOC = Path("/usr/share/doc")
LICENSES = Path("/usr/share/common-licenses")
MAN = Path("/usr/share/man")
_SENTENCE_LINE = re.compile(r"[.!?:;)]$")


def _read(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8", "replace")


def is_clean(text: str) -> bool:
    """A documentation page of real prose: >= 250 words, most of them in sentence lines.

    Independent of the filters under test: it looks only at how much of the page is running text.
    """
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    words = sum(len(ln.split()) for ln in lines)
    prose = sum(len(ln.split()) for ln in lines if len(ln.split()) >= 8 and _SENTENCE_LINE.search(ln))
    return words >= 250 and prose / words >= 0.6


def _unescape(line: str) -> str:
    line = re.sub(r"\\f(?:\[[^\]]*\]|\(..|.)", "", line)
    line = re.sub(r"\\\*?\((..)|\\\[(\w+)\]", " ", line)
    return line.replace("\\-", "-").replace("\\&", "").replace("\\e", "\\").replace("\\ ", " ")


def untroff(source: str) -> str:
    """Manual-page source to plain text: requests dropped or unwrapped, escapes resolved."""
    out: list[str] = []
    for line in map(_unescape, source.splitlines()):
        if line.startswith(('.\\"', "'\\\"", '\\"')):
            continue
        if line.startswith((".", "'")):
            request, _, rest = line[1:].partition(" ")
            if request in ("SH", "SS"):
                out.extend(["", rest.strip('"'), ""])
            elif request in ("B", "I", "BR", "IR", "RB", "BI", "IB", "RI", "TP", "IP", "UR"):
                out.append(rest.replace('"', ""))
            elif request in ("PP", "P", "LP", "sp", "br"):
                out.append("")
            continue
        out.append(line)
    text = "\n".join(out)
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return "\n\n".join(p for p in paragraphs if p)


def _html(title: str, text: str, site: str) -> bytes:
    paras = "".join(f"<p>{p}</p>" for p in re.split(r"\n\s*\n", text) if p.strip())
    nav = "".join(f"<li><a href='/{m.lower()}'>{m}</a></li>" for m in ("Home", "Docs", "Download", "About"))
    return (
        f"<html><head><meta charset='utf-8'><title>{title}</title></head><body><nav><ul>{nav}</ul></nav>"
        f"<main><h1>{title}</h1>{paras}</main><footer>{site}</footer></body></html>"
    ).encode()


def _perturb(text: str, rng: random.Random, edits: int) -> str:
    words = text.split(" ")
    for _ in range(edits):
        i = rng.randrange(len(words))
        words[i] = rng.choice(["updated", "revised", "new", "2.1", "current", "see"])
    return " ".join(words)


def collect(scale: float = 1.0, seed: int = 0) -> list[dict]:
    """Records: url, kind, lang, content_type, payload (bytes), text (extracted)."""
    rng = random.Random(seed)
    records: list[dict] = []

    def add(url: str, kind: str, lang: str, payload: bytes, content_type: str, text: str) -> None:
        records.append(
            {"url": url, "kind": kind, "lang": lang, "content_type": content_type, "payload": payload, "text": text}
        )

    html_files = sorted(p for p in DOC.rglob("*.html") if p.is_file() and p.stat().st_size > 1500)
    for p in html_files[: int(400 * scale)]:
        raw = p.read_bytes()
        text = extract_text(raw.decode("utf-8", "replace")) or ""
        kind = "doc" if is_clean(text) else "doc_index"
        add(f"https://docs.example.net/{p.relative_to(DOC)}", kind, "en", raw, "text/html; charset=utf-8", text)

    readmes = sorted(p for p in DOC.glob("*/README*") if p.is_file() and p.stat().st_size > 1500)
    for p in readmes[: int(60 * scale)]:
        text = _read(p)
        add(f"https://src.example.org/{p.relative_to(DOC)}", "readme", "en", text.encode(), "text/plain", text)

    for p in sorted(q for q in LICENSES.iterdir() if q.is_file() and not q.is_symlink()):
        text = _read(p)
        add(f"https://licenses.example.org/{p.name}", "licence", "en", text.encode(), "text/plain", text)

    copyrights = sorted(DOC.glob("*/copyright"))
    for p in rng.sample(copyrights, min(len(copyrights), int(160 * scale))):
        text = _read(p)
        add(
            f"https://packages.example.org/{p.parent.name}/copyright",
            "copyright",
            "en",
            text.encode(),
            "text/plain",
            text,
        )

    for lang, dirname in (("en", "man1"), ("en", "man8"), ("de", "de"), ("fr", "fr"), ("es", "es")):
        files = sorted((MAN / dirname).rglob("*.gz") if lang != "en" else (MAN / dirname).glob("*.gz"))
        rng.shuffle(files)
        taken = 0
        for p in files:
            text = untroff(_read(p))
            if len(text.split()) < 200:
                continue
            add(f"https://man.example.org/{lang}/{p.name[:-3]}", "man", lang, text.encode(), "text/plain", text)
            taken += 1
            if taken == int(50 * scale if lang != "en" else 25 * scale):
                break

    # Mirrors: the same documentation page elsewhere, new boilerplate, a few words changed.
    sources = [r for r in records if r["kind"] in ("doc", "licence", "readme")]
    for i, r in enumerate(rng.sample(sources, min(len(sources), int(60 * scale)))):
        text = _perturb(r["text"], rng, edits=max(2, len(r["text"].split()) // 200))
        add(
            f"https://mirror{i % 3}.example.com/{i}",
            "mirror",
            r["lang"],
            _html(f"Mirror {i}", text, "mirror"),
            "text/html; charset=utf-8",
            text,
        )
    return records


def write(records: list[dict], out: Path) -> Path:
    (out / "crawl").mkdir(parents=True, exist_ok=True)
    warc = out / "crawl" / "regression.warc.gz"
    with open(warc, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for r in records:
            headers = StatusAndHeaders("200 OK", [("Content-Type", r["content_type"])], protocol="HTTP/1.1")
            writer.write_record(
                writer.create_warc_record(r["url"], "response", payload=io.BytesIO(r["payload"]), http_headers=headers)
            )
    with open(out / "manifest.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            row = {k: r[k] for k in ("url", "kind", "lang", "text")}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return warc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every source's count")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    records = collect(args.scale, args.seed)
    warc = write(records, args.out)
    kinds: dict[str, int] = {}
    for r in records:
        kinds[f"{r['kind']}/{r['lang']}"] = kinds.get(f"{r['kind']}/{r['lang']}", 0) + 1
    print(f"{len(records)} records -> {warc}: {json.dumps(kinds, sort_keys=True)}")


if __name__ == "__main__":
    main()
