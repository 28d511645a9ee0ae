"""Benchmarks. Each module exposes `run(lm, cfg) -> TaskResult`; `TASKS` maps the names used
in conf/eval/<suite>.yaml to them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TaskResult:
    name: str
    metrics: dict[str, float]
    samples: list[dict] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def to_dict(self, with_samples: bool = False) -> dict:
        out = {"name": self.name, "metrics": self.metrics, "details": self.details}
        if with_samples:
            out["samples"] = self.samples
        return out


def get_task(name: str):
    from lmforge.eval.tasks import gsm8k, humaneval, mmlu, mt_bench, safety

    tasks = {"mmlu": mmlu, "gsm8k": gsm8k, "humaneval": humaneval, "mt_bench": mt_bench, "safety": safety}
    if name not in tasks:
        raise KeyError(f"unknown eval task {name!r}; known: {sorted(tasks)}")
    return tasks[name]
