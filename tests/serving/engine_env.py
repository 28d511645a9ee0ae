"""The serving engines' own environments (made by scripts/setup_engines.sh) and the exports the
conformance tests feed them. The engines run in subprocesses with their own interpreter, never in .venv."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENGINE_VENV = {"sglang": "SGLANG_VENV", "vllm": "VLLM_VENV"}
# Every format serving/export.py writes (quant="none" is the dense bf16 export).
FORMATS = ["none", "w8a8", "w4a16", "int8wo", "fp8"]


def engine_python(engine: str) -> Path:
    """The engine env's interpreter; a missing env fails the test with the one command that makes it."""
    venv = Path(os.environ.get(ENGINE_VENV[engine]) or REPO / f".venv-{engine}")
    venv = venv if venv.is_absolute() else REPO / venv
    if not (venv / ".lmforge-stamp").is_file():
        pytest.fail(f"no {engine} environment at {venv}: run `bash scripts/setup_engines.sh {engine}`")
    return venv / "bin" / "python"


def run_engine(engine: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [str(engine_python(engine)), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise AssertionError(f"{engine} run failed ({result.returncode}):\n{result.stderr[-6000:]}")
    return result
