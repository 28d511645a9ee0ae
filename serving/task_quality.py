"""Each quantized export judged on the task it was trained for, against the same weights in bf16.

    python -m serving.task_quality ckpt=<final checkpoint> exports='[<export dir>, ...]' [n=200] [out=<dir>]

For the bf16 reference and for every export, on the same `n` held-out generated tasks:
- accuracy: greedy chat replies scored by `lmforge.data.tasks.is_correct`, with a paired exact sign
  test against bf16 (e2e/significance.py's method, in lmforge's eval code);
- chat perplexity: token perplexity of the reference assistant replies (the loss mask SFT trains on);
- greedy agreement: the share of tasks whose greedy reply is token-for-token bf16's;
- size: bytes of the export's safetensors.
An export passes when its accuracy is within `max_drop` (default 0.01, one point) of bf16's.

Exports are read back through `transformers` (which decompresses compressed-tensors) and their
weights placed in lmforge's own model, so both sides decode with the same code in bf16 and the
difference is the stored weights alone. Activation quantization (w8a8's int8 activations) is
applied by the serving engine at run time and is not simulated here; the report says so.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf

from lmforge.checkpoint import load_for_inference
from lmforge.data.tasks import Task, is_correct, make_tasks
from lmforge.formats.checkpoint_meta import read_export_manifest
from lmforge.generate import SamplingConfig, generate
from lmforge.hf import from_hf_name
from lmforge.model import Transformer
from serving.quality import safetensors_bytes

log = logging.getLogger(__name__)

TASK_QUALITY_JSON = "task_quality.json"


@dataclass
class TaskQualityConfig:
    ckpt: str = "???"
    exports: list[str] = field(default_factory=list)
    n: int = 200
    kind: str = "mix"
    seed: int = 0
    max_new_tokens: int = 48
    batch_size: int = 50
    max_drop: float = 0.01  # accuracy points below bf16 an export may lose
    out: str | None = None  # directory for task_quality.json; default: the first export's parent


@dataclass
class Side:
    """One model's outcome on the tasks."""

    name: str
    correct: list[int]
    replies: list[list[int]]
    chat_ppl: float
    size_bytes: int | None = None


def exact_sign_p(gained: int, lost: int) -> float:
    """Two-sided exact binomial (sign) test on the discordant items."""
    n = gained + lost
    if n == 0:
        return 1.0
    probs = [math.comb(n, i) / 2**n for i in range(n + 1)]
    return min(1.0, sum(p for p in probs if p <= probs[gained] * (1 + 1e-7)))


@torch.no_grad()
def evaluate(model: Transformer, tokenizer, tasks: list[Task], cfg: TaskQualityConfig, name: str) -> Side:
    model.eval()
    prompts = [
        tokenizer.encode_chat([{"role": "user", "content": t.prompt}], add_generation_prompt=True)[0] for t in tasks
    ]
    stops = tuple(tokenizer.stop_ids)
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=0.0, stop_token_ids=stops)
    replies: list[list[int]] = []
    for start in range(0, len(prompts), cfg.batch_size):
        replies += generate(
            model, prompts[start : start + cfg.batch_size], sampling, pad_id=tokenizer.pad_id
        ).completions
    correct = [int(is_correct(t, tokenizer.decode(r))) for t, r in zip(tasks, replies, strict=True)]
    nll, count = 0.0, 0
    for task in tasks:
        ids, trained = tokenizer.encode_chat(
            [{"role": "user", "content": task.prompt}, {"role": "assistant", "content": task.response()}]
        )
        logits = model(torch.tensor([ids])).float()[0, :-1]
        targets = torch.tensor(ids[1:])
        mask = torch.tensor(trained[1:])
        losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        nll, count = nll + float(losses[mask].sum()), count + int(mask.sum())
    return Side(name, correct, replies, math.exp(nll / max(count, 1)))


