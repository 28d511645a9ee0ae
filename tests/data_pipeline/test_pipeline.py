"""End-to-end behaviour: crash + resume, corrupt input, Ray == local, mix ratios, configs."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from data_pipeline.config import to_pipeline_config
from data_pipeline.mix import copies, plan_mix
from data_pipeline.pipeline import run_pipeline
from lmforge.config_paths import conf_dir
from tests.support.pipeline_docs import fast_config, prose_doc, read_corpus, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def make_input(root: Path, n_shards: int, docs_per_shard: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    texts = []
    for s in range(n_shards):
        rows = []
        for i in range(docs_per_shard):
            if texts and rng.random() < 0.1:  # exact copies from earlier shards
                text = rng.choice(texts)
            else:
                text = prose_doc(rng, rng.randint(8, 20))
                texts.append(text)
            rows.append({"id": f"s{s}-{i}", "text": text, "domain": rng.choice(["web", "prose"])})
        write_jsonl(root / f"part{s:03d}.jsonl", rows)
    return root


def corpus_ids(out: Path) -> list[str]:
    return sorted(r["id"] for r in read_corpus(out))


def test_kill_9_then_rerun_equals_uninterrupted(tmp_path):
    inp = make_input(tmp_path / "in", n_shards=24, docs_per_shard=60)
    overrides = {"mix": {"targets": {"web": 0.5, "prose": 0.5, "code": 0.0}, "max_repeats": 2.0}}
    reference = run_pipeline(fast_config(inp, tmp_path / "ref", **overrides))
    expected = corpus_ids(reference)
    assert len(expected) == len(set(expected)) > 0

    out = tmp_path / "crashed"
    cfg = fast_config(inp, out, **overrides)
    cmd = [
        sys.executable,
        "-m",
        "data_pipeline",
        f"input={inp}",
        f"output={out}",
        "quality.enabled=false",
        "content.toxicity.train_classifier=false",
        "executor.num_workers=1",
        "report.plot=false",
        "report.progress=false",
        "mix.targets.web=0.5",
        "mix.targets.prose=0.5",
        "mix.targets.code=0.0",
        "mix.max_repeats=2.0",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    markers = Path(f"{out}.work") / "markers" / "process"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if markers.exists() and len(list(markers.glob("*.json"))) >= 3:
            break
        time.sleep(0.01)  # polling for a file, not timing the code
    assert proc.poll() is None, "the pipeline finished before it could be killed; enlarge the input"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(markers.glob("*.json")))
    assert 0 < done < 24, f"kill landed outside the process step ({done} markers)"

    resumed = run_pipeline(cfg)
    got = corpus_ids(resumed)
    assert got == expected  # same ids, and duplicates would show as a longer list
    assert (
        json.loads((resumed / "manifest.json").read_text())["counts"]
        == json.loads((reference / "manifest.json").read_text())["counts"]
    )


def test_corrupt_input_counted_reported_and_run_continues(tmp_path):
    inp = make_input(tmp_path / "in", n_shards=2, docs_per_shard=20)
    (inp / "bad.jsonl").write_bytes(b'{"id": "ok", "text": "x"}\n{not json\n{"id": "u", "text": "\xff"}\n')
    good = (inp / "part000.jsonl").read_bytes()
    import gzip

    packed = gzip.compress(good)
    (inp / "cut.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    out = run_pipeline(fast_config(inp, tmp_path / "out"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["read_errors"] == {"invalid_jsonl": 1, "undecodable_bytes": 1, "truncated_gzip": 1}
    funnel = json.loads((out / "funnel.json").read_text())["steps"]
    assert funnel["read"]["removed"] == manifest["read_errors"]
    assert manifest["total_docs"] > 0 and any("bad.jsonl:2" in e for e in manifest["corrupt_examples"])


def test_ray_executor_output_equals_local(tmp_path):
    inp = make_input(tmp_path / "in", n_shards=3, docs_per_shard=15)
    local = run_pipeline(fast_config(inp, tmp_path / "local"))
    ray_out = run_pipeline(fast_config(inp, tmp_path / "ray", executor={"kind": "ray", "num_workers": 1}))
    assert read_corpus(local) == read_corpus(ray_out)
    assert len(read_corpus(local)) > 0


def test_mix_hits_target_ratios_and_caps_repeats():
    available = {"web": 9000, "prose": 600, "code": 2400}
    plan = plan_mix(available, {"web": 0.5, "prose": 0.3, "code": 0.2}, max_repeats=3)
    assert plan.factors["prose"] == 3  # would need 6x; capped
    written = {d: sum(copies(f"{d}-{i}", plan.factors[d], 0) for i in range(n)) for d, n in available.items()}
    total = sum(written.values())
    assert (
        abs(
            written["web"] / total - 9000 * plan.factors["web"] / sum(available[d] * plan.factors[d] for d in available)
        )
        < 0.01
    )
    assert abs(written["code"] - 0.2 * 12000) / (0.2 * 12000) < 0.03
    assert written["prose"] == 1800


def test_every_pipeline_config_composes_and_rejects_typos():
    names = sorted(p.stem for p in (conf_dir() / "pipeline").glob("*.yaml"))
    assert "default" in names and "ray" in names
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        for name in names:
            cfg = compose(config_name="pipeline", overrides=[f"pipeline={name}"])
            typed = to_pipeline_config(cfg)
            assert typed.dedup.bands * typed.dedup.rows == typed.dedup.num_perm
            assert set(OmegaConf.to_container(cfg)) <= set(OmegaConf.to_container(OmegaConf.structured(typed)))
        # `python -m data_pipeline` and `run_pipeline()` must mean the same run.
        assert to_pipeline_config(compose(config_name="pipeline")) == to_pipeline_config(None)
        with pytest.raises(Exception, match="bandz"):
            compose(config_name="pipeline", overrides=["dedup.bandz=3"])
        with pytest.raises(Exception):
            compose(config_name="pipeline", overrides=["dedup.bands=abc"])


@pytest.mark.slow
def test_embedded_default_run(tmp_path):
    """The no-argument run: every step removes something and the corpus has all three domains."""
    out = run_pipeline(None, output=str(tmp_path / "corpus"), report={"plot": True, "progress": False})
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["counts"]) == {"web", "prose", "code"}
    steps = json.loads((out / "funnel.json").read_text())["steps"]
    for step in ("read", "langid", "heuristics", "malware", "toxicity", "quality", "dedup"):
        assert steps[step]["removed"], step
    assert steps["pii"]["modified"]
    assert (out / "funnel.png").stat().st_size > 1000
    for domain, target in manifest["target_ratios"].items():
        assert abs(manifest["achieved_ratios"][domain] - target) < 0.05


def test_mix_rescales_targets_over_the_domains_present():
    # A one-domain crawl: nothing is thrown away to make room for absent domains.
    plan = plan_mix({"web": 132}, {"web": 0.5, "prose": 0.3, "code": 0.2}, max_repeats=3)
    assert plan.factors == {"web": 1.0} and plan.target_ratios == {"web": 1.0}
    assert len(plan.warnings) == 2 and all("no documents" in w for w in plan.warnings)
    # Two of three present: their weights 0.5 and 0.2 are renormalised to 5/7 and 2/7.
    plan = plan_mix({"web": 700, "code": 700}, {"web": 0.5, "prose": 0.3, "code": 0.2}, max_repeats=3)
    assert plan.target_ratios == {"code": round(2 / 7, 4), "web": round(5 / 7, 4)}
    assert plan.target_docs["web"] == pytest.approx(1000) and plan.target_docs["code"] == pytest.approx(400)
    # No targeted domain present: everything is kept once, and the plan says why.
    plan = plan_mix({"news": 10}, {"web": 1.0}, max_repeats=3)
    assert plan.factors == {"news": 1.0} and "kept every document once" in plan.warnings[-1]


def test_quoted_glob_input_is_expanded(tmp_path):
    from data_pipeline.pipeline import _inputs

    for name in ("b.jsonl", "a.jsonl", "c.txt"):
        (tmp_path / name).write_text('{"text": "x"}\n')
    cfg = to_pipeline_config(None, input=f"{tmp_path}/*.jsonl,{tmp_path}/c.txt")
    assert _inputs(cfg, None) == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), str(tmp_path / "c.txt")]
    with pytest.raises(FileNotFoundError, match=r"pipeline input not found: .*nothing/\*\.warc\.gz"):
        run_pipeline(fast_config(f"{tmp_path}/nothing/*.warc.gz", tmp_path / "out"))


def test_toxicity_classifier_is_trained_only_when_some_domain_uses_it():
    from data_pipeline.pipeline import _trains_toxicity

    assert _trains_toxicity(to_pipeline_config({}))
    assert not _trains_toxicity(to_pipeline_config({"content": {"domains": []}}))  # the filter sees no page
    assert _trains_toxicity(to_pipeline_config({"content": {"domains": ["web"]}}))
    assert not _trains_toxicity(to_pipeline_config({"content": {"toxicity": {"classifier_path": "/m"}}}))


def test_shard_tasks_validate_the_config_once_per_process():
    from data_pipeline.pipeline import _task_config, _validated

    _validated.cache_clear()
    cfg = {"input": "a", "output": "b", "heuristics": {"c4": {"enabled": False}}}
    first, second = _task_config(cfg), _task_config(dict(cfg))
    assert _validated.cache_info().misses == 1 and _validated.cache_info().hits == 1
    assert first == second and first is not second  # a copy: one task cannot change the next one's config
    assert first.heuristics.c4.enabled is False and first.output == "b"
