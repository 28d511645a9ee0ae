"""The default pipeline on the regression set (scripts/build_regression_set.py): real text from
this machine that nobody on the project wrote, with real and mirrored near-duplicates."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.data_pipeline.regression_corpus import builder

ROOT = Path(__file__).resolve().parents[2]
# Measured floor for clean documentation pages kept by the default run (issue #14 asks 0.70).
# 0.32 before the documentation profile (heuristics.documentation, docs/curation.md): the
# within-page repetition rules removed 37 of 74 templated API-reference pages. What still
# removes them: the quality model (13), exact duplicates (2 pages installed twice), one page
# over Gopher's 100k-word limit.
MIN_CLEAN_DOC_KEEP = 0.75  # measured 0.78 (58 of 74) on 2026-12-04


def _run(crawl: Path, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "data_pipeline", f"input={crawl}", f"output={out}", "report.plot=false", *overrides]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _corpus_rows(out: Path) -> list[dict]:
    rows = []
    for path in sorted(out.rglob("*.jsonl*")):
        if "rejects" in path.parts:
            continue
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    return rows


def _shingles(text: str, n: int = 5) -> frozenset[str]:
    words = re.findall(r"\w+", text.lower())
    return frozenset(" ".join(words[i : i + n]) for i in range(max(len(words) - n + 1, 1)))


def jaccard_clusters(texts: list[str], threshold: float = 0.8) -> list[list[int]]:
    """Brute force: every pair whose 5-gram Jaccard >= threshold, then connected components.
    Pairs whose sizes alone rule it out (min/max < threshold) are skipped: exact, not a heuristic."""
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


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("regression")
    module = builder()
    records = module.collect(scale=0.5)
    module.write(records, tmp)
    default = _run(tmp / "crawl", tmp / "out")
    # Language identification alone: the same default detector, keeping de/fr/es so that
    # every page it labels reaches the corpus with its label.
    langid = _run(
        tmp / "crawl",
        tmp / "langid",
        "langid.languages=[de,fr,es]",
        "heuristics.domains=[]",
        "content.domains=[]",
        "quality.enabled=false",
        "dedup.near=false",
        "dedup.exact=false",
    )
    return records, tmp, default, langid


def test_default_run_exits_0_and_keeps_clean_documentation(regression):
    records, tmp, default, _ = regression
    assert default.returncode == 0, default.stderr[-3000:]
    kept = {r.get("url") for r in _corpus_rows(tmp / "out")}
    clean = [r["url"] for r in records if r["kind"] == "doc"]
    assert len(clean) >= 30
    keep_rate = sum(u in kept for u in clean) / len(clean)
    by_kind = Counter(r["kind"] for r in records if r["url"] in kept)
    print(f"clean documentation kept: {keep_rate:.2f}; kept by kind: {dict(by_kind)}")
    assert keep_rate >= MIN_CLEAN_DOC_KEEP


def test_german_french_spanish_identified_with_98_percent_precision(regression):
    records, tmp, _, langid = regression
    assert langid.returncode == 0, langid.stderr[-3000:]
    truth = {r["url"]: r["lang"] for r in records}
    rows = _corpus_rows(tmp / "langid")
    for lang in ("de", "fr", "es"):
        labelled = [truth[r["url"]] for r in rows if r.get("language") == lang]
        actual = sum(1 for v in truth.values() if v == lang)
        assert labelled, lang
        precision = labelled.count(lang) / len(labelled)
        assert precision >= 0.98, (lang, precision, Counter(labelled))
        # and most are found (some translated pages are mostly untranslated option lists)
        assert labelled.count(lang) >= 0.7 * actual, (lang, labelled.count(lang), actual)


def test_redundant_near_duplicates_removed(regression):
    records, tmp, default, _ = regression
    assert default.returncode == 0
    clusters = jaccard_clusters([r["text"] for r in records])
    redundant = sum(len(c) - 1 for c in clusters)
    assert redundant >= 20  # real copyright-file repeats and mirrors
    kept = Counter(r.get("url") for r in _corpus_rows(tmp / "out"))
    survivors = sum(max(sum(kept[records[i]["url"]] > 0 for i in c) - 1, 0) for c in clusters)
    assert 1 - survivors / redundant >= 0.90, (survivors, redundant)
    # Near-duplicate removal itself ran on them, not only the filters before it.
    funnel = json.loads((tmp / "out" / "funnel.json").read_text())
    steps = funnel.get("steps", funnel)
    assert sum(steps["dedup"]["removed"].values()) >= 1
