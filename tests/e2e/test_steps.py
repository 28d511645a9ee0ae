"""The main job's step plan (no step runs): CAI is evaluated against SFT's report, while the
exported chain and its parent reports stay as they were."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from e2e.steps import BRANCHES, CHECKPOINTS, build_steps
from lmforge.config_paths import conf_dir


def plan(out: Path) -> dict:
    cfg = OmegaConf.load(conf_dir() / "e2e.yaml")
    cfg.out_dir = str(out)
    steps = build_steps(cfg)
    names = [s.name for s in steps]
    assert len(set(names)) == len(names)
    for index, step in enumerate(steps):  # what run_steps requires: every parent runs first
        assert set(step.parents) <= set(names[:index]), step.name
    return {s.name: s for s in steps}


def args(step) -> dict[str, str]:
    return dict(a.split("=", 1) for a in step.command if "=" in a)


def test_cai_is_evaluated_against_sft_and_nothing_else_moves(tmp_path):
    assert CHECKPOINTS == ("pretrain", "sft", "dpo", "rl") and BRANCHES == {"cai": "sft"}
    steps = plan(tmp_path)

    cai = steps["eval_cai"]
    assert cai.parents == ["cai", "eval_sft"] and cai.output == tmp_path / "eval" / "cai"
    assert "src/eval.py" in cai.command
    assert args(cai) == args(steps["eval_sft"]) | {
        "ckpt": str(tmp_path / "cai"),
        "out_dir": str(tmp_path / "eval" / "cai"),
        "label": "cai",
        "parent_report": str(tmp_path / "eval" / "sft"),
    }
    assert args(cai)["eval"] == "quick"
    assert args(steps["cai"])["init_from"] == str(tmp_path / "sft")
    assert "tasks_cai" not in steps  # the CAI claims read the eval's safety items

    # The chain's reports keep their parents, and the export stays RL's.
    assert "parent_report" not in args(steps["eval_pretrain"])
    for child, parent in (("sft", "pretrain"), ("dpo", "sft"), ("rl", "dpo")):
        assert args(steps[f"eval_{child}"])["parent_report"] == str(tmp_path / "eval" / parent)
        assert steps[f"eval_{child}"].parents == [child, f"eval_{parent}"]
    export = args(steps["export"])
    assert export["ckpt"] == str(tmp_path / "rl") and export["gate_report"] == str(tmp_path / "eval" / "rl")
    assert steps["export"].parents == ["eval_rl"]
    assert args(steps["task_quality"])["ckpt"] == str(tmp_path / "rl")
    assert not any(
        str(tmp_path / "cai") in a
        for s in steps.values()
        if s.name not in ("cai", "eval_cai", "redteam_cai")
        for a in s.command
    )


def test_rl_is_trained_and_judged_on_one_task_kind(tmp_path):
    """RL trains on `rl_task_kind`; its parent and it are scored on `rl_eval_n` held-out items of
    that kind, the items its claim is tested on."""
    steps = plan(tmp_path)
    assert "experiment=rl_tasks" in steps["rl"].command
    assert args(steps["rl"])["datamodule.tasks.kind"] == "unit_conversion"
    for name in ("dpo", "rl"):
        step = steps[f"tasks_rl_kind_{name}"]
        assert step.parents == [name] and "scripts/eval_tasks.py" in step.command
        assert args(step) == {
            "ckpt": str(tmp_path / name),
            "n": "300",
            "kind": "unit_conversion",
            "out": str(tmp_path / "tasks_rl_kind" / name / "report.json"),
        }
    assert not [s for s in steps if s.startswith("tasks_rl_kind_") and s[14:] not in ("dpo", "rl")]


def test_pretraining_is_judged_per_held_out_sequence(tmp_path):
    steps = plan(tmp_path)
    step = steps["ppl_pretrain"]
    assert step.parents == ["pretrain"] and "scripts/eval_ppl.py" in step.command
    assert args(step) == {
        "ckpt": str(tmp_path / "pretrain"),
        "shards": str(tmp_path / "shards"),
        "out": str(tmp_path / "ppl" / "report.json"),
    }


def test_cai_claims_get_their_own_400_prompt_safety_run(tmp_path):
    """The eval suite's 25 + 25 safety prompts are too few for a paired test: SFT and CAI (only)
    are scored on scripts/build_redteam_set.py's set by the safety task alone, without a gate."""
    steps = plan(tmp_path)
    prompts = tmp_path / "redteam" / "set" / "prompts.jsonl"
    assert args(steps["redteam_set"]) == {"out": str(prompts)}
    assert "scripts/build_redteam_set.py" in steps["redteam_set"].command
    runs = sorted(name for name in steps if name.startswith("redteam_") and name != "redteam_set")
    assert runs == ["redteam_cai", "redteam_sft"]
    for name in ("sft", "cai"):
        step = steps[f"redteam_{name}"]
        assert step.parents == [name, "redteam_set"] and step.output == tmp_path / "redteam" / name
        assert args(step) == {
            "ckpt": str(tmp_path / name),
            "eval": "redteam",
            "eval.tasks.safety.prompts": str(prompts),
            "out_dir": str(tmp_path / "redteam" / name),
            "label": name,
        }
    suite = OmegaConf.load(conf_dir() / "eval" / "redteam.yaml")
    assert list(suite.tasks) == ["safety"] and suite.gate.enabled is False
