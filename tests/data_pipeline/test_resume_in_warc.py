"""One big WARC is split into byte ranges at gzip member boundaries and checkpointed every N
records: killing the driver kills its workers, and a rerun resumes inside the file, matching an
uninterrupted run."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from data_pipeline.extract import HtmlExtractor
from data_pipeline.pipeline import run_pipeline
from data_pipeline.readers import DomainLabeler, ReadStats, discover_shards, read_shard, warc_split_points
from tests.data_pipeline.real_crawl import build_real_crawl
from tests.support.pipeline_docs import fast_config, read_corpus

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def big_crawl(tmp_path_factory) -> dict:
    return build_real_crawl(tmp_path_factory.mktemp("big_crawl"), n_pages=120)


def ids(shard) -> list[str]:
    return [d.id for d in read_shard(shard, DomainLabeler([], "web"), ReadStats())]


def test_byte_ranges_cover_every_record_once(big_crawl, tmp_path):
    warc = big_crawl["warc"]
    (whole,) = discover_shards([warc])
    expected = ids(whole)
    assert len(expected) == big_crawl["records"]
    for split in (30_000, 100_000, 400_000):
        units = discover_shards([warc], split_bytes=split)
        assert len(units) > 1 and [u.start for u in units] == warc_split_points(warc, split)
        assert [i for u in units for i in ids(u)] == expected, split
    # One gzip member for the whole file: no boundary to seek to, so one unit that reads it all.
    single = tmp_path / "single.warc.gz"
    single.write_bytes(gzip.compress(gzip.decompress(warc.read_bytes())))
    (unit,) = discover_shards([single], split_bytes=30_000)
    assert ids(unit) == expected


def test_jsonl_byte_ranges_cover_every_line_once(big_crawl):
    jsonl = big_crawl["jsonl"]
    (whole,) = discover_shards([jsonl])
    labeler, stats = DomainLabeler([], "web"), ReadStats()
    expected = [d.text for d in read_shard(whole, labeler, stats)]
    for split in (1, 5_000, 50_000, jsonl.stat().st_size // 2):
        units = discover_shards([jsonl], split_bytes=split)
        assert len(units) > 1 and units[0].start == 0
        assert [d.text for u in units for d in read_shard(u, labeler, stats)] == expected, split
    assert not stats.corrupt


def cli_args(inp: Path, out: Path, split: int) -> list[str]:
    return [
        f"input={inp}",
        f"output={out}",
        "quality.enabled=false",
        "content.toxicity.train_classifier=false",
        "mix.targets.web=1.0",
        "mix.targets.prose=0.0",
        "mix.targets.code=0.0",
        "mix.max_repeats=1.0",
        f"split_bytes={split}",
        "checkpoint_every=5",
        "executor.num_workers=2",
        "report.plot=false",
        "report.progress=false",
    ]


def test_kill_driver_kills_workers_and_rerun_resumes_inside_the_warc(big_crawl, tmp_path, monkeypatch):
    warc = big_crawl["warc"]
    # Two ranges of ~60 records, checkpointed every 5: a range is still half done for a while after
    # its first checkpoint, so the kill lands inside one however fast the machine is.
    split = warc.stat().st_size // 2 + 1
    overrides = {"split_bytes": split, "checkpoint_every": 5}
    reference = run_pipeline(fast_config(warc, tmp_path / "ref", **overrides))
    expected = sorted(r["id"] for r in read_corpus(reference))
    assert expected

    out = tmp_path / "crashed"
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "data_pipeline", *cli_args(warc, out, split)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    work = Path(f"{out}.work")

    def partial_units() -> list[str]:
        chunks = work / "markers" / "chunks"
        done = work / "markers" / "process"
        if not chunks.exists():
            return []
        return [d.name for d in chunks.iterdir() if any(d.glob("*.json")) and not (done / f"{d.name}.json").exists()]

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not partial_units():
        time.sleep(0.005)  # polling for a checkpoint file, not timing the code
    driver = psutil.Process(proc.pid)
    workers = driver.children(recursive=True)
    assert proc.poll() is None and workers, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive, f"orphaned workers still running: {[p.cmdline() for p in alive]}"
    interrupted = partial_units()
    # Orphans that kept running would have finished their ranges (seen before the watchdog existed).
    assert interrupted, "no byte range left half done: the kill missed, or orphaned workers finished it"

    calls = []
    original = HtmlExtractor.__call__
    monkeypatch.setattr(HtmlExtractor, "__call__", lambda self, doc: calls.append(doc.id) or original(self, doc))
    resumed = run_pipeline(fast_config(warc, out, **overrides))  # one worker: runs in this process
    assert sorted(r["id"] for r in read_corpus(resumed)) == expected
    assert len(calls) < big_crawl["records"]  # checkpointed records were not processed again

    def counts(corpus: Path) -> dict:
        steps = json.loads((corpus / "funnel.json").read_text())["steps"]
        return {k: {f: v[f] for f in ("docs_in", "docs_out", "removed", "modified")} for k, v in steps.items()}

    assert counts(resumed) == counts(reference)
    assert not list((work / "markers" / "chunks").glob("*/*.json"))  # checkpoints folded into shard files
