"""Typed schema of the `eval` node (conf/eval/<suite>.yaml), registered as `schema/eval`.

`conf/eval.yaml` merges the suite onto `EvalSuiteConfig`, so a misspelt suite or gate key fails
at compose time naming it. A suite lists any subset of the tasks (and `+eval.tasks.<task>.<k>=v`
adds one), so `tasks` stays an open mapping; `check_suite` types each listed task's options
against that task's own `*Config` dataclass before anything runs, naming `eval.tasks.<task>.<key>`.
There `path` defaults to None, meaning `<benchmarks_root>/<task>`, so `benchmarks_root` /
`$LMFORGE_BENCHMARKS` keep deciding where benchmark data is read.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, make_dataclass
from types import ModuleType
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from lmforge.eval.tasks import get_task


def task_config_class(module: ModuleType) -> type:
    """The `*Config` dataclass a task module defines (what its `run(lm, cfg)` takes)."""
    return next(
        v
        for k, v in vars(module).items()
        if k.endswith("Config") and dataclasses.is_dataclass(v) and v.__module__ == module.__name__
    )


def task_schema(config_cls: type) -> type:
    """`config_cls`'s fields, with `path` defaulting to None (= under `benchmarks_root`)."""
    hints = typing.get_type_hints(config_cls)
    specs = []
    for f in dataclasses.fields(config_cls):
        if f.name == "path":
            specs.append(("path", str | None, field(default=None)))
        elif f.default_factory is not dataclasses.MISSING:
            specs.append((f.name, hints[f.name], field(default_factory=f.default_factory)))
        else:
            specs.append((f.name, hints[f.name], field(default=f.default)))
    return make_dataclass(f"{config_cls.__name__}Options", specs)


def task_options(module: ModuleType, options: dict | None) -> dict:
    """`options` typed against the task's schema and completed with its defaults (`path` stays
    None when not given); an unknown key or a wrong type raises, naming `eval.tasks.<task>.<key>`."""
    name = module.__name__.rsplit(".", 1)[-1]
    schema = OmegaConf.structured(task_schema(task_config_class(module)))
    merged = OmegaConf.merge({"eval": {"tasks": {name: schema}}}, {"eval": {"tasks": {name: options or {}}}})
    return OmegaConf.to_container(merged.eval.tasks[name], resolve=True)


@dataclass
class GateConfig:
    """Where the release gate's thresholds come from (conf/eval/gate.yaml): the release policy file,
    not this node. Evaluation records its verdict for reading; export decides again from the
    policy file it reads itself (`lmforge.eval.gate.release_verdict`)."""

    enabled: bool = True
    policy: str | None = None  # release policy file; None: conf/release_policy.yaml
    parent_report: str | None = None  # or the top-level parent_report=<dir>
    baseline_report: str | None = None  # or the top-level baseline_report=<dir> (a named base model)


@dataclass
class EvalSuiteConfig:
    """The `eval` node: a suite's name, the tasks it runs ({task: options}) and its gate."""

    name: str = MISSING
    tasks: dict[str, Any] = field(default_factory=dict)
    gate: GateConfig | None = None


def selected_tasks(suite: Mapping) -> dict[str, Mapping]:
    """{task: options} of a suite (options may be None: the task's defaults)."""
    return {name: options or {} for name, options in (suite.get("tasks") or {}).items()}


def check_suite(suite: Mapping) -> None:
    """Type every listed task's options now (`run_suite` does, before loading the model)."""
    for name, options in selected_tasks(suite).items():
        task_options(get_task(name), options)


def register_configs() -> None:
    """Idempotent; call before Hydra composes conf/eval.yaml (`src/eval.py` and the eval tests do)."""
    ConfigStore.instance().store(group="schema", name="eval", node=EvalSuiteConfig)
