"""stage=cai end to end on CPU with the real (small) model: compose conf/stage/cai.yaml as
src/train.py does, generate the critique/revision and judged data with `lmforge.generate`,
then run SFT and DPO through the existing stages; a rerun resumes without redoing anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate

from lmforge.checkpoint import load_for_inference
from lmforge.hf import export_hf
from lmforge.model import ModelConfig, build_model
from lmforge.tokenizer import Tokenizer


@pytest.fixture()
def parent_dir(tmp_path, rl_tokenizer_dir, rl_model_cfg) -> Path:
    """The model CAI starts from: a small randomly initialised Transformer as an HF export."""
    config = ModelConfig(**{**rl_model_cfg, "max_seq_len": 256})
    return export_hf(build_model(config), tmp_path / "parent", tokenizer=Tokenizer.load(rl_tokenizer_dir))


@pytest.mark.slow
def test_stage_cai_runs_the_real_model_through_the_whole_loop(
    tmp_path, rl_tokenizer_dir, rl_model_cfg, parent_dir, compose_train_job
):
    shape = [f"model.{k}={v}" for k, v in rl_model_cfg.items() if k != "name"] + ["model.max_seq_len=256"]
    run_dir = tmp_path / "run"
    steps = "{trainer: {max_steps: 2, val_check_interval: 2, limit_val_batches: 1}}"
    overrides = [
        "stage=cai",
        "trainer=cpu",
        "logger=csv",
        f"tokenizer.path={rl_tokenizer_dir}",
        f"init_from={parent_dir}",
        "cai.limit=8",
        "cai.prompt_sets=[red_team,helpful]",
        "cai.batch_size=4",
        "cai.max_new_tokens=8",
        "cai.val_fraction=0.25",
        f"+cai.sft={steps}",
        f"+cai.dpo={steps}",
        "datamodule.batch_size=2",
        "callbacks.progress_bar.refresh_rate=0",
        *shape,
    ]
    cfg = compose_train_job(overrides, run_dir)
    val_loss = instantiate(cfg.runner)(cfg)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["critiques"] == counts["comparisons"] == 8
    assert counts["sft_train"] + counts["sft_val"] + counts["empty_revisions"] == 8
    assert counts["preferences_train"] + counts["preferences_val"] == counts["preference_pairs"] > 0
    # every prompt sent to the model followed the constitution, and the records say which principle
    critiques = [json.loads(line) for line in (run_dir / "data" / "critiques.jsonl").open()]
    principles = {p for p in manifest["constitution"]["principles"]}
    for record in critiques:
        assert record["model"].startswith("self:") and set(record["principles"]) <= principles
        assert record["conversation"][2]["role"] == "user" and len(record["conversation"]) == 6
    assert manifest["sft"]["status"] == "completed" and manifest["dpo"]["status"] == "completed"
    sft_manifest = json.loads((run_dir / "sft" / "manifest.json").read_text())
    dpo_manifest = json.loads((run_dir / "dpo" / "manifest.json").read_text())
    assert sft_manifest["stage"] == "sft" and sft_manifest["global_step"] == 2
    assert sft_manifest["parent"] == str(parent_dir.resolve())
    assert dpo_manifest["stage"] == "dpo" and dpo_manifest["parent"] == str((run_dir / "sft").resolve())
    assert dpo_manifest["config"]["datamodule"]["train_path"].endswith("preferences_train.jsonl")
    assert val_loss == pytest.approx(dpo_manifest["final_metrics"]["val/loss"])
    assert load_for_inference(run_dir).model_config.d_model == rl_model_cfg["d_model"]  # the chain's final model

    # rerun in the same run dir: nothing is generated or trained again
    before = (run_dir / "data" / "critiques.jsonl").read_bytes()
    cfg = compose_train_job(overrides, run_dir)
    instantiate(cfg.runner)(cfg)
    assert (run_dir / "data" / "critiques.jsonl").read_bytes() == before
    assert json.loads((run_dir / "dpo" / "manifest.json").read_text())["created_utc"] == dpo_manifest["created_utc"]
