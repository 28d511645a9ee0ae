"""The regression set of scripts/build_regression_set.py, built once per test session."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def builder():
    """scripts/build_regression_set.py as a module."""
    return _script("build_regression_set")


def funnel_script():
    """scripts/regression_funnel.py as a module: the default run measured on a built set."""
    return _script("regression_funnel")


@lru_cache(maxsize=4)
def regression_records(scale: float = 1.0) -> tuple[dict, ...]:
    return tuple(builder().collect(scale))


def regression_texts(scale: float = 1.0) -> list[str]:
    return [r["text"] for r in regression_records(scale)]
