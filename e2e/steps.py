"""The end-to-end job as a list of CLI steps (each one the command a user would type)."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from e2e.runner import Step
from lmforge.config_paths import conf_dir


def _has_stage(name: str) -> bool:
    return (conf_dir() / "stage" / f"{name}.yaml").exists()


# The checkpoints the report compares, in lineage order (a stage this checkout lacks is left out).
CHECKPOINTS = ("pretrain", "sft", "dpo") + (("rl",) if _has_stage("rl") else ())
# RL and its parent, scored on held-out items of the task kind RL trains on (e2e/stage_claims.py).
RL_CLAIM_CHECKPOINTS = ("dpo", "rl")
# Checkpoints trained off that chain, each with its parent in it: evaluated against the parent's
# report, never exported (the export stays the chain's last checkpoint).
BRANCHES = {"cai": "sft"} if _has_stage("cai") else {}


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _quote(text: str) -> str:
    """`text` inside a single-quoted Hydra value (one override, spaces and all)."""
    return str(text).replace("\\", "\\\\").replace("'", "\\'")


def redteam_steps(out: Path, checkpoints: list[str]) -> list[Step]:
    """The CAI claims' prompt set (HarmBench's 200 harmful behaviours, 200 benign GSM8K questions:
    scripts/build_redteam_set.py) and the safety task on it for each of `checkpoints`: the eval
    suite's 25 + 25 packaged prompts are too few for a paired test."""
    prompts = out / "redteam" / "set" / "prompts.jsonl"
    steps = [
        Step(
            "redteam_set",
            _python("scripts/build_redteam_set.py", f"out={prompts}"),
            prompts.parent,
            description="HarmBench 200 harmful + GSM8K 200 benign prompts",
        )
    ]
    for name in checkpoints:
        command = _python(
            "src/eval.py",
            f"ckpt={out / name}",
            "eval=redteam",
            f"eval.tasks.safety.prompts={prompts}",
            f"out_dir={out / 'redteam' / name}",
            f"label={name}",
        )
        steps.append(
            Step(
                f"redteam_{name}",
                command,
                out / "redteam" / name,
                parents=[name, "redteam_set"],
                description=f"safety task on the 400-prompt set, {name}",
            )
        )
    return steps


