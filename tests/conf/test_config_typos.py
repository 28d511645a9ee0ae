"""Typos in the eval, export and cai nodes fail naming the key; `data=` under a stage that does not
read it fails naming the stage."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from lmforge.config_paths import conf_dir
from lmforge.config_schema import DataNotReadError, UnknownConfigKeyError, check_data_override, validate_config
from lmforge.eval.schema import check_suite
from lmforge.eval.schema import register_configs as register_eval
from serving.export import register_configs as register_export
from tests.support.compose import REPO


def _compose(config: str, overrides: list[str]):
    register_eval()
    register_export()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config, overrides=overrides)


# ----- eval (conf/eval.yaml + conf/eval/<suite>.yaml)
@pytest.mark.parametrize(
    "override", ["eval.tasks.mmlu.limt=2", "eval.gate.mni=1", "eval.nmae=x", "eval.gate.enabled=maybe"]
)
def test_eval_command_line_typo_fails_at_compose_naming_the_key(override):
    with pytest.raises(ConfigCompositionException, match=override.split("=")[0].replace(".", r"\.")):
        _compose("eval", [override])


@pytest.mark.parametrize("override", ["+eval.gate.typo=1", "+eval.typo=1"])
def test_eval_forced_key_is_rejected_naming_it(override):
    with pytest.raises(UnknownConfigKeyError, match=override[1:].split("=")[0].replace(".", r"\.")):
        validate_config(_compose("eval", [override]))


@pytest.mark.parametrize(
    "override", ["+eval.tasks.mmlu.limt=2", "+eval.tasks.mt_bench.judge.modle=x", "eval.tasks.gsm8k.limit=abc"]
)
def test_eval_task_option_typo_fails_before_running_naming_the_key(override):
    suite = OmegaConf.to_container(_compose("eval", [override]).eval)
    with pytest.raises(Exception, match=override.lstrip("+").split("=")[0].replace(".", r"\.")):
        check_suite(suite)


def test_eval_suite_yaml_typo_fails_at_compose(tmp_path):
    import shutil

    conf = tmp_path / "conf"
    shutil.copytree(conf_dir(), conf)
    (conf / "eval" / "typo.yaml").write_text("defaults:\n  - gate\n  - _self_\nname: typo\ngate:\n  mni: {}\n")
    register_eval()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises(ConfigCompositionException) as error:
            compose("eval", overrides=["eval=typo"])
    assert "mni" in str(error.value) + str(error.value.__cause__)


def test_every_suite_passes_validation():
    for suite in sorted(p.stem for p in (conf_dir() / "eval").glob("*.yaml") if p.stem != "gate"):
        cfg = _compose("eval", [f"eval={suite}"])
        validate_config(cfg)
        check_suite(OmegaConf.to_container(cfg.eval))


# ----- export (conf/export.yaml, typed root)
@pytest.mark.parametrize("override", ["forse=true", "val_sequences=abc"])
def test_export_command_line_typo_fails_at_compose_naming_the_key(override):
    with pytest.raises(ConfigCompositionException, match=override.split("=")[0]):
        _compose("export", [override])


def test_export_forced_key_is_rejected_naming_it():
    validate_config(_compose("export", []))
    with pytest.raises(UnknownConfigKeyError, match="'forse'"):
        validate_config(_compose("export", ["+forse=true"]))


# ----- cai (the `cai` node of stage=cai)
@pytest.mark.parametrize("override", ["cai.rouns=2", "cai.endpoint.modle=x", "cai.limit=abc"])
def test_cai_typo_fails_at_compose_naming_the_key(compose_cfg, override):
    with pytest.raises(ConfigCompositionException, match=override.split("=")[0].replace(".", r"\.")):
        compose_cfg(["stage=cai", override])


# ----- data= is read by pretraining only
@pytest.mark.parametrize(
    "overrides,stage",
    [
        (["stage=sft", "data=curated"], "sft"),
        (["stage=dpo", "+data=default"], "dpo"),
        (["experiment=rl_tasks", "data=curated"], "rl"),
    ],
)
def test_data_under_a_stage_that_does_not_read_it_names_the_stage(overrides, stage):
    with pytest.raises(DataNotReadError, match=rf"stage={stage} does not read `data`.*only stage=pretrain"):
        check_data_override(overrides)


@pytest.mark.parametrize("overrides", [["data=curated"], ["stage=pretrain", "data=curated"], ["stage=sft"]])
def test_data_is_accepted_where_pretraining_reads_it(overrides):
    check_data_override(overrides)


def test_train_cli_refuses_data_in_one_line():
    run = subprocess.run(
        [sys.executable, str(REPO / "src" / "train.py"), "stage=sft", "data=curated"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith("error: stage=sft does not read `data` (got data=curated)")


@pytest.mark.parametrize(
    "override, message",
    [
        ("+module.typo=1", "error: unknown key(s) ['module.typo']; RLStageConfig has"),
        ("module.reward.task_answr=1", "error: module.reward: unknown reward 'task_answr' in config; known: ["),
    ],
)
def test_train_cli_refuses_a_forced_key_or_an_unknown_reward_in_one_line(override, message):
    run = subprocess.run(
        [sys.executable, str(REPO / "src" / "train.py"), "stage=rl", override],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    lines = [line for line in run.stderr.strip().splitlines() if not line.startswith(("Seed set", "["))]
    assert lines == [lines[-1]] and lines[-1].startswith(message), run.stderr[-2000:]
