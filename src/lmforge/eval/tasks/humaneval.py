"""HumanEval (Chen et al. 2021, arXiv:2107.03374): complete the function from its prompt,
score each completion against the problem's tests, report unbiased pass@k.

Scoring is `sandbox.check_completion`: the completion runs sandboxed and only answers calls with
plain data; the tests and the verdict live in a separate trusted process (docs/evaluation.md)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from lmforge.eval.data import load_humaneval
from lmforge.eval.lm import EvalLM, GenParams
from lmforge.eval.metrics import pass_at_k
from lmforge.eval.tasks import TaskResult
from lmforge.sandbox import SandboxConfig, check_all

log = logging.getLogger(__name__)
# The Codex paper's stop sequences: a completion ends where a new top-level block begins.
STOP = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]


@dataclass
class HumanEvalConfig:
    path: str = "../shared/benchmarks/humaneval"
    n_samples: int = 1
    ks: list[int] = field(default_factory=lambda: [1, 10])
    temperature: float = 0.0  # pass@10 needs n_samples >= 10 and sampling (0.8 in the paper)
    max_new_tokens: int = 256
    limit: int | None = None
    workers: int = 2
    timeout_s: float = 10.0
    memory_mb: int = 1024
    seed: int = 0


def execute(
    problems: list[dict], completions: list[list[str]], sandbox: SandboxConfig, workers: int = 2
) -> list[list[bool]]:
    """Pass/fail of every completion of every problem (`check_all`)."""
    return [[r.passed for r in row] for row in check_all(problems, completions, sandbox, workers)]


def score(passed: list[list[bool]], ks: list[int]) -> dict[str, float]:
    n = len(passed[0]) if passed else 0
    metrics = {}
    for k in ks:
        if k <= n:
            values = [pass_at_k(len(p), sum(p), k) for p in passed]
            metrics[f"pass@{k}"] = sum(values) / max(1, len(values))
    return metrics


def run(lm: EvalLM, cfg: HumanEvalConfig) -> TaskResult:
    problems = load_humaneval(cfg.path)[: cfg.limit]
    requests = []
    for problem in problems:
        for sample in range(cfg.n_samples):
            # A distinct seed per sample: identical requests would otherwise be one cache entry.
            params = GenParams(
                until=STOP,
                max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature,
                seed=cfg.seed + sample if cfg.temperature > 0 else None,
            )
            requests.append((problem["prompt"], params))
    outputs = lm.generate_until(requests)
    completions = [outputs[i * cfg.n_samples : (i + 1) * cfg.n_samples] for i in range(len(problems))]
    sandbox = SandboxConfig(timeout_s=cfg.timeout_s, cpu_s=int(cfg.timeout_s), memory_mb=cfg.memory_mb)
    results = check_all(problems, completions, sandbox, cfg.workers)
    passed = [[r.passed for r in row] for row in results]
    isolation = sorted({r.isolation for row in results for r in row})
    log.info("HumanEval: %d completions scored under isolation=%s", sum(map(len, results)), ",".join(isolation))
    metrics = score(passed, cfg.ks)
    skipped = [k for k in cfg.ks if k > cfg.n_samples]
    if skipped:
        log.warning("HumanEval: pass@%s needs n_samples >= k (n_samples=%d); not reported", skipped, cfg.n_samples)
    samples = [
        {
            "task_id": p["task_id"],
            "completions": c,
            "passed": ok,
            "status": [r.status for r in row],
            "isolation": ",".join(sorted({r.isolation for r in row})),
        }
        for p, c, ok, row in zip(problems, completions, passed, results)
    ]
    details = {"n_problems": len(problems), "n_samples": cfg.n_samples, "isolation": ",".join(isolation)}
    return TaskResult("humaneval", metrics, samples, details)
