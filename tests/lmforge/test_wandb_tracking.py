"""What a training job leaves in its offline W&B run, read back from the transaction log as
`wandb sync` would upload it: group / job type / name, the full config with git commit and
tokenizer and data fingerprints, sample-generation tables, and the checkpoint as a `model`
artifact naming its parent's (SFT -> DPO); an eval report (`eval-report`) and an export (`export`)
of a checkpoint as artifacts naming its `model` artifact."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from lmforge.tokenizer import Tokenizer
from tests.support.compose import REPO
from tests.support.wandb_records import iter_records
from tests.support.wandb_records import run_config as wandb_run_config


def shape(model_cfg: dict) -> list[str]:
    return [f"model.{k}={v}" for k, v in model_cfg.items() if k != "name"]


COMMON = [
    "trainer=cpu",
    "logger=wandb",
    "trainer.max_steps=4",
    "trainer.val_check_interval=4",
    "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
    "callbacks.progress_bar.refresh_rate=0",
    "callbacks.samples.every_n_steps=2",
    "callbacks.samples.num_prompts=2",
    "callbacks.samples.max_new_tokens=6",
    "optim.warmup_steps=1",
    "datamodule.batch_size=4",
    "datamodule.tasks.n_train=32",
    "datamodule.tasks.n_val=4",
]


class OfflineRun:
    def __init__(self, run_dir: Path):
        (self.log_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
        self.files = self.log_file.parent / "files"
        self.records = self.wait_for_exit_record()
        self.config = wandb_run_config(self.log_file)

    def wait_for_exit_record(self, timeout: float = 60.0) -> list:
        """`run.finish()` returns before wandb's writer process has flushed the log; a finished
        run's log ends with its `exit` record and stops growing."""
        deadline, size = time.monotonic() + timeout, -1
        while True:
            records = list(iter_records(self.log_file))
            done = any(r.WhichOneof("record_type") == "exit" for r in records)
            if (done and self.log_file.stat().st_size == size) or time.monotonic() > deadline:
                return records
            size = self.log_file.stat().st_size
            time.sleep(0.5)

    def of_kind(self, kind: str) -> list:
        return [getattr(r, kind) for r in self.records if r.WhichOneof("record_type") == kind]

    @property
    def run(self):
        return self.of_kind("run")[0]

    def history_keys(self) -> set[str]:
        """Top-level history keys (a table is logged as nested keys `samples.path`, ...)."""
        return {item.key or item.nested_key[0] for h in self.of_kind("history") for item in h.item}

    def table(self, key: str) -> dict:
        """The last logged table under `key` (W&B writes one file per log call)."""
        paths = sorted(self.files.glob(f"media/table/{key}_*.table.json"), key=lambda p: int(p.name.split("_")[1]))
        assert paths, sorted(p.name for p in self.files.rglob("*"))
        return json.loads(paths[-1].read_text())

    def model_artifacts(self) -> list:
        return [a for a in self.of_kind("artifact") if a.type == "model"]


EVAL_REPORT = """
import sys
from pathlib import Path
from lmforge.callbacks.wandb_lineage import group_with_training_run
from lmforge.eval.report import log_wandb
group_with_training_run(sys.argv[1])
log_wandb({"metrics": {"arith": {"accuracy": 0.5}}, "gate": None, "config": {}}, Path(sys.argv[2]), {"mode": "offline"})
"""


def fit(compose_train_job, overrides: list[str], run_dir: Path) -> dict:
    from lmforge.training import fit_from_config

    return fit_from_config(compose_train_job(overrides, run_dir))


