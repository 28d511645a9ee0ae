"""GSM8K (Cobbe et al. 2021, arXiv:2110.14168): few-shot chain-of-thought generation.

The prompt follows lm-evaluation-harness's `gsm8k` task ("Question: ...\\nAnswer: <worked
solution ending in #### N>" shots, first k of train), greedy decoding until "Question:".
Two scores: strict (the `#### N` line) and flexible (the last number in the output).
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.eval.data import load_gsm8k
from lmforge.eval.lm import EvalLM, GenParams
from lmforge.eval.metrics import exact_match, extract_flexible, extract_strict
from lmforge.eval.tasks import TaskResult

STOP = ["Question:", "</s>", "<|im_end|>"]


@dataclass
class GSM8KConfig:
    path: str = "../shared/benchmarks/gsm8k"
    split: str = "test"
    num_fewshot: int = 5
    max_new_tokens: int = 256
    limit: int | None = None


def build_prompt(doc: dict, shots: list[dict]) -> str:
    examples = "".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in shots)
    return examples + f"Question: {doc['question']}\nAnswer:"


def run(lm: EvalLM, cfg: GSM8KConfig) -> TaskResult:
    shots = load_gsm8k(cfg.path, "train")[: cfg.num_fewshot]
    docs = load_gsm8k(cfg.path, cfg.split)[: cfg.limit]
    params = GenParams(until=STOP, max_new_tokens=cfg.max_new_tokens, temperature=0.0)
    outputs = lm.generate_until([(build_prompt(doc, shots), params) for doc in docs])
    samples = []
    for doc, text in zip(docs, outputs):
        strict, flexible = extract_strict(text), extract_flexible(text)
        samples.append(
            {
                "question": doc["question"],
                "output": text,
                "strict": strict,
                "flexible": flexible,
                "strict_match": float(exact_match(strict, doc["answer"])),
                "flexible_match": float(exact_match(flexible, doc["answer"])),
            }
        )
    n = max(1, len(samples))
    metrics = {
        "exact_match_strict": sum(s["strict_match"] for s in samples) / n,
        "exact_match_flexible": sum(s["flexible_match"] for s in samples) / n,
    }
    return TaskResult("gsm8k", metrics, samples, {"n": len(samples)})
