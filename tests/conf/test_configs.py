"""Every config group option composes and instantiates (lightning-hydra-template's test_configs),
and typed schemas reject typos at compose time."""

from __future__ import annotations

import shutil
import textwrap
from dataclasses import fields

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lmforge.config_schema import UnknownConfigKeyError, register_configs, validate_config
from lmforge.model import ModelConfig
from lmforge.stages.base import OptimConfig
from lmforge.training import instantiate_group
from tests.support.compose import CONF_DIR, resolve_job

GROUPS = [
    "model",
    "stage",
    "precision",
    "strategy",
    "trainer",
    "logger",
    "optim",
    "schedule",
    "callbacks",
    "peft",
    "experiment",
    "data",
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


ALL_CHOICES = [(g, o) for g in GROUPS for o in options(g)]


@pytest.mark.parametrize("group,option", ALL_CHOICES, ids=[f"{g}={o}" for g, o in ALL_CHOICES])
def test_every_option_composes_and_resolves(compose_cfg, tmp_path, corpus_tokenizer_dir, group, option):
    cfg = compose_cfg([f"{group}={option}", f"tokenizer.path={corpus_tokenizer_dir}"], run_dir=tmp_path)
    assert cfg.hydra.runtime.choices[group] == option
    resolved = resolve_job(cfg)  # no dangling interpolations
    assert resolved["module"]["_target_"]


CPU_RUNNABLE = (
    [("trainer", o) for o in options("trainer") if o != "gpu"]
    + [("strategy", o) for o in options("strategy")]
    + [("precision", o) for o in options("precision")]
    + [("logger", o) for o in options("logger")]
    + [("callbacks", o) for o in options("callbacks")]
)


@pytest.mark.parametrize("group,option", CPU_RUNNABLE, ids=[f"{g}={o}" for g, o in CPU_RUNNABLE])
def test_trainer_callbacks_loggers_instantiate(compose_cfg, tmp_path, group, option):
    cfg = compose_cfg([f"{group}={option}", "trainer.accelerator=cpu"], run_dir=tmp_path)
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    assert trainer.max_steps == cfg.trainer.max_steps
    assert len([c for c in trainer.callbacks if type(c).__module__.startswith("lmforge")]) == len(
        [c for c in callbacks if type(c).__module__.startswith("lmforge")]
    )


def test_cfg_job_for_7b_fsdp_is_complete(compose_cfg, tmp_path):
    cfg = compose_cfg(["model=7b", "strategy=fsdp", "precision=bf16-true", "trainer=gpu"], run_dir=tmp_path)
    resolved = resolve_job(cfg)
    assert resolved["trainer"]["strategy"]["_target_"] == "lmforge.training.FSDP2Strategy"
    assert resolved["trainer"]["precision"] == "bf16-true"
    assert resolved["module"]["model"]["d_model"] == 4096 and resolved["module"]["meta_init"] is True


def test_7b_fsdp_builds_on_meta_without_allocating(compose_cfg, tmp_path, corpus_tokenizer_dir):
    """model=7b strategy=fsdp: the stage instantiates and its model shards per DecoderLayer on the
    meta device; the parameter count is Llama-2-7B's."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor

    from lmforge.model import build_model

    cfg = compose_cfg(["model=7b", "strategy=fsdp", f"tokenizer.path={corpus_tokenizer_dir}"], run_dir=tmp_path)
    module = instantiate(cfg.module, _convert_="all")
    assert module.model is None  # nothing built before configure_model
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,), mesh_dim_names=("data_parallel",))
        model = build_model(module.model_config, device="meta")
        module._shard(model, mesh)
        params = list(model.parameters())
        assert all(p.is_meta for p in params)
        assert all(isinstance(p, DTensor) for p in params)
        assert sum(p.numel() for p in params) == 6_738_415_616 == module.model_config.num_params()
    finally:
        if created:
            dist.destroy_process_group()


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiments_instantiate_stage(compose_cfg, tmp_path, corpus_tokenizer_dir, experiment):
    cfg = compose_cfg([f"experiment={experiment}", f"tokenizer.path={corpus_tokenizer_dir}"], run_dir=tmp_path)
    with torch.device("meta"):
        module = instantiate(cfg.module, _convert_="all")
    assert module.model_config == ModelConfig(**OmegaConf.to_container(cfg.model))


# ----- typed schemas -----
@pytest.mark.parametrize("override", ["model.n_layerz=3", "model.n_layers=abc", "optim.lr=fast", "optim.warmup=5"])
def test_schema_rejects_typos_at_compose_time(compose_cfg, override):
    with pytest.raises(ConfigCompositionException):
        compose_cfg([override])


@pytest.mark.parametrize("override", ["+model.typo=3", "+optim.nesterov=true"])
def test_forced_unknown_keys_are_rejected_before_training(compose_cfg, override):
    """`+key=` bypasses the schema in Hydra; validate_config (run by fit_from_config) catches it."""
    cfg = compose_cfg([override])
    with pytest.raises(UnknownConfigKeyError, match=override[1:].split("=")[0].replace(".", r"\.")):
        validate_config(cfg)


@pytest.mark.parametrize("model", options("model"))
def test_composed_model_keys_are_modelconfig_fields(compose_cfg, model):
    cfg = compose_cfg([f"model={model}"])
    assert set(cfg.model.keys()) <= {f.name for f in fields(ModelConfig)}
    assert set(cfg.optim.keys()) <= {f.name for f in fields(OptimConfig)}
    ModelConfig(**OmegaConf.to_container(cfg.model))  # and the values build a config


# Per typed node: the stage it lives under, and a real key to misspell.
TYPED_NODES = [
    ("model", "pretrain", "n_layerz"),
    ("optim", "pretrain", "lr_max"),
    ("data", "pretrain", "batch_sise"),
    ("cai", "cai", "rouns"),
    ("cai.endpoint", "cai", "modle"),
] + [
    (node, stage, "bta")
    for node in ("module", "datamodule")
    for stage in ("pretrain", "sft", "reward", "dpo", "rl", "cai")
]
NODE_IDS = [f"{node}@{stage}" for node, stage, _ in TYPED_NODES]


@pytest.mark.parametrize("group,option", ALL_CHOICES, ids=[f"{g}={o}" for g, o in ALL_CHOICES])
def test_every_option_passes_validation(compose_cfg, group, option):
    validate_config(compose_cfg([f"{group}={option}"]))


@pytest.mark.parametrize("node,stage,typo", TYPED_NODES, ids=NODE_IDS)
def test_command_line_typo_fails_at_compose_naming_the_key(compose_cfg, node, stage, typo):
    with pytest.raises(ConfigCompositionException, match=rf"{node}\.{typo}"):
        compose_cfg([f"stage={stage}", f"{node}.{typo}=1"])


@pytest.mark.parametrize("node,stage,typo", TYPED_NODES, ids=NODE_IDS)
def test_forced_typo_is_rejected_naming_the_key(compose_cfg, node, stage, typo):
    cfg = compose_cfg([f"stage={stage}", f"+{node}.{typo}=1"])
    with pytest.raises(UnknownConfigKeyError, match=rf"{node}\.{typo}"):
        validate_config(cfg)


@pytest.mark.parametrize("node,stage,typo", TYPED_NODES, ids=NODE_IDS)
def test_experiment_yaml_typo_fails_at_compose_naming_the_key(tmp_path, node, stage, typo):
    """An experiment YAML is merged onto the typed nodes too: a misspelt key in it fails to compose."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    block = f"{typo}: 1"
    for part in reversed(node.split(".")):
        block = f"{part}:\n" + textwrap.indent(block, "  ")
    (conf / "experiment" / "typo.yaml").write_text(
        f"# @package _global_\ndefaults:\n  - override /stage: {stage}\n{block}\n"
    )
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises(ConfigCompositionException) as error:
            compose("train", overrides=["experiment=typo"])
    assert typo in str(error.value) + str(error.value.__cause__)


def test_data_is_refused_by_stages_that_do_not_read_it(compose_cfg):
    """Only pretraining reads `data`; `stage=sft data=curated` must not compose and silently do nothing."""
    with pytest.raises(ConfigCompositionException, match="'data'"):
        compose_cfg(["stage=sft", "data=curated"])
    assert "data" not in compose_cfg(["stage=sft"])
