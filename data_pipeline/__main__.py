"""Hydra CLI: ``python -m data_pipeline pipeline=<name> input=... output=...``.

With no arguments it builds the embedded crawl from files on this machine and curates it
into ``artifacts/corpus``.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from data_pipeline.config import register_configs
from data_pipeline.pipeline import run_pipeline
from lmforge.config_paths import conf_dir
from lmforge.config_precheck import register_help_resolver

register_configs()


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="pipeline")
def main(cfg: DictConfig) -> None:
    logging.getLogger("data_pipeline").setLevel(logging.INFO)
    out = run_pipeline(cfg)
    print(f"corpus written to {out} (manifest.json, funnel.json, funnel.png)")


if __name__ == "__main__":
    register_help_resolver()  # `--help` lists only the groups this config composes
    main()
