"""Throughput of each data_pipeline step, end to end, and against datatrove on the same input.

    .venv/bin/python scripts/bench_pipeline.py --docs 10000

Each ratio is printed as the median over ``--repeats`` interleaved runs (ours, then the
baseline, per repeat), with its min and max. The corpus is generated (seeded): reference-prose paragraphs recombined into articles,
with spam, menus, foreign-language pages, PII and near-duplicates mixed in, wrapped in
HTML with site boilerplate. Every figure is docs/s on one core, measured in this process;
datatrove (if installed) runs its own filters and MinHash signature code on the same docs.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_pipeline import synthetic  # noqa: E402
from data_pipeline.content import MalwareConfig, MalwareFilter, PiiConfig, PiiFilter, ToxicityConfig, ToxicityFilter  # noqa: E402
from data_pipeline.dedup import DedupConfig, find_duplicates, normalize, shingles, signatures  # noqa: E402
from data_pipeline.extract import extract_text  # noqa: E402
from data_pipeline.heuristics import HeuristicFilter, HeuristicsConfig  # noqa: E402
from data_pipeline.langid import LanguageDetector  # noqa: E402
from data_pipeline.quality import reference_prose  # noqa: E402
from lmforge.formats.corpus import Document  # noqa: E402


def make_corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    paragraphs = [p for chunk in reference_prose(10_000, chunk_chars=400) for p in chunk.split("\n\n") if len(p) > 80]
    docs: list[str] = []
    while len(docs) < n:
        r = rng.random()
        if r < 0.70:
            docs.append("\n\n".join(rng.sample(paragraphs, k=rng.randint(3, 8))))
        elif r < 0.78 and docs:
            docs.append(synthetic.perturb_words(rng.choice(docs), rng, 3))
        elif r < 0.84:
            docs.append(synthetic.spam_page(rng, 20))
        elif r < 0.89:
            docs.append(synthetic.foreign_page(rng.choice(["de", "fr", "es"]), rng))
        elif r < 0.94:
            docs.append("\n\n".join(rng.sample(paragraphs, k=3) + [synthetic.pii_paragraph(rng)]))
        else:
            docs.append(synthetic.menu_page(rng))
    return docs


def to_html(text: str, i: int) -> str:
    body = "".join(f"<p>{p}</p>" for p in text.split("\n\n"))
    menu = "".join(f"<li><a href='/{m}'>{m}</a></li>" for m in synthetic.MENU_ITEMS)
    return (
        f"<html><head><title>Doc {i}</title></head><body><nav><ul>{menu}</ul></nav><main><article>{body}"
        f"</article></main><footer>© 2024 Example | Privacy Policy</footer></body></html>"
    )


def rate(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """One call, timed; callers warm up (model/tokenizer loading) before."""
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    return n / seconds, seconds


def our_filter_chain(texts: Sequence[str]) -> None:
    chain = HeuristicFilter(HeuristicsConfig())  # Gopher repetition -> Gopher quality -> C4 -> FineWeb
    for text in texts:
        chain(Document(id="", text=text, source="", domain="web"))


def datatrove_filters() -> list:
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    return [
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(filter_curly_bracket=False),
        FineWebQualityFilter(),
    ]


def datatrove_filter_chain(texts: Sequence[str], filters: list) -> None:
    from datatrove.data import Document as DtDocument

    for i, text in enumerate(texts):
        doc = DtDocument(text=text, id=str(i))
        for f in filters:
            verdict = f.filter(doc)
            if verdict is False or (isinstance(verdict, tuple) and verdict[0] is False):
                break


def datatrove_signature_step(tmp: str):
    import xxhash
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    from datatrove.utils.hashes import xxhash as dt_xxhash

    # datatrove 0.10.1 passes str to xxhash 4.x, which wants bytes; encode so its default
    # (xxhash, 64-bit) path runs as designed instead of the slower sha1 fallback.
    dt_xxhash.xxhash64 = lambda data: xxhash.xxh64_intdigest(data.encode() if isinstance(data, str) else data)
    import datatrove.utils.hashing as dt_hashing

    dt_hashing.xxhash64 = dt_xxhash.xxhash64
    return MinhashDedupSignature(tmp, MinhashConfig(num_buckets=14, hashes_per_bucket=8, n_grams=5))


def datatrove_signatures(texts: Sequence[str], step) -> None:
    for text in texts:
        shingles_ = step.get_shingles(text)
        if shingles_.size:  # datatrove's run() skips documents shorter than one n-gram the same way
            step.get_signature(shingles_)


def datasketch_signatures(texts: Sequence[str]) -> None:
    from datasketch import MinHash

    for text in texts:
        m = MinHash(num_perm=112, seed=1)
        m.update_batch([s.encode() for s in shingles(normalize(text), 5)])


def write_warcs(html: Sequence[str], folder: Path, shards: int = 8) -> None:
    import io

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    folder.mkdir(parents=True, exist_ok=True)
    n = len(html)
    per_shard = (n + shards - 1) // shards
    for s in range(shards):
        with open(folder / f"bench-{s:02d}.warc.gz", "wb") as f:
            writer = WARCWriter(f, gzip=True)
            for i in range(s * per_shard, min(n, (s + 1) * per_shard)):
                headers = StatusAndHeaders(
                    "200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1"
                )
                record = writer.create_warc_record(
                    f"https://bench.example.com/{i}",
                    "response",
                    payload=io.BytesIO(html[i].encode()),
                    http_headers=headers,
                )
                writer.write_record(record)


def our_pipeline(inp: Path, out: Path, workers: int) -> None:
    """The same steps datatrove runs below: content filters and the quality model are off.

    The worker pool's forkserver outlives a run inside one process; it is stopped first so that
    every timed run pays its start-up (importing the pipeline, loading the kernels) as a CLI
    run does."""
    import multiprocessing.forkserver

    from data_pipeline.pipeline import run_pipeline

    multiprocessing.forkserver._forkserver._stop()

    run_pipeline(
        {
            "input": str(inp),
            "output": str(out),
            "executor": {"kind": "local", "num_workers": workers},
            "report": {"plot": False, "progress": False},
            "content": {"domains": []},
            "quality": {"enabled": False},
            "mix": {"targets": {"web": 1.0, "prose": 0, "code": 0}},
        }
    )


def datatrove_pipeline(inp: Path, out: Path, workers: int) -> None:
    """read -> extract (resiliparse, as ours) -> langid (pycld2, as ours) -> the 4 filters ->
    MinHash signatures -> write. Two simplifications favour datatrove: it reads the same pages
    from JSONL (its WarcReader needs cchardet and libmagic), and only the signature stage of
    its 4-stage MinHash dedup runs."""
    from datatrove.data import Document as DtDocument
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.extractors.base import BaseExtractor
    from datatrove.pipeline.filters import LambdaFilter

    class ResiliparseExtractor(BaseExtractor):
        def __init__(self) -> None:
            super().__init__(timeout=1)

        def extract(self, text: str) -> str:
            return extract_text(text)

    cld2 = LanguageDetector("pycld2")

    def english(doc) -> bool:
        lang, score = cld2.detect(doc.text[:10_000])
        return lang == "en" and score >= 0.65

    files = sorted(inp.glob("*.jsonl"))

    def read(data, rank: int = 0, world_size: int = 1):  # stdlib JSON: its reader wants orjson
        for path in files[rank::world_size]:
            with open(path) as f:
                for line in f:
                    row = json.loads(line)
                    yield DtDocument(text=row["text"], id=row["id"])

    def write(data, rank: int = 0, world_size: int = 1):
        (out / "corpus").mkdir(parents=True, exist_ok=True)
        with open(out / "corpus" / f"{rank:05d}.jsonl", "w") as f:
            for doc in data:
                f.write(json.dumps({"id": doc.id, "text": doc.text}) + "\n")
                yield doc

    steps = [
        read,
        ResiliparseExtractor(),
        LambdaFilter(english),
        *datatrove_filters(),
        write,
        datatrove_signature_step(str(out / "sigs")),
    ]
    LocalPipelineExecutor(steps, tasks=8, workers=workers, logging_dir=str(out / "logs")).run()


def spread(values: list[float]) -> str:
    values = sorted(values)
    return f"{statistics.median(values):8.1f}x  (min {values[0]:.1f}, max {values[-1]:.1f}, n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--baseline-docs", type=int, default=2_000, help="docs for the slow baselines")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved ours/datatrove repeats per ratio")
    parser.add_argument("--skip-e2e", action="store_true", help="leave out the whole-pipeline comparison")
    parser.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    texts = make_corpus(args.docs)
    html = [to_html(t, i) for i, t in enumerate(texts)]
    n, nb = len(texts), min(args.baseline_docs, len(texts))
    rows: list[tuple[str, str, float, float]] = []  # step, impl, docs/s, seconds

    def add(step: str, impl: str, fn: Callable[[], object], count: int) -> float:
        docs_per_s, seconds = rate(fn, count)
        rows.append((step, impl, docs_per_s, seconds))
        print(f"{step:<22}{impl:<28}{docs_per_s:>12,.0f} docs/s  ({count} docs, {seconds:.2f}s)", flush=True)
        return docs_per_s

    our_filter_chain(texts[-20:])  # warm-ups (imports, regex compilation)
    signatures(texts[-20:], DedupConfig())
    extract_text(html[0], "trafilatura")
    add("extract", "resiliparse", lambda: [extract_text(h) for h in html], n)
    add("extract", "trafilatura", lambda: [extract_text(h, "trafilatura") for h in html[:nb]], nb)
    cld2, langid3 = LanguageDetector("pycld2"), LanguageDetector("py3langid")
    add("langid", "pycld2", lambda: [cld2.detect(t) for t in texts], n)
    add("langid", "py3langid", lambda: [langid3.detect(t) for t in texts[:nb]], nb)
    pii, mal = PiiFilter(PiiConfig()), MalwareFilter(MalwareConfig())
    tox = ToxicityFilter(ToxicityConfig(train_classifier=False))
    add(
        "content filters",
        "pii+malware+toxicity words",
        lambda: [(pii.find(t), mal(Document("", t, "", "web")), tox(Document("", t, "", "web"))) for t in texts],
        n,
    )
    hashes, sigs = signatures(texts, DedupConfig())
    add("dedup clustering", "LSH bands + components", lambda: find_duplicates(hashes, sigs, DedupConfig()), n)
    ds_sigs = add("minhash signatures", "datasketch", lambda: datasketch_signatures(texts[:nb]), nb)

    ratios: dict[str, list[float]] = {"minhash signatures vs datatrove": [], "filter chain vs datatrove": []}
    ratios["minhash signatures vs datasketch"] = []
    try:
        import datatrove  # noqa: F401

        have_datatrove = True
    except ImportError as err:
        print(f"datatrove baseline skipped: {err}")
        have_datatrove = False
    with tempfile.TemporaryDirectory() as tmp:
        if have_datatrove:
            step = datatrove_signature_step(tmp)
            datatrove_signatures(texts[-20:], step)  # warm-up: loads the spaCy tokenizer
            filters = datatrove_filters()
            datatrove_filter_chain(texts[-20:], filters)
        # Interleaved: ours, then datatrove, per repeat, so load changes hit both sides alike.
        for _ in range(args.repeats):
            ours_sigs = add("minhash signatures", "ours (numba, one pass)", lambda: signatures(texts, DedupConfig()), n)
            ratios["minhash signatures vs datasketch"].append(ours_sigs / ds_sigs)
            ours_filters = add("filter chain", "ours (gopher+c4+fineweb)", lambda: our_filter_chain(texts), n)
            if have_datatrove:
                dt_sigs = add("minhash signatures", "datatrove", lambda: datatrove_signatures(texts[:nb], step), nb)
                dt_filters = add(
                    "filter chain",
                    "datatrove (same 4 filters)",
                    lambda: datatrove_filter_chain(texts[:nb], filters),
                    nb,
                )
                ratios["minhash signatures vs datatrove"].append(ours_sigs / dt_sigs)
                ratios["filter chain vs datatrove"].append(ours_filters / dt_filters)

    if not args.skip_e2e:
        ratios["whole pipeline vs datatrove"] = []
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            write_warcs(html, root / "in")
            (root / "in_jsonl").mkdir()
            for s in range(8):
                with open(root / "in_jsonl" / f"bench-{s:02d}.jsonl", "w") as f:
                    for i in range(s, n, 8):
                        f.write(json.dumps({"id": str(i), "text": html[i]}) + "\n")
            for r in range(args.repeats):
                label = f"end to end ({args.workers} workers)"
                ours = add(label, "run_pipeline", lambda: our_pipeline(root / "in", root / f"ours{r}", args.workers), n)
                if have_datatrove:
                    theirs = add(
                        label,
                        "datatrove, same extractor",
                        lambda: datatrove_pipeline(root / "in_jsonl", root / f"dt{r}", args.workers),
                        n,
                    )
                    ratios["whole pipeline vs datatrove"].append(ours / theirs)

    print("\nratios (ours / baseline, same docs, same process; median over interleaved repeats)")
    for name, values in ratios.items():
        if values:
            print(f"  {name:<36}{spread(values)}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