@pytest.mark.slow
def test_sft_then_dpo_runs_carry_config_samples_and_checkpoint_lineage(
    tmp_path, task_tokenizer_dir, model_cfg, compose_train_job
):
    sft_dir, dpo_dir = tmp_path / "sft", tmp_path / "dpo"
    tokenizer = [f"tokenizer.path={task_tokenizer_dir}"]
    sft_manifest = fit(compose_train_job, ["stage=sft", *COMMON, *tokenizer, *shape(model_cfg)], sft_dir)
    sft = OfflineRun(sft_dir)

    # Identity: a single run's group is its stage (no sweep), job type the stage, name its overrides.
    assert (sft.run.run_group, sft.run.job_type) == ("sft", "sft")
    assert sft.run.display_name.startswith("stage=sft,trainer=cpu,logger=wandb")
    assert "tokenizer.path" not in sft.run.display_name  # paths stay out of the name

    # The full composed config, with lineage.
    config = sft.config
    assert config["trainer"]["max_steps"] == 4 and config["datamodule"]["batch_size"] == 4
    assert config["optim"]["name"] == "adamw" and config["seed"] == 1337
    assert "trainer.max_steps=4" in config["hydra"]["overrides"] and config["hydra"]["choices"]["stage"] == "sft"
    lineage = config["lineage"]
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", lineage["git_commit"]), lineage
    assert lineage["tokenizer_fingerprint"] == Tokenizer.load(task_tokenizer_dir).fingerprint
    assert re.fullmatch(r"[0-9a-f]{64}", lineage["data_fingerprint"])
    assert lineage["data_fingerprint"] == sft_manifest["data_fingerprint"]

    # Sample generations at steps 2 and 4: prompt, completion, reward (none for SFT).
    assert "samples" in sft.history_keys()
    table = sft.table("samples")
    assert table["columns"] == ["step", "prompt", "completion", "reward"]
    assert sorted({row[0] for row in table["data"]}) == [2, 4] and len(table["data"]) == 4
    assert all(isinstance(row[1], str) and row[1] for row in table["data"]) and table["data"][0][3] is None

    # The final checkpoint as a model artifact; the manifest records it for children.
    (artifact,) = sft.model_artifacts()
    assert artifact.name == f"sft-{sft.run.run_id}" == sft_manifest["wandb"]["artifact"]
    refs = {entry.path: entry.ref for entry in artifact.manifest.contents}
    assert refs["last.ckpt"] == Path(sft_manifest["last_checkpoint"]).as_uri()
    assert json.loads(artifact.metadata)["global_step"] == 4
    assert json.loads((sft_dir / "manifest.json").read_text())["wandb"]["run_id"] == sft.run.run_id

    # An eval report of this checkpoint joins the training run's group: what src/eval.py does in
    # its own process before the eval's wandb.init (which sets no group and reads the environment).
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    plt.figure().savefig(eval_dir / "metrics.png")
    env = {k: v for k, v in os.environ.items() if k != "WANDB_RUN_GROUP"}
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    subprocess.run(
        [sys.executable, "-c", EVAL_REPORT, sft_manifest["last_checkpoint"], str(eval_dir)],
        env=env,
        check=True,
        timeout=120,
    )
    (eval_log,) = eval_dir.glob("wandb/offline-run-*/run-*.wandb")
    eval_run = [r.run for r in iter_records(eval_log) if r.WhichOneof("record_type") == "run"][0]
    assert (eval_run.run_group, eval_run.job_type) == (sft.run.run_group, "eval")

    dpo_manifest = fit(
        compose_train_job,
        ["stage=dpo", *COMMON, *tokenizer, *shape(model_cfg), f"init_from={sft_dir}", "optim.lr=1e-3"],
        dpo_dir,
    )
    dpo = OfflineRun(dpo_dir)
    assert dpo.run.job_type == "dpo" and dpo.config["lineage"]["parent"] == str(sft_dir.resolve())
    (dpo_artifact,) = dpo.model_artifacts()
    metadata = json.loads(dpo_artifact.metadata)
    assert metadata["parent_artifact"] == sft_manifest["wandb"]["artifact"]  # the lineage edge, offline
    assert metadata["parent_checkpoint"] == dpo_manifest["parent"]
    # DPO's implicit reward beta * (log pi - log pi_ref) of each greedy completion.
    rewards = [row[3] for row in dpo.table("samples")["data"]]
    assert rewards and all(isinstance(r, float) for r in rewards)
    assert any(r != 0.0 for r in rewards)  # the policy has moved off the reference after 4 steps


