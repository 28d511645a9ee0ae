"""The layer contract in pyproject.toml ([tool.importlinter]) holds, and it would catch a new
back-edge, even one hidden inside a function."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = {"src/lmforge": "src/lmforge", "data_pipeline": "data_pipeline", "serving": "serving", "e2e": "e2e"}


def _lint(root: Path) -> subprocess.CompletedProcess:
    # The tree under `root` comes first on the path, ahead of the editable install's finder.
    env = {**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root}"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_tree_keeps_the_layer_contract():
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lmforge layers KEPT" in result.stdout


def test_a_back_edge_inside_a_function_breaks_the_contract(tmp_path):
    for source, target in PACKAGES.items():
        shutil.copytree(REPO / source, tmp_path / target, ignore=shutil.ignore_patterns("__pycache__", "conf"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    with open(tmp_path / "src/lmforge/model.py", "a") as f:
        f.write("\n\ndef _export_from_the_model():\n    import serving.export  # a layer-1 module reaching layer 13\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "lmforge layers BROKEN" in result.stdout
    assert "lmforge.model -> serving.export" in result.stdout
