"""Fixtures of the serving tests that more than one file uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.export import ExportConfig, run_export
from tests.serving.engine_env import FORMATS


@pytest.fixture(scope="session")
def engine_exports(memorised_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The memorised checkpoint exported in every format, as the engines are given them."""
    root = tmp_path_factory.mktemp("engine_exports")
    exports = {}
    for quant in FORMATS:
        exports[quant] = run_export(
            ExportConfig(
                ckpt=str(memorised_checkpoint.path),
                quant=quant,
                out=str(root / quant),
                report=False,
                gate="skip",
                gate_reason="engine conformance test fixture",
            )
        )
    return exports
