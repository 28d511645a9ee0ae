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


# As conf/eval.yaml resolves it: $LMFORGE_BENCHMARKS, else ../shared/benchmarks beside the clone.
BENCHMARKS = Path(os.environ.get("LMFORGE_BENCHMARKS")
                  or Path(__file__).resolve().parents[2] / "shared" / "benchmarks").resolve()


@pytest.fixture(scope="session")
def benchmarks() -> Path:
    """The real benchmark files. They are licensed data kept outside the repo (never copied in),
    beside the clone in ../shared or at $LMFORGE_BENCHMARKS; without them these tests cannot run."""
    if not BENCHMARKS.exists():
        pytest.skip(f"shared benchmark files not found at {BENCHMARKS}")
    return BENCHMARKS