def build_steps(cfg: DictConfig) -> list[Step]:
    out = Path(cfg.out_dir)
    corpus, tokenizer, shards = out / "corpus", out / "tokenizer", out / "shards"
    common = [
        f"model={cfg.model}",
        f"tokenizer.path={tokenizer}",
        "logger=wandb_csv",
        "callbacks.progress_bar.refresh_rate=20",
        *cfg.train_overrides,
    ]

    def train(stage: str, parent: str | None, max_steps: int, *extra: str) -> Step:
        args = [f"stage={stage}", f"hydra.run.dir={out / stage}", f"trainer.max_steps={max_steps}", *common, *extra]
        if parent:
            args.append(f"init_from={out / parent}")
        parents = ["shards"] + ([parent] if parent else [])
        return Step(
            stage,
            _python("src/train.py", *args),
            out / stage,
            parents=parents,
            description=f"{stage} ({max_steps} steps)" + (f" from {parent}" if parent else ""),
        )

    curate = ["-m", "data_pipeline", f"output={corpus}"]
    if cfg.data_input:
        curate.append(f"input={cfg.data_input}")
    steps = [
        Step("curate", _python(*curate), corpus, description="raw pages -> curated corpus"),
        Step(
            "tokenizer",
            _python(
                "src/train_tokenizer.py", f"corpus_dir={corpus}", f"out_dir={tokenizer}", f"vocab_size={cfg.vocab_size}"
            ),
            tokenizer,
            parents=["curate"],
            description="byte-level BPE",
        ),
        Step(
            "shards",
            _python(
                "-m",
                "data_pipeline.shards",
                f"corpus={corpus}",
                f"tokenizer={tokenizer}",
                f"out={shards}",
                f"seq_len={cfg.seq_len}",
                f"val_fraction={cfg.val_fraction}",
            ),
            shards,
            parents=["tokenizer"],
            description="tokenize + pack into webdataset shards",
        ),
        train(
            "pretrain",
            None,
            cfg.steps.pretrain,
            "data=curated",
            f"data.shards_dir={shards}",
            f"data.corpus_dir={corpus}",
            f"model.max_seq_len={cfg.seq_len}",
        ),
        Step(
            "ppl_pretrain",
            _python(
                "scripts/eval_ppl.py",
                f"ckpt={out / 'pretrain'}",
                f"shards={shards}",
                f"out={out / 'ppl' / 'report.json'}",
            ),
            out / "ppl",
            parents=["pretrain"],
            description="held-out log-likelihood, pretrained vs untrained, per sequence",
        ),
        train("sft", "pretrain", cfg.steps.sft, "experiment=sft_tiny"),
        train(
            "dpo",
            "sft",
            cfg.steps.dpo,
            "experiment=dpo_tiny",
            f"module.reference_cache_dir={out / 'dpo' / 'reference_cache'}",
        ),
    ]
    if "rl" in CHECKPOINTS:
        # Reasoning RL with the verifiable task reward (conf/experiment/rl_tasks.yaml) on one task kind
        # where the DPO model it starts from already gets about half right, so each group's rewards differ.
        steps.append(
            train(
                "rl",
                "dpo",
                cfg.steps.rl,
                "experiment=rl_tasks",
                f"datamodule.tasks.kind={cfg.rl_task_kind}",
                f"trainer.val_check_interval={cfg.steps.rl}",
            )
        )
    if "cai" in BRANCHES:
        # A short Constitutional-AI pass from SFT: critique/revise + judged pairs, then SFT and DPO.
        steps.append(train("cai", BRANCHES["cai"], cfg.steps.cai_train, f"cai.limit={cfg.steps.cai_prompts}"))

    def evaluate(name: str, parent: str | None) -> Step:
        """The eval suite on checkpoint `name`, its report naming `parent`'s so the gate can compare."""
        report = out / "eval" / name
        eval_args = [
            "src/eval.py",
            f"ckpt={out / name}",
            f"eval={cfg.eval_suite}",
            f"out_dir={report}",
            f"label={name}",
            f"cache_path={out / 'eval' / 'request_cache.sqlite'}",
        ]
        if parent:
            eval_args.append(f"parent_report={out / 'eval' / parent}")
        return Step(
            f"eval_{name}",
            _python(*eval_args),
            report,
            parents=[name] + ([f"eval_{parent}"] if parent else []),
            description=f"benchmarks + safety + gate on {name}" + (f" vs {parent}" if parent else ""),
        )

    def held_out_tasks(folder: str, name: str, description: str, *options: str) -> Step:
        """scripts/eval_tasks.py on checkpoint `name`, its report in <out>/<folder>/<name>/report.json."""
        report_dir = out / folder / name
        command = _python("scripts/eval_tasks.py", f"ckpt={out / name}", *options, f"out={report_dir / 'report.json'}")
        return Step(f"{folder}_{name}", command, report_dir, parents=[name], description=description)

    # Held-out generated tasks (format, accuracy, preference margin) and the benchmark suite
    # for every checkpoint; each report names its parent's so the gate can compare.
    previous = None
    for name in CHECKPOINTS:
        steps.append(evaluate(name, previous))
        steps.append(held_out_tasks("tasks", name, f"held-out task accuracy of {name}", f"n={cfg.eval_tasks_n}"))
        if "rl" in CHECKPOINTS and name in RL_CLAIM_CHECKPOINTS:
            # RL's claim is tested on the kind it trains on, with as many held-out items as there are.
            steps.append(
                held_out_tasks(
                    "tasks_rl_kind",
                    name,
                    f"held-out {cfg.rl_task_kind} accuracy of {name} (the RL claim)",
                    f"n={cfg.rl_eval_n}",
                    f"kind={cfg.rl_task_kind}",
                )
            )
        previous = name
    # A branch (CAI from SFT) gets the same suite against its parent's report: its safety items
    # are paired with the parent's in the report's claims (e2e/stage_claims.py). No held-out task
    # run: the CAI claims read the safety task's per-item refusals.
    for name, parent in BRANCHES.items():
        steps.append(evaluate(name, parent))
    if BRANCHES:
        steps += redteam_steps(out, sorted({n for pair in BRANCHES.items() for n in pair}))
    final = CHECKPOINTS[-1]
    export_dir = out / "export"
    steps.append(
        Step(
            "export",
            _python(
                "-m",
                "serving.export",
                f"ckpt={out / final}",
                f"quant={cfg.quant}",
                f"out={export_dir}",
                f"gate_report={out / 'eval' / final}",
                f"val_shards={shards}",
                f"force={str(cfg.force_export).lower()}",
                f"gate={cfg.gate}",
                *([f"gate_reason='{_quote(cfg.gate_reason)}'"] if cfg.gate_reason else []),
            ),
            export_dir,
            parents=[f"eval_{final}"],
            description=f"torchao {cfg.quant} -> compressed-tensors",
        )
    )
    # The export judged on the task, against the same weights in bf16 (serving/task_quality.py).
    steps.append(
        Step(
            "task_quality",
            _python(
                "-m",
                "serving.task_quality",
                f"ckpt={out / final}",
                f"exports=[{export_dir}]",
                f"n={cfg.eval_tasks_n}",
                f"out={out / 'task_quality'}",
            ),
            out / "task_quality",
            parents=["export"],
            description=f"{cfg.quant} export vs bf16 on held-out tasks",
        )
    )
    if cfg.serve_smoke:
        steps.append(
            Step(
                "serve_smoke",
                _python("-m", "e2e.serve_smoke", str(export_dir), str(out / "serve_smoke")),
                out / "serve_smoke",
                parents=["export"],
                description="OpenAI-compatible server on loopback",
            )
        )
    return steps
