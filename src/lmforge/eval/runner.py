"""Run an evaluation suite end to end: load the model, run each task, check the gate, write
the report. `src/eval.py` is the Hydra entry; this is the part worth testing."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from lmforge.eval.binding import (
    checkpoint_lineage,
    checkpoint_sha256,
    content_sha256,
    parent_step,
    report_digest,
    report_summary,
    suite_sha256,
)
from lmforge.eval.cache import RequestCache
from lmforge.eval.gate import evaluate_release
from lmforge.eval.judge import JudgeConfig
from lmforge.eval.lm import EvalLM
from lmforge.eval.loading import EvalModel, load_checkpoint, random_model, smoke_tokenizer
from lmforge.eval.metric_stats import task_stats
from lmforge.eval.release_policy import load_policy
from lmforge.eval.report import load_compare, log_wandb, write_report
from lmforge.eval.schema import check_suite, selected_tasks, task_config_class, task_options
from lmforge.eval.tasks import get_task
from lmforge.formats.eval_report import read_report
from lmforge.sandbox import available_isolation

log = logging.getLogger(__name__)


def _task_config(module, options: dict | None, benchmarks_root: Path, limit: int | None):
    """The task's config from a suite's options, checked against its schema (`lmforge.eval.schema`)."""
    values = task_options(module, options)
    if isinstance(values.get("judge"), dict):
        values["judge"] = JudgeConfig(**values["judge"])
    config_cls = task_config_class(module)
    if "path" in values and values["path"] is None:
        default = Path(config_cls.path)  # "../shared/benchmarks/<task>" -> under benchmarks_root
        values["path"] = str(benchmarks_root / default.name)
    if limit is not None and "limit" in values:
        values["limit"] = limit
    return config_cls(**values)


def task_data_paths(suite: dict, benchmarks_root: Path) -> dict[str, Path]:
    """The benchmark file or folder each task of `suite` reads, resolved as `run_suite` resolves it
    (tasks with no `path`, such as safety, are left out)."""
    paths = {}
    for name, options in selected_tasks(suite).items():
        task_cfg = _task_config(get_task(name), options, benchmarks_root, None)
        if getattr(task_cfg, "path", None):
            paths[name] = Path(task_cfg.path)
    return paths


class EvalInputError(ValueError):
    """A mistake in what the user asked for (a wrong or missing report to compare with), found
    before the model loads: the CLI prints it as one line."""


def load_model(cfg: dict, benchmarks_root: Path) -> EvalModel:
    if cfg.get("ckpt"):
        return load_checkpoint(cfg["ckpt"], device=cfg.get("device", "cpu"))
    log.warning(
        "no ckpt given: evaluating a RANDOM-INIT %s model (smoke run; scores are chance level)",
        cfg["smoke_model"].get("name", "tiny"),
    )
    tokenizer = smoke_tokenizer(benchmarks_root, vocab_size=cfg["smoke_model"]["vocab_size"], max_texts=1500)
    return random_model(cfg["smoke_model"], tokenizer, seed=cfg.get("seed", 0), device=cfg.get("device", "cpu"))


def _read_named_report(key: str, where: str) -> dict:
    try:
        return read_report(where)
    except FileNotFoundError as err:
        raise EvalInputError(f"{key}={where}: {err}") from err


def _comparisons(cfg: dict, gate_cfg: dict, lineage: list[dict]) -> dict:
    """The parent's and the baseline's report summaries, checked against the lineage first, so a
    wrong `parent_report` is one clear error before the model loads."""
    parent_dir = cfg.get("parent_report") or gate_cfg.get("parent_report")
    baseline_dir = cfg.get("baseline_report") or gate_cfg.get("baseline_report")
    parent = baseline = None
    if parent_dir:
        if len(lineage) < 2:
            raise EvalInputError(
                f"parent_report={parent_dir} given, but ckpt={cfg.get('ckpt')} records no parent checkpoint; "
                "compare with a base model through baseline_report=<dir>"
            )
        parent_report = _read_named_report("parent_report", parent_dir)
        expected = parent_step(cfg["ckpt"], lineage)
        bound = (parent_report.get("binding") or {}).get("checkpoint_sha256")
        if not expected.get("missing"):
            actual = content_sha256(expected["path"])
            if bound != actual:
                raise EvalInputError(
                    f"parent_report={parent_dir} scored checkpoint sha256 {str(bound)[:12]}..., but the parent of "
                    f"ckpt={cfg.get('ckpt')} is {expected['path']} (sha256 {actual[:12]}...)"
                )
        parent = report_summary(parent_report, parent_dir)
        # The baseline travels down the lineage: the parent's own, else the parent when it is the root.
        inherited = (parent_report.get("comparisons") or {}).get("baseline")
        if inherited is not None:
            baseline = inherited
        elif len(parent_report.get("lineage") or []) <= 1:
            baseline = parent
    if baseline_dir:
        baseline = report_summary(_read_named_report("baseline_report", baseline_dir), baseline_dir, named=True)
    return {"parent": parent, "baseline": baseline}


def run_suite(cfg: dict[str, Any]) -> dict:
    """cfg: the composed conf/eval.yaml as a plain dict. Returns the report (also written)."""
    torch.manual_seed(cfg.get("seed", 0))
    benchmarks_root = Path(cfg["benchmarks_root"]).expanduser().resolve()
    out_dir = Path(cfg["out_dir"])
    suite = cfg["eval"]
    check_suite(suite)  # a misspelt task option fails here, before the model loads
    gate_cfg = suite.get("gate") or {}
    gate_on = bool(gate_cfg) and gate_cfg.get("enabled", True)
    policy = load_policy(gate_cfg.get("policy")) if gate_on else None
    ckpt_file, ckpt_sha, lineage = None, None, []
    if cfg.get("ckpt"):
        ckpt_file, ckpt_sha = checkpoint_sha256(cfg["ckpt"])
        lineage = checkpoint_lineage(cfg["ckpt"])
    comparisons = _comparisons(cfg, gate_cfg, lineage)
    task_cfgs = {
        name: _task_config(get_task(name), options or {}, benchmarks_root, cfg.get("limit"))
        for name, options in selected_tasks(suite).items()
    }
    suite_sha = suite_sha256(
        {name: asdict(task_cfg) for name, task_cfg in task_cfgs.items()},
        task_data_paths(suite, benchmarks_root),
        cfg.get("limit"),
    )
    evaluated = load_model(cfg, benchmarks_root)
    cache = RequestCache(cfg["cache_path"], evaluated.model_id) if cfg.get("cache_path") else None
    lm = EvalLM(evaluated.model, evaluated.tokenizer, batch_size=cfg.get("batch_size", 8), cache=cache)
    metrics, stats, details, samples, timing = {}, {}, {}, {}, {}
    for name, task_cfg in task_cfgs.items():
        module = get_task(name)
        start = time.perf_counter()
        result = module.run(lm, task_cfg)
        timing[name] = round(time.perf_counter() - start, 2)
        metrics[name], details[name], samples[name] = result.metrics, result.details, result.samples
        stats[name] = task_stats(name, result.samples, result.metrics)
        log.info("%s: %s (%.1fs)", name, {k: round(v, 4) for k, v in result.metrics.items()}, timing[name])
    # The code sandbox's mode for every report, whether or not a code task ran in this suite.
    code_isolation = (details.get("humaneval") or {}).get("isolation")
    report = {
        "checkpoint": cfg.get("ckpt"),
        "model_id": evaluated.model_id,
        "label": cfg.get("label"),
        "stage": evaluated.manifest.get("stage") or (lineage[-1]["stage"] if lineage else None),
        "parent": evaluated.manifest.get("parent"),
        "suite": suite.get("name"),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "metrics": metrics,
        "stats": stats,
        "details": details,
        "timing_s": timing,
        "sandbox": {"available": available_isolation(), "humaneval": code_isolation},
        "lineage": lineage,
        "comparisons": comparisons,
        "binding": {
            "checkpoint_file": str(ckpt_file) if ckpt_file else None,
            "checkpoint_sha256": ckpt_sha,
            "suite_sha256": suite_sha,
            "policy_path": policy.path if policy else None,
            "policy_sha256": policy.sha256 if policy else None,
        },
        "cache": {"path": cfg.get("cache_path"), "hits": cache.hits if cache else 0},
        "config": cfg,
    }
    report["binding"]["digest"] = report_digest(report)
    report["gate"] = evaluate_release(report, policy).to_dict() if policy else None
    compare = load_compare(list(cfg.get("compare") or []))
    shown = {str(p) for p in cfg.get("compare") or []}
    for other in (comparisons["parent"], comparisons["baseline"]):
        # Plotted beside this run; an inherited baseline's dir may live on another machine.
        if other and other["report"] not in shown and Path(other["report"]).exists():
            shown.add(other["report"])
            compare.append(read_report(other["report"]))
    write_report(out_dir, report, samples, compare)
    if (cfg.get("wandb") or {}).get("enabled"):
        log_wandb(report, out_dir, cfg["wandb"])
    if cache:
        cache.close()
    return report
