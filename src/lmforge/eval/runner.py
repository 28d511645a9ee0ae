"""Run an evaluation suite end to end: load the model, run each task, check the gate, write
the report. `src/eval.py` is the Hydra entry; this is the part worth testing."""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any

import torch

from lmforge.eval.cache import RequestCache
from lmforge.eval.gate import evaluate_gate
from lmforge.eval.judge import JudgeConfig
from lmforge.eval.lm import EvalLM
from lmforge.eval.loading import EvalModel, load_checkpoint, random_model, smoke_tokenizer
from lmforge.eval.report import load_compare, log_wandb, write_report
from lmforge.eval.schema import check_suite, selected_tasks, task_config_class, task_options
from lmforge.eval.tasks import get_task
from lmforge.formats.eval_report import read_report

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


def load_model(cfg: dict, benchmarks_root: Path) -> EvalModel:
    if cfg.get("ckpt"):
        return load_checkpoint(cfg["ckpt"], device=cfg.get("device", "cpu"))
    log.warning(
        "no ckpt given: evaluating a RANDOM-INIT %s model (smoke run; scores are chance level)",
        cfg["smoke_model"].get("name", "tiny"),
    )
    tokenizer = smoke_tokenizer(benchmarks_root, vocab_size=cfg["smoke_model"]["vocab_size"], max_texts=1500)
    return random_model(cfg["smoke_model"], tokenizer, seed=cfg.get("seed", 0), device=cfg.get("device", "cpu"))


def run_suite(cfg: dict[str, Any]) -> dict:
    """cfg: the composed conf/eval.yaml as a plain dict. Returns the report (also written)."""
    torch.manual_seed(cfg.get("seed", 0))
    benchmarks_root = Path(cfg["benchmarks_root"]).expanduser().resolve()
    out_dir = Path(cfg["out_dir"])
    suite = cfg["eval"]
    check_suite(suite)  # a misspelt task option fails here, before the model loads
    evaluated = load_model(cfg, benchmarks_root)
    cache = RequestCache(cfg["cache_path"], evaluated.model_id) if cfg.get("cache_path") else None
    lm = EvalLM(evaluated.model, evaluated.tokenizer, batch_size=cfg.get("batch_size", 8), cache=cache)
    metrics, details, samples, timing = {}, {}, {}, {}
    for name, options in selected_tasks(suite).items():
        module = get_task(name)
        task_cfg = _task_config(module, options or {}, benchmarks_root, cfg.get("limit"))
        start = time.perf_counter()
        result = module.run(lm, task_cfg)
        timing[name] = round(time.perf_counter() - start, 2)
        metrics[name], details[name], samples[name] = result.metrics, result.details, result.samples
        log.info("%s: %s (%.1fs)", name, {k: round(v, 4) for k, v in result.metrics.items()}, timing[name])
    report = {
        "checkpoint": cfg.get("ckpt"),
        "model_id": evaluated.model_id,
        "label": cfg.get("label"),
        "stage": evaluated.manifest.get("stage"),
        "parent": evaluated.manifest.get("parent"),
        "suite": suite.get("name"),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "metrics": metrics,
        "details": details,
        "timing_s": timing,
        "cache": {"path": cfg.get("cache_path"), "hits": cache.hits if cache else 0},
        "config": cfg,
    }
    gate_cfg = suite.get("gate")
    if gate_cfg and gate_cfg.get("enabled", True):
        parent_dir = cfg.get("parent_report") or gate_cfg.get("parent_report")
        parent_metrics = read_report(parent_dir)["metrics"] if parent_dir else None
        verdict = evaluate_gate(metrics, gate_cfg, parent_metrics)
        report["gate"] = {**verdict.to_dict(), "parent_report": parent_dir}
    else:
        report["gate"] = None
    compare = load_compare(list(cfg.get("compare") or []))
    if cfg.get("parent_report"):
        compare.append(read_report(cfg["parent_report"]))
    write_report(out_dir, report, samples, compare)
    if (cfg.get("wandb") or {}).get("enabled"):
        log_wandb(report, out_dir, cfg["wandb"])
    if cache:
        cache.close()
    return report
