"""Train any lmforge stage: `python src/train.py [stage=pretrain] [model=tiny] [group=option ...]`.

Composes conf/train.yaml, then either fits (`lmforge.training.fit_from_config`) or, when the
composed config names a `runner` (e.g. conf/stage/cai.yaml: generate data, then run stages),
hands the whole config to it. All logic lives in `lmforge`; this file only wires Hydra.

Nothing that imports torch or Lightning is imported before the command line has been composed
once (`lmforge.config_precheck`), so a typo such as `modle=tiny` fails in seconds, not after
the minute those imports can take on a cold machine.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from lmforge.config_paths import conf_dir

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.utils import instantiate

    from lmforge.config_schema import UnknownConfigKeyError, validate_config
    from lmforge.training import exit_on_user_error, fit_from_config, print_summary

    try:
        validate_config(cfg)  # `+module.typo=1` bypasses the schemas at compose time
    except UnknownConfigKeyError as err:
        sys.exit(f"error: {err}")
    start_from_init(cfg)
    try:
        if cfg.get("runner") is not None:
            return instantiate(cfg.runner)(cfg)
        manifest = fit_from_config(cfg)
    except Exception as err:
        exit_on_user_error(err)  # a NaN loss or running out of memory: one line, not 80
        raise
    print_summary(manifest)
    # Returned for Hydra sweepers (e.g. Optuna) that minimise a metric.
    return manifest["final_metrics"].get("val/loss")


def start_from_init(cfg: DictConfig) -> None:
    """model=auto gets init_from's shape, and the run inherits its tokenizer (`lmforge.init_from`);
    a missing parent or another model shape ends the command in one line."""
    from hydra.core.hydra_config import HydraConfig

    from lmforge.init_from import InitFromError, resolve_init_from

    try:
        resolve_init_from(cfg, HydraConfig.get().overrides.task)
    except InitFromError as err:
        sys.exit(f"error: {err}")


def refuse_unread_data() -> None:
    """`stage=sft data=curated`: one line naming the stage, not Hydra's "No match in the defaults list"."""
    from hydra._internal.utils import get_args_parser  # Hydra's own command-line grammar

    from lmforge.config_schema import DataNotReadError, check_data_override

    try:
        check_data_override(get_args_parser().parse_known_args()[0].overrides)
    except DataNotReadError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    from lmforge.config_precheck import fail_fast, register_help_resolver
    from lmforge.init_from import default_model_auto

    sys.argv[1:] = default_model_auto(sys.argv[1:])  # init_from=<dir> without model=: model=auto

    fail_fast()  # unknown groups, options and keys: Hydra's message in seconds
    register_help_resolver()  # `--help` lists only the groups conf/train.yaml composes
    from lmforge.config_schema import register_configs

    register_configs()  # typed schemas must be in the ConfigStore before Hydra composes
    refuse_unread_data()
    main()
