"""`stage=cai`: generate Constitutional-AI data with the model, then run SFT and DPO on it.

    python src/train.py stage=cai init_from=<sft run dir | .ckpt | HF dir> [cai.judge=endpoint ...]

1. SL-CAI data: every prompt (red-team and helpful sets) is answered, critiqued and revised
   against sampled principles (`lmforge.cai.critique`) -> `critiques.jsonl` (audit) ->
   `sft_{train,val}.jsonl` (prompt, final revision).
2. RLAIF data: a judge compares two answers per prompt under a sampled principle
   (`lmforge.cai.judge`) -> `comparisons.jsonl` (audit) -> `preferences_{train,val}.jsonl`.
3. SFT: the composed config's own `module`/`datamodule` (conf/stage/cai.yaml: the SFT stage on
   the revisions), from `init_from`, in `<run_dir>/sft`, with `cai.sft` merged on top.
4. DPO: `stage=dpo` composed by Hydra, from the SFT run, in `<run_dir>/dpo`, with `cai.dpo` on top.

Rerunning with the same `hydra.run.dir` resumes: prompts already in the audit logs are skipped
and a sub-run whose manifest says "completed" is not repeated.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from tqdm import tqdm

from lmforge.cai.chat import ChatModel, EndpointChatModel, LocalChatModel
from lmforge.cai.constitution import Constitution, load_constitution
from lmforge.cai.critique import critique_and_revise
from lmforge.cai.judge import Judge, LogprobJudge, TextJudge, comparison_records, comparisons_for
from lmforge.cai.records import (
    COMPARISONS_FILE,
    CRITIQUES_FILE,
    DATA_MANIFEST_FILE,
    AppendOnlyLog,
    PromptRecord,
    load_prompts,
    write_preference_files,
    write_sft_files,
)
from lmforge.checkpoint import load_for_inference
from lmforge.config_paths import conf_dir
from lmforge.config_schema import CAIConfig, CAINodeConfig, EndpointConfig
from lmforge.formats.checkpoint_meta import MANIFEST as RUN_MANIFEST_FILE
from lmforge.formats.checkpoint_meta import read_run_manifest, write_run_manifest
from lmforge.generate import SamplingConfig
from lmforge.tokenizer import Tokenizer, check_fingerprint

log = logging.getLogger(__name__)

CONF_DIR = conf_dir()


# Merge blocks for the two training steps, not fields of the generation config.
STEP_BLOCKS = ("sft", "dpo")


def cai_config_from(node: DictConfig) -> CAIConfig:
    """The generation config of a `cai` node; the node's schema (`CAINodeConfig`) names any unknown key."""
    resolved = OmegaConf.to_container(node, resolve=True)  # interpolations point outside the node
    values = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(CAINodeConfig), resolved))
    return CAIConfig(**{k: v for k, v in values.items() if k not in STEP_BLOCKS})


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---------------------------------------------------------------- models
def pick_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def endpoint_chat(cfg: EndpointConfig, temperature: float, max_tokens: int) -> EndpointChatModel:
    from lmforge.client import OpenAIClient

    client = OpenAIClient(
        cfg.base_url,
        api_key=os.environ.get(cfg.api_key_env),
        timeout=cfg.timeout_s,
        max_retries=cfg.max_retries,
        max_concurrency=cfg.concurrency,
        model=cfg.model,
    )
    return EndpointChatModel(
        client, cfg.model, temperature=temperature, max_tokens=max_tokens, name=f"endpoint:{cfg.model}@{cfg.base_url}"
    )


