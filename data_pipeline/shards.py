"""`python -m data_pipeline.shards corpus=<dir> tokenizer=<dir> out=<dir> seq_len=256`: tokenize a
corpus into token shards. The work is `lmforge.data.shard_writer` (the pretraining DataModule
also calls it to write missing shards); this is its Hydra command line (conf/shards.yaml).
"""

from __future__ import annotations

from pathlib import Path

from lmforge.config_paths import conf_dir
from lmforge.config_precheck import register_help_resolver
from lmforge.data.shard_writer import ShardConfig, summarize, write_shards


def cli() -> None:
    import hydra
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name="shards_schema", node=ShardConfig)

    register_help_resolver()  # `--help` lists only the groups this config composes

    # An absolute path: relative ones resolve against the calling module's package, which
    # differs between `python -m data_pipeline.shards` and an import.
    @hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="shards")
    def main(cfg) -> None:
        shard_cfg = ShardConfig(**OmegaConf.to_container(cfg, resolve=True))
        manifest = write_shards(shard_cfg)
        print(summarize(manifest))
        print(f"shards: {Path(shard_cfg.out).resolve()} (tokenizer {manifest['tokenizer_fingerprint'][:12]})")

    main()


if __name__ == "__main__":
    cli()
