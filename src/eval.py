"""Evaluate a checkpoint: `python src/eval.py ckpt=<.ckpt | run dir | HF export dir> eval=<suite>`.

With no arguments it runs the quick suite on a random-init tiny model (a smoke run of every
code path) and writes the report under runs/eval/. Everything else lives in lmforge.eval.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from lmforge.callbacks.wandb_lineage import group_with_training_run
from lmforge.config_paths import conf_dir
from lmforge.config_precheck import register_help_resolver
from lmforge.config_schema import validate_config
from lmforge.eval.release_policy import PolicyError
from lmforge.eval.runner import EvalInputError, run_suite
from lmforge.eval.schema import register_configs

log = logging.getLogger("lmforge.eval")

register_configs()  # the `eval` node's schema must be in the ConfigStore before Hydra composes


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="eval")
def main(cfg: DictConfig) -> None:
    validate_config(cfg)  # `+eval.gate.typo=1` bypasses the schema at compose time
    group_with_training_run(cfg.get("ckpt"))
    try:
        report = run_suite(OmegaConf.to_container(cfg, resolve=True))
    except (EvalInputError, PolicyError) as err:  # the user's input, not a bug: one line
        sys.exit(f"error: {err}")
    for task, metrics in report["metrics"].items():
        print(f"{task:>10}: " + "  ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    gate = report["gate"]
    if gate is not None:
        print("gate:", "PASS" if gate["passed"] else "FAIL " + "; ".join(gate["reasons"]))
    print(f"report: {cfg.out_dir}/report.json  summary: {cfg.out_dir}/summary.html")


if __name__ == "__main__":
    register_help_resolver()  # `--help` lists only the groups this config composes
    main()
