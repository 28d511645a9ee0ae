"""Every post-training stage / experiment config composes and instantiates its stage and data."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from lmforge.config_paths import conf_dir
from lmforge.data.chat import ChatDataModule
from lmforge.data.preference import PreferenceDataModule
from lmforge.stages.dpo import DPOStage
from lmforge.stages.reward import RewardStage
from lmforge.stages.sft import SFTStage
from tests.support.compose import compose_train

CONF = conf_dir()
EXPERIMENTS = sorted(
    p.stem for p in (CONF / "experiment").glob("*.yaml") if p.stem.startswith(("sft_", "reward_", "dpo_"))
)
STAGES = {
    "sft": (SFTStage, ChatDataModule),
    "reward": (RewardStage, PreferenceDataModule),
    "dpo": (DPOStage, PreferenceDataModule),
}


@pytest.mark.parametrize(
    "overrides",
    [[f"stage={s}"] for s in STAGES]
    + [[f"stage={s}", "peft=lora"] for s in STAGES]
    + [[f"experiment={e}"] for e in EXPERIMENTS],
    ids=lambda o: ",".join(o),
)
def test_config_instantiates(overrides, task_tokenizer_dir):
    cfg = compose_train([*overrides, f"tokenizer.path={task_tokenizer_dir}", "model.vocab_size=512", "run_dir=unused"])
    stage_cls, dm_cls = STAGES[cfg.module._target_.split(".")[-2]]
    module = instantiate(cfg.module)
    assert type(module) is stage_cls
    assert isinstance(instantiate(cfg.datamodule), dm_cls)
    if "peft=lora" in overrides or "lora" in str(overrides):
        assert module.peft_config["rank"] > 0
    if stage_cls is not DPOStage:  # DPO-only keys must not leak into other stages
        assert "beta" not in cfg.module and "loss_type" not in cfg.module