@pytest.mark.slow
def test_rl_run_logs_reward_components_and_their_samples(tmp_path, rl_tokenizer_dir, rl_model_cfg, compose_train_job):
    overrides = [
        "stage=rl",
        *COMMON,
        f"tokenizer.path={rl_tokenizer_dir}",
        *shape(rl_model_cfg),
        "module.group_size=2",
        "module.sampling.max_new_tokens=6",
        "datamodule.batch_size=2",
        "module.reward={task_answer: 1.0, reasoning_format: 0.5}",  # naming rewards replaces the default
    ]
    fit(compose_train_job, overrides, tmp_path / "rl")
    rl = OfflineRun(tmp_path / "rl")
    keys = rl.history_keys()
    for part in ("task_answer", "reasoning_format"):
        assert {f"train/reward/{part}", f"val/reward/{part}"} <= keys, sorted(keys)
    assert "val/accuracy" in keys  # the verifier's share of correct held-out answers, beside the reward curves
    table = rl.table("samples")
    assert table["columns"] == [
        "step",
        "prompt",
        "completion",
        "reward",
        "reward/reasoning_format",
        "reward/task_answer",
    ]
    for row in table["data"]:
        assert row[3] == pytest.approx(row[5] + 0.5 * row[4])  # the weighted sum of the components


def test_data_fingerprint_follows_content_not_paths(tmp_path):
    from lmforge.callbacks.wandb_lineage import data_fingerprint

    licenses = Path("/usr/share/common-licenses")
    copy = tmp_path / "train.jsonl"
    copy.write_bytes((licenses / "GPL-3").read_bytes())
    base = {"_target_": "x.DataModule", "batch_size": 8, "num_workers": 0}
    gpl3 = data_fingerprint({**base, "train_path": str(licenses / "GPL-3")})
    assert data_fingerprint({**base, "train_path": str(copy)}) == gpl3  # same bytes elsewhere
    assert data_fingerprint({**base, "train_path": str(licenses / "GPL-2")}) != gpl3
    assert data_fingerprint({**base, "train_path": str(copy), "num_workers": 4}) == gpl3  # not data
    assert data_fingerprint({**base, "train_path": str(copy), "batch_size": 16}) != gpl3
    copy.write_bytes(copy.read_bytes() + b"\n")
    assert data_fingerprint({**base, "train_path": str(copy)}) != gpl3


def test_run_identity_groups_a_sweep_and_names_jobs_by_their_overrides(monkeypatch):
    from lmforge.callbacks.wandb_lineage import run_identity

    monkeypatch.delenv("WANDB_RUN_GROUP", raising=False)
    overrides = ["optim.lr=0.001", "tokenizer.path=/data/tok", "hydra.run.dir=x", "model=tiny"]
    job = run_identity("dpo", Path("runs/dpo/multirun_t/0"), overrides, "runs/dpo/multirun_t")
    assert job == {"group": "dpo/multirun_t", "job_type": "dpo", "name": "optim.lr=0.001,model=tiny"}
    single = run_identity("sft", Path("runs/sft/2026-12-03_09-00-00"), [], None)
    assert single == {"group": "sft", "job_type": "sft", "name": "sft/2026-12-03_09-00-00"}
    monkeypatch.setenv("WANDB_RUN_GROUP", "pipeline-7")
    assert run_identity("sft", Path("r"), [], None)["group"] == "pipeline-7"
    long = run_identity("sft", Path("r"), [f"model.d_model={i}" for i in range(40)], None)["name"]
    assert len(long) == 120 and long.endswith("...")


# ----- eval reports and exports as artifacts naming their checkpoint's `model` artifact -----
@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, task_tokenizer_dir) -> dict:
    """A 4-step SFT run logged to W&B offline: its manifest names its `model` artifact."""
    from hydra.core.global_hydra import GlobalHydra

    from lmforge.training import fit_from_config
    from tests.support.compose import compose_job

    torch_shape = dict(vocab_size=512, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=128)
    run_dir = tmp_path_factory.mktemp("artifact_lineage") / "sft"
    overrides = ["stage=sft", *COMMON, f"tokenizer.path={task_tokenizer_dir}", *shape(torch_shape)]
    try:
        manifest = fit_from_config(compose_job(overrides, run_dir))
    finally:
        GlobalHydra.instance().clear()
    OfflineRun(run_dir)  # the training run's log is complete before another run starts
    assert manifest["wandb"]["artifact"] == f"sft-{manifest['wandb']['run_id']}"
    return manifest


