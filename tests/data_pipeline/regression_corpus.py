"""The regression set of scripts/build_regression_set.py, built once per test session."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_regression_set.py"


def builder():
    spec = importlib.util.spec_from_file_location("build_regression_set", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@lru_cache(maxsize=4)
def regression_records(scale: float = 1.0) -> tuple[dict, ...]:
    return tuple(builder().collect(scale))


def regression_texts(scale: float = 1.0) -> list[str]:
    return [r["text"] for r in regression_records(scale)]