def build_models(cfg: CAIConfig, init_from: str | None, tokenizer_path: str) -> tuple[ChatModel, Judge]:
    """The generator (answers, critiques, revisions) and the judge named by the config."""
    needs_local = cfg.generator == "self" or cfg.judge.startswith("self")
    local = judge_model = None
    if needs_local:
        if not init_from:
            raise ValueError("stage=cai with a self generator or judge needs init_from=<checkpoint, run dir or HF dir>")
        loaded = load_for_inference(init_from, device=pick_device(cfg.device))
        tokenizer = Tokenizer.load(tokenizer_path)
        if loaded.tokenizer is not None:
            check_fingerprint(loaded.tokenizer.fingerprint, tokenizer.fingerprint, f"init_from={init_from}")
        sampling = SamplingConfig(
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p
        )
        local = LocalChatModel(loaded.model, tokenizer, sampling, cfg.batch_size, name=f"self:{init_from}")
        judge_model = loaded.model
    generator = local if cfg.generator == "self" else endpoint_chat(cfg.endpoint, cfg.temperature, cfg.max_new_tokens)
    if cfg.judge == "self_logprob":
        judge: Judge = LogprobJudge(judge_model, local.tokenizer)
    elif cfg.judge == "self_text":
        greedy = SamplingConfig(max_new_tokens=8, temperature=0.0)
        judge = TextJudge(
            LocalChatModel(judge_model, local.tokenizer, greedy, cfg.batch_size, name="self-text"), name="self-text"
        )
    else:
        judge = TextJudge(
            endpoint_chat(cfg.endpoint, 0.0, cfg.endpoint.max_tokens), name=f"endpoint:{cfg.endpoint.model}"
        )
    return generator, judge


# ---------------------------------------------------------------- data generation
def generate_cai_data(
    generator: ChatModel,
    judge: Judge,
    prompts: Sequence[PromptRecord],
    constitution: Constitution,
    cfg: CAIConfig,
    data_dir: Path,
) -> dict[str, Any]:
    """Fill the audit logs (skipping ids already there), then rewrite the SFT and DPO files."""
    data_dir.mkdir(parents=True, exist_ok=True)
    critiques = AppendOnlyLog(data_dir / CRITIQUES_FILE)
    todo = [p for p in prompts if p.id not in critiques.done]
    if len(todo) < len(prompts):
        log.info(
            "resuming: %d of %d prompts already critiqued in %s", len(prompts) - len(todo), len(prompts), critiques.path
        )
    with tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc="CAI critique + revise", unit="prompt") as bar:
        for batch in chunks(todo, cfg.batch_size):
            critiques.append(critique_and_revise(generator, batch, constitution, cfg.rounds, cfg.seed))
            bar.update(len(batch))

    comparisons = AppendOnlyLog(data_dir / COMPARISONS_FILE)
    pending = [c for c in critiques.records() if c["id"] not in comparisons.done]
    total = len(critiques.records())
    with tqdm(total=total, initial=total - len(pending), desc=f"CAI judge ({judge.name})", unit="pair") as bar:
        for batch in chunks(pending, cfg.batch_size):
            samples = None
            if cfg.pair_source == "samples":
                replies = generator.reply([[{"role": "user", "content": c["prompt"]}] for c in batch for _ in (0, 1)])
                samples = {c["id"]: (replies[2 * i], replies[2 * i + 1]) for i, c in enumerate(batch)}
            pairs = comparisons_for(batch, constitution, cfg.pair_source, cfg.seed, samples)
            comparisons.append(comparison_records(judge, pairs, cfg.min_margin, cfg.pair_source))
            bar.update(len(batch))

    all_critiques, all_comparisons = critiques.records(), comparisons.records()
    decided = [c for c in all_comparisons if c["chosen"] is not None]
    counts: dict[str, Any] = {
        "prompts": len(prompts),
        "critiques": len(all_critiques),
        "comparisons": len(all_comparisons),
        "preference_pairs": len(decided),
        "corrupt_log_lines": critiques.corrupt_lines + comparisons.corrupt_lines,
        "critiques_by_set": dict(Counter(c.get("set", "") for c in all_critiques)),
        "critiques_by_principle": dict(Counter(p for c in all_critiques for p in c["principles"])),
        "pairs_by_principle": dict(Counter(c["principle"] for c in decided)),
        "revision_differs_from_initial": sum(c["revision"].strip() != c["initial"].strip() for c in all_critiques),
    }
    counts.update(write_sft_files(all_critiques, data_dir, cfg.val_fraction))
    counts.update(write_preference_files(all_comparisons, data_dir, cfg.val_fraction))
    truncated = getattr(generator, "truncated_prompts", 0)
    if truncated:
        counts["truncated_prompts"] = truncated
        log.warning("%d prompts were longer than the model's context and kept only their last tokens", truncated)
    return counts


