"""The default curation pipeline on the regression set, measured the way the issue asks:
funnel, keep rate per source kind and language, de/fr/es precision, and near-duplicate removal against a
brute-force Jaccard clustering.

    .venv/bin/python scripts/build_regression_set.py /tmp/regset            # the full set
    .venv/bin/python scripts/regression_funnel.py /tmp/regset               # runs the pipeline twice

Run 1 is the default CLI (`python -m data_pipeline input=OUT/crawl output=OUT/default`). Run 2
keeps de/fr/es with every other step off, so every page the language detector labels reaches the
corpus with its label (precision = share of a label's pages whose manifest language agrees).
tests/data_pipeline/test_regression_set.py asserts floors on the same figures at half scale.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from lmforge.eval.data import read_jsonl
from lmforge.formats.corpus import iter_records

ROOT = Path(__file__).resolve().parents[1]
LANGID_ONLY = [
    "langid.languages=[de,fr,es]",
    "heuristics.domains=[]",
    "content.domains=[]",
    "quality.enabled=false",
    "dedup.near=false",
    "dedup.exact=false",
]


def run_pipeline(crawl: Path, out: Path, *overrides: str) -> float:
    """The CLI as a user runs it; returns its wall seconds, exits with its output when it fails."""
    start = time.perf_counter()
    env = {**os.environ, "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "data_pipeline", f"input={crawl}", f"output={out}", "report.plot=false", *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def _shingles(text: str, n: int = 5) -> frozenset[str]:
    words = re.findall(r"\w+", text.lower())
    return frozenset(" ".join(words[i : i + n]) for i in range(max(len(words) - n + 1, 1)))


def jaccard_clusters(texts: list[str], threshold: float = 0.8) -> list[list[int]]:
    """Brute force: every pair whose word 5-gram Jaccard >= threshold, then connected components.
    A pair whose sizes alone rule it out (min/max < threshold) is skipped: exact, not a heuristic.
    Independent of the pipeline's MinHash code, which it is the reference for."""
    sets = [_shingles(t) for t in texts]
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    order = sorted(range(len(sets)), key=lambda i: len(sets[i]))
    for a_pos, a in enumerate(order):
        for b in order[a_pos + 1 :]:
            if len(sets[a]) < threshold * len(sets[b]):
                break
            inter = len(sets[a] & sets[b])
            if inter / (len(sets[a]) + len(sets[b]) - inter) >= threshold:
                parent[find(a)] = find(b)
    groups: dict[int, list[int]] = {}
    for i in range(len(texts)):
        groups.setdefault(find(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def measure(regset: Path) -> dict:
    records = read_jsonl(regset / "manifest.jsonl")
    seconds = run_pipeline(regset / "crawl", regset / "default")
    langid_seconds = run_pipeline(regset / "crawl", regset / "langid", *LANGID_ONLY)
    funnel = json.loads((regset / "default" / "funnel.json").read_text())
    kept = Counter(row.get("url") for row in iter_records(regset / "default"))
    kinds = Counter(f"{r['kind']}/{r['lang']}" for r in records)
    kept_kinds = Counter(f"{r['kind']}/{r['lang']}" for r in records if kept[r["url"]])
    clean = [r for r in records if r["kind"] == "doc"]  # the builder's clean documentation pages
    truth = {r["url"]: r["lang"] for r in records}
    labelled = [(row.get("language"), truth.get(row.get("url"))) for row in iter_records(regset / "langid")]
    langid = {}
    for lang in ("de", "fr", "es"):
        said = [actual for label, actual in labelled if label == lang]
        langid[lang] = {
            "labelled": len(said),
            "correct": said.count(lang),
            "in_set": sum(v == lang for v in truth.values()),
            "precision": said.count(lang) / len(said) if said else None,
        }
    clusters = jaccard_clusters([r["text"] for r in records])
    redundant = sum(len(c) - 1 for c in clusters)
    survivors = sum(max(sum(kept[records[i]["url"]] > 0 for i in c) - 1, 0) for c in clusters)
    return {
        "records": len(records),
        "seconds": {"default": round(seconds, 1), "langid_only": round(langid_seconds, 1)},
        "funnel": funnel.get("steps", funnel),
        "keep_by_kind": {k: {"records": n, "kept": kept_kinds[k]} for k, n in sorted(kinds.items())},
        "clean_documentation": {"records": len(clean), "kept": sum(kept[r["url"]] > 0 for r in clean)},
        "langid": langid,
        "near_duplicates": {
            "clusters": len(clusters),
            "redundant_copies": redundant,
            "surviving_copies": survivors,
            "removed_share": 1 - survivors / redundant if redundant else None,
        },
    }


def print_tables(result: dict) -> None:
    print(f"\n{result['records']} records; default run {result['seconds']['default']} s\n")
    print("| step | docs in | docs out | top removal reasons |\n|---|---|---|---|")
    for name, step in result["funnel"].items():
        reasons = ", ".join(f"{k} {v}" for k, v in Counter(step.get("removed") or {}).most_common(3))
        print(f"| {name} | {step.get('docs_in')} | {step.get('docs_out')} | {reasons} |")
    print("\n| source kind / language | records | kept | keep rate |\n|---|---|---|---|")
    for kind, row in result["keep_by_kind"].items():
        print(f"| {kind} | {row['records']} | {row['kept']} | {row['kept'] / row['records']:.2f} |")
    clean = result["clean_documentation"]
    print(f"\nclean documentation pages kept: {clean['kept']} of {clean['records']}")
    print("\n| language | pages in the set | labelled | correct | precision |\n|---|---|---|---|---|")
    for lang, row in result["langid"].items():
        precision = "-" if row["precision"] is None else f"{row['precision']:.3f}"
        print(f"| {lang} | {row['in_set']} | {row['labelled']} | {row['correct']} | {precision} |")
    dup = result["near_duplicates"]
    print(
        f"\nnear-duplicates (brute-force Jaccard >= 0.8): {dup['clusters']} clusters, {dup['redundant_copies']} "
        f"redundant copies, {dup['surviving_copies']} survive: {dup['removed_share']:.3f} removed"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("regset", type=Path, help="scripts/build_regression_set.py's OUT_DIR")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not (args.regset / "manifest.jsonl").exists():
        sys.exit(f"{args.regset / 'manifest.jsonl'} not found: run scripts/build_regression_set.py {args.regset}")
    result = measure(args.regset)
    print_tables(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
