"""Where the Hydra config tree lives, for entry points and library code alike.

The tree users read and edit is the repo-root `conf/`; `src/lmforge/conf` is a symlink to it, so
an editable install finds it through the package, and a wheel ships it as package data
(`pyproject.toml`). Nothing counts `Path(__file__).parents[N]`, which breaks once installed.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def conf_dir() -> Path:
    """The directory holding `train.yaml`, `eval.yaml`, `shards.yaml`, ... and the config groups."""
    path = Path(str(files("lmforge") / "conf"))
    if not (path / "train.yaml").is_file():
        raise FileNotFoundError(f"lmforge config tree not found at {path} (expected {path / 'train.yaml'})")
    return path
