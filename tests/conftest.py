"""Session-wide test settings. Area fixtures live in tests/<area>/conftest.py."""

import os
from pathlib import Path

import pytest

# wandb fails with no key and no mode; tests never reach the network.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TORCHAO_NO_KERNEL_WARNINGS", "1")


BENCHMARKS = (Path(__file__).resolve().parents[2] / "shared" / "benchmarks").resolve()


@pytest.fixture(scope="session")
def benchmarks() -> Path:
    """The real benchmark files. They are licensed data kept outside the repo (never copied in),
    beside the clone in ../shared; a checkout without them cannot run these tests at all."""
    if not BENCHMARKS.exists():
        pytest.skip(f"shared benchmark files not found at {BENCHMARKS}")
    return BENCHMARKS