# ---------------------------------------------------------------- training steps
def compose_stage_nodes(stage: str) -> DictConfig:
    """`module` and `datamodule` of `stage=<stage>`, composed by Hydra (unresolved: their
    `${model}`, `${optim}` ... resolve against whichever root config they are grafted onto)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = [f"stage={stage}"]
    if GlobalHydra.instance().is_initialized():  # inside src/train.py's @hydra.main
        composed = compose(config_name="train", overrides=overrides)
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            composed = compose(config_name="train", overrides=overrides)
    return OmegaConf.masked_copy(composed, ["module", "datamodule"])


def step_config(
    cfg: DictConfig,
    step: str,
    run_dir: Path,
    init_from: str,
    data: dict[str, str],
    stage_nodes: DictConfig | None = None,
) -> DictConfig:
    """A copy of the CAI config set up as one ordinary training run."""
    sub = copy.deepcopy(cfg)
    with open_dict(sub):
        sub.pop("runner", None)
        sub.pop("hydra", None)  # present only when composed with return_hydra_config (tests)
        sub.cai.data_dir = str(Path(cfg.cai.data_dir).resolve())  # before run_dir moves under it
        if stage_nodes is not None:
            sub.module, sub.datamodule = stage_nodes.module, stage_nodes.datamodule
        sub.run_dir, sub.init_from, sub.resume = str(run_dir), init_from, None
        for key, value in data.items():
            sub.datamodule[key] = value
        sub.merge_with(cfg.cai.get(step) or {})
    return sub


def completed_manifest(run_dir: Path) -> dict | None:
    manifest = read_run_manifest(run_dir)
    return manifest if manifest.get("status") == "completed" else None


def run_step(cfg: DictConfig, step: str) -> dict:
    from lmforge.training import fit_from_config

    run_dir = Path(cfg.run_dir)
    done = completed_manifest(run_dir)
    if done is not None:
        log.info("cai %s: %s already completed; not repeated", step, run_dir)
        return done
    log.info("cai %s: training in %s from %s", step, run_dir, cfg.init_from)
    return fit_from_config(cfg)


def step_summary(manifest: dict | None, skipped: str | None = None) -> dict:
    if manifest is None:
        return {"status": f"skipped: {skipped}"}
    return {
        key: manifest.get(key)
        for key in ("status", "run_dir", "global_step", "final_metrics", "best_checkpoint", "last_checkpoint")
    }


# ---------------------------------------------------------------- entry
def train_on_generated_data(
    cfg: DictConfig,
    step: str,
    parent: str,
    data_dir: Path,
    files: str,
    enabled: bool,
    counts: dict[str, int],
    what: str,
    stage_nodes: DictConfig | None = None,
) -> tuple[dict | None, str | None]:
    """Run `step` on `<data_dir>/<files>_{train,val}.jsonl`: its manifest, or None and why it was skipped."""
    n_train, n_val = counts[f"{files}_train"], counts[f"{files}_val"]
    if not enabled:
        return None, f"cai.run_{step}=false"
    if n_train == 0 or n_val == 0:
        return None, f"too few {what} ({n_train} train / {n_val} val)"
    paths = {
        "train_path": str((data_dir / f"{files}_train.jsonl").resolve()),
        "val_path": str((data_dir / f"{files}_val.jsonl").resolve()),
        "tasks": None,
    }
    return run_step(step_config(cfg, step, Path(cfg.run_dir) / step, parent, paths, stage_nodes), step), None


def run_cai(cfg: DictConfig) -> float | None:
    """The `runner` of conf/stage/cai.yaml: data, then SFT, then DPO; returns the last val/loss."""
    from lmforge.training import ensure_tokenizer

    started = time.time()
    cai = cai_config_from(cfg.cai)
    if (cai.run_sft or cai.run_dpo) and not cfg.init_from:
        raise ValueError(
            "stage=cai trains the model it critiques with: set init_from=<sft run dir | .ckpt | HF dir> "
            "(or cai.run_sft=false cai.run_dpo=false to only generate data)"
        )
    run_dir, data_dir = Path(cfg.run_dir), Path(cai.data_dir)
    ensure_tokenizer(cfg)
    torch.manual_seed(cai.seed)
    constitution = load_constitution(cai.constitution)
    prompts = load_prompts(cai.prompt_sets, cai.limit)
    if not prompts:
        raise ValueError(f"cai.prompt_sets={cai.prompt_sets} hold no prompts")
    generator, judge = build_models(cai, cfg.init_from, cfg.tokenizer.path)
    counts = generate_cai_data(generator, judge, prompts, constitution, cai, data_dir)
    del generator, judge  # free the generation copy before training starts
    data_manifest = {
        "kind": "cai_data",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "parent": str(Path(cfg.init_from).resolve()) if cfg.init_from else None,
        "constitution": {
            "name": constitution.name,
            "path": constitution.path,
            "sha256": constitution.sha256,
            "principles": constitution.names(),
        },
        "prompt_sets": list(cai.prompt_sets),
        "config": asdict(cai),
        "counts": counts,
    }
    (data_dir / DATA_MANIFEST_FILE).write_text(json.dumps(data_manifest, indent=2) + "\n")

    sft, sft_skip = train_on_generated_data(
        cfg, "sft", cfg.init_from, data_dir, "sft", cai.run_sft, counts, "non-empty revisions"
    )
    dpo_parent = sft["run_dir"] if sft else cfg.init_from
    dpo, dpo_skip = train_on_generated_data(
        cfg,
        "dpo",
        dpo_parent,
        data_dir,
        "preferences",
        cai.run_dpo,
        counts,
        "decided pairs",
        compose_stage_nodes("dpo"),
    )
    for name, reason in (("sft", sft_skip), ("dpo", dpo_skip)):
        if reason:
            log.warning("cai %s skipped: %s", name, reason)

    final = dpo or sft
    manifest = {
        "kind": "cai_run",
        "stage": "cai",
        "status": "completed",
        "run_dir": str(run_dir.resolve()),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - started, 1),
        "parent": data_manifest["parent"],
        "data_dir": str(data_dir.resolve()),
        "constitution": data_manifest["constitution"],
        "counts": counts,
        "sft": step_summary(sft, sft_skip),
        "dpo": step_summary(dpo, dpo_skip),
        # `load_for_inference(<cai run dir>)` then loads the final model of the chain.
        "best_checkpoint": final.get("best_checkpoint") if final else None,
        "last_checkpoint": final.get("last_checkpoint") if final else None,
        "config": job_config(cfg),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_manifest(run_dir, manifest)
    print_summary(manifest)
    return (final or {}).get("final_metrics", {}).get("val/loss")


def job_config(cfg: DictConfig) -> dict:
    """The resolved config without Hydra's own node (as `--cfg job` shows it)."""
    job = {}
    for key in cfg:
        if key != "hydra":
            value = cfg[key]  # scalars resolve on access
            job[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return job


def print_summary(manifest: dict) -> None:
    counts = manifest["counts"]
    print(
        f"\nCAI data in {manifest['data_dir']}: {counts['critiques']} critiqued prompts "
        f"({counts['sft_train']} SFT train / {counts['sft_val']} val after {counts['empty_revisions']} empty), "
        f"{counts['comparisons']} judged pairs -> {counts['preferences_train']} DPO train / "
        f"{counts['preferences_val']} val ({counts['undecided_comparisons']} undecided)"
    )
    for step in ("sft", "dpo"):
        info = manifest[step]
        metrics = info.get("final_metrics") or {}
        shown = f" val/loss={metrics['val/loss']:.4f}" if "val/loss" in metrics else ""
        print(f"  {step}: {info['status']}{shown} {info.get('run_dir') or ''}")
    print(f"  manifest: {Path(manifest['run_dir']) / RUN_MANIFEST_FILE}")