def decompressed_hf_model(export_dir: Path):
    """The export through transformers, compressed-tensors weights decompressed to dense tensors
    (`run_compressed=False`), so its state dict holds ordinary weight matrices."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging
    from transformers.utils.quantization_config import CompressedTensorsConfig

    hf_logging.disable_progress_bar()
    quantized = "quantization_config" in json.loads((export_dir / "config.json").read_text())
    extra = {"quantization_config": CompressedTensorsConfig(run_compressed=False)} if quantized else {}
    return AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32, **extra).eval()


def model_from_export(export_dir: Path, like: Transformer) -> Transformer:
    """lmforge's model holding the export's weights as stored (decompressed by transformers)."""
    hf_model = decompressed_hf_model(export_dir)
    state = {from_hf_name(k): v for k, v in hf_model.state_dict().items() if not k.endswith("rotary_emb.inv_freq")}
    model = copy.deepcopy(like).float()
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if like.config.tie_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ValueError(
            f"{export_dir}: export weights do not fit the checkpoint (missing {missing}, unexpected {unexpected})"
        )
    return model.to(torch.bfloat16)


def compare(reference: Side, candidate: Side, max_drop: float) -> dict:
    gained = sum(1 for a, b in zip(reference.correct, candidate.correct, strict=True) if not a and b)
    lost = sum(1 for a, b in zip(reference.correct, candidate.correct, strict=True) if a and not b)
    n = len(reference.correct)
    acc_ref, acc = sum(reference.correct) / n, sum(candidate.correct) / n
    return {
        "name": candidate.name,
        "n": n,
        "accuracy": acc,
        "accuracy_bf16": acc_ref,
        "accuracy_delta": acc - acc_ref,
        "items_gained": gained,
        "items_lost": lost,
        "p_vs_bf16": exact_sign_p(gained, lost),
        "chat_perplexity": candidate.chat_ppl,
        "chat_perplexity_bf16": reference.chat_ppl,
        "greedy_agreement": sum(a == b for a, b in zip(reference.replies, candidate.replies, strict=True)) / n,
        "size_bytes": candidate.size_bytes,
        "within_max_drop": acc_ref - acc <= max_drop + 1e-12,
        "max_drop": max_drop,
    }


def run(cfg: TaskQualityConfig) -> dict:
    loaded = load_for_inference(cfg.ckpt)
    if loaded.tokenizer is None:
        raise FileNotFoundError(f"no tokenizer found next to {cfg.ckpt}")
    tasks = make_tasks(cfg.kind, cfg.n, cfg.seed, split="heldout")
    reference = evaluate(copy.deepcopy(loaded.model).to(torch.bfloat16), loaded.tokenizer, tasks, cfg, "bf16")
    rows = []
    for export in cfg.exports:
        export_dir = Path(export)
        manifest = read_export_manifest(export_dir)
        side = evaluate(model_from_export(export_dir, loaded.model), loaded.tokenizer, tasks, cfg, str(export_dir.name))
        side.size_bytes = safetensors_bytes(export_dir)
        row = compare(reference, side, cfg.max_drop)
        row.update(quant=manifest.get("quant"), format=manifest.get("format"))
        rows.append(row)
    return {
        "config": asdict(cfg),
        "reference": {
            "name": "bf16",
            "accuracy": sum(reference.correct) / len(tasks),
            "chat_perplexity": reference.chat_ppl,
        },
        "exports": rows,
        "note": "weights as stored; activation quantization (w8a8) is applied by the serving engine, not simulated here",
    }


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg: TaskQualityConfig = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(TaskQualityConfig), OmegaConf.from_cli())
    )
    if not cfg.exports:
        raise SystemExit("task_quality: give exports='[<export dir>, ...]'")
    result = run(cfg)
    out = Path(cfg.out or Path(cfg.exports[0]).parent)
    out.mkdir(parents=True, exist_ok=True)
    (out / TASK_QUALITY_JSON).write_text(json.dumps(result, indent=2) + "\n")
    for row in result["exports"]:
        verdict = "within" if row["within_max_drop"] else "NOT within"
        print(
            f"{row['name']}: accuracy {row['accuracy']:.3f} vs bf16 {row['accuracy_bf16']:.3f} "
            f"({row['accuracy_delta']:+.3f}, p={row['p_vs_bf16']:.2g}, {verdict} {row['max_drop']:.2f}); "
            f"chat ppl {row['chat_perplexity']:.3f} vs {row['chat_perplexity_bf16']:.3f}; "
            f"greedy agreement {row['greedy_agreement']:.3f}; {row['size_bytes'] / 1e6:.2f} MB (n={row['n']})"
        )
    print(f"written to {out / TASK_QUALITY_JSON}")


if __name__ == "__main__":
    main()