def _artifacts(run_dir: Path, kind: str) -> list:
    return [a for a in OfflineRun(run_dir).of_kind("artifact") if a.type == kind]


def test_eval_report_is_an_artifact_naming_the_checkpoint_artifact(sft_run, tmp_path):
    """`run_suite` with `wandb.enabled=true` (what src/eval.py runs) on the trained checkpoint."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from lmforge.config_paths import conf_dir
    from lmforge.eval.runner import run_suite
    from lmforge.eval.schema import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = OmegaConf.to_container(compose(config_name="eval", overrides=["wandb.enabled=true"]), resolve=False)
    out_dir = tmp_path / "eval"
    cfg.update(ckpt=sft_run["last_checkpoint"], out_dir=str(out_dir), cache_path=None, benchmarks_root=str(tmp_path))
    cfg["eval"]["tasks"] = {"safety": {"limit": 2, "max_new_tokens": 4}}  # packaged prompts: no benchmark files
    report = run_suite(cfg)

    (artifact,) = _artifacts(out_dir, "eval-report")
    metadata = json.loads(artifact.metadata)
    assert metadata["parent_artifact"] == sft_run["wandb"]["artifact"]  # the lineage edge, offline
    assert metadata["parent_checkpoint"] == sft_run["last_checkpoint"]
    assert metadata["checkpoint_sha256"] == report["binding"]["checkpoint_sha256"]
    assert metadata["suite_sha256"] == report["binding"]["suite_sha256"] and metadata["suite"] == "quick"
    refs = {entry.path: entry.ref for entry in artifact.manifest.contents}
    assert refs["report.json"] == (out_dir / "report.json").resolve().as_uri()  # a reference, not a copy
    assert {"summary.html", "metrics.png", "samples/safety.jsonl"} <= set(refs)
    assert not any(path.startswith(("wandb/", ".hydra")) for path in refs)


def test_export_is_an_artifact_naming_the_checkpoint_artifact(sft_run, tmp_path):
    from lmforge.callbacks.wandb_lineage import checkpoint_artifact
    from lmforge.checkpoint import resolve_checkpoint
    from serving.export import ExportConfig, run_export

    cfg = dict(ckpt=sft_run["run_dir"], out=str(tmp_path / "export"), report=False, gate="skip", gate_reason="test")
    out = run_export(ExportConfig(**cfg, wandb={"enabled": True, "mode": "offline"}))
    assert not (out / "wandb").exists()  # the run's files stay out of the export (its content hash)

    (artifact,) = _artifacts(tmp_path, "export")
    metadata = json.loads(artifact.metadata)
    assert metadata["parent_artifact"] == sft_run["wandb"]["artifact"]
    assert metadata["parent_checkpoint"] == str(resolve_checkpoint(sft_run["run_dir"]))
    assert (metadata["quant"], metadata["format"], metadata["gate_verdict"]) == ("none", "dense", "skipped")
    refs = {entry.path: entry.ref for entry in artifact.manifest.contents}
    assert refs["model.safetensors"] == (out / "model.safetensors").resolve().as_uri()
    assert metadata["size_bytes"] == sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    assert set(refs) == {p.name for p in out.iterdir() if p.is_file()}
    # An eval report of this export names the same `model` artifact (through the export's manifest).
    assert checkpoint_artifact(str(out)) == sft_run["wandb"]["artifact"]
    # Off by default: an export without `wandb.enabled` starts no run.
    run_export(ExportConfig(**{**cfg, "out": str(tmp_path / "plain" / "export")}))
    assert not (tmp_path / "plain" / "wandb").exists()
