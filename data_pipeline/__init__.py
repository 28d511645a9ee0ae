"""Corpus curation: raw web pages -> clean, deduplicated, balanced per-domain JSONL.

Entry points: ``run_pipeline(cfg) -> Path`` (Python) and ``python -m data_pipeline``
(Hydra CLI). See README.md, "Data pipeline".
"""

from __future__ import annotations

from typing import Any


def run_pipeline(cfg: Any = None, **overrides: Any):
    """Lazy re-export of :func:`data_pipeline.pipeline.run_pipeline` (keeps ``import data_pipeline`` cheap)."""
    from data_pipeline.pipeline import run_pipeline as _run

    return _run(cfg, **overrides)


__all__ = ["run_pipeline"]
