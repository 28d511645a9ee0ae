"""Write a large JSONL crawl stand-in ({"id", "url", "text"} per line) for scale runs of the pipeline.

The mix is scripts/bench_pipeline.py's: 70% prose built from the bundled reference paragraphs, and
near-copies, spam, menus, German/French/Spanish pages and leaked PII planted at fixed rates. It
streams, so a gigabyte needs no gigabyte of memory, and the same seed gives the same bytes.

    python scripts/make_jsonl_corpus.py /data/big.jsonl --mb 1024
    python -m data_pipeline input=/data/big.jsonl output=/data/big_corpus
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from data_pipeline import synthetic  # noqa: E402
from data_pipeline.quality import reference_prose  # noqa: E402


def documents(seed: int):
    """An endless stream of (kind, text)."""
    rng = random.Random(seed)
    paragraphs = [p for chunk in reference_prose(10_000, chunk_chars=400) for p in chunk.split("\n\n") if len(p) > 80]
    recent: deque[str] = deque(maxlen=1000)  # near-copies are drawn from the last thousand documents
    while True:
        r = rng.random()
        if r < 0.70:
            kind, text = "prose", "\n\n".join(rng.sample(paragraphs, k=rng.randint(3, 8)))
        elif r < 0.78 and recent:
            kind, text = "near_copy", synthetic.perturb_words(rng.choice(recent), rng, 3)
        elif r < 0.84:
            kind, text = "spam", synthetic.spam_page(rng, 20)
        elif r < 0.89:
            kind, text = "foreign", synthetic.foreign_page(rng.choice(["de", "fr", "es"]), rng)
        elif r < 0.94:
            kind, text = "pii", "\n\n".join(rng.sample(paragraphs, k=3) + [synthetic.pii_paragraph(rng)])
        else:
            kind, text = "menu", synthetic.menu_page(rng)
        recent.append(text)
        yield kind, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--mb", type=float, default=1024, help="stop once the file reaches this many MiB")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    limit = int(args.mb * 2**20)
    counts: dict[str, int] = {}
    written = 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for i, (kind, text) in enumerate(documents(args.seed)):
            if written >= limit:
                break
            line = json.dumps({"id": f"doc-{i:08d}", "url": f"https://site{i % 997}.example.org/p/{i}", "text": text})
            f.write(line + "\n")
            written += len(line.encode()) + 1
            counts[kind] = counts.get(kind, 0) + 1
    total = sum(counts.values())
    print(
        f"{args.out}: {written / 2**20:.1f} MiB, {total:,} documents: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))
    )


if __name__ == "__main__":
    main()
