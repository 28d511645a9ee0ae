"""MMLU (Hendrycks et al. 2021, arXiv:2009.03300) in lm-evaluation-harness's prompt format.

Prompt: "The following are multiple choice questions (with answers) about {subject}.\\n\\n",
then k dev examples "Q\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: X" separated by blank lines,
then the test question ending in "Answer:". The prediction is the letter whose continuation
" X" has the highest log-probability; acc_norm divides by the choice's length in characters
(all 1 for letters, so it equals acc here, as in lm-eval). Micro average = over questions,
macro = over subjects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lmforge.eval.data import LETTERS, load_mmlu, mmlu_subjects
from lmforge.eval.lm import EvalLM
from lmforge.eval.tasks import TaskResult

log = logging.getLogger(__name__)


@dataclass
class MMLUConfig:
    path: str = "../shared/benchmarks/mmlu"
    split: str = "test"
    num_fewshot: int = 5
    subjects: list[str] | None = None  # None = all 57
    limit: int | None = None  # per subject


def format_question(doc: dict) -> str:
    lines = [doc["question"].strip()] + [f"{letter}. {choice}" for letter, choice in zip(LETTERS, doc["choices"])]
    return "\n".join(lines) + "\nAnswer:"


def build_prompt(doc: dict, shots: list[dict]) -> str:
    subject = doc["subject"].replace("_", " ")
    header = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    examples = [format_question(s) + " " + LETTERS[s["answer"]] for s in shots]
    return header + "".join(e + "\n\n" for e in examples) + format_question(doc)


def run(lm: EvalLM, cfg: MMLUConfig) -> TaskResult:
    subjects = cfg.subjects or mmlu_subjects(cfg.path)
    requests, docs = [], []
    for subject in subjects:
        shots = load_mmlu(cfg.path, subject, "dev")[: cfg.num_fewshot]
        test = load_mmlu(cfg.path, subject, cfg.split)[: cfg.limit]
        for doc in test:
            prompt = build_prompt(doc, shots)
            docs.append(doc)
            requests.extend((prompt, " " + letter) for letter in LETTERS)
    scores = lm.loglikelihood(requests)
    samples, per_subject = [], {}
    for i, doc in enumerate(docs):
        logprobs = [scores[4 * i + j][0] for j in range(4)]
        pred = max(range(4), key=lambda j: logprobs[j])
        pred_norm = max(range(4), key=lambda j: logprobs[j] / len(LETTERS[j]))
        samples.append(
            {
                "subject": doc["subject"],
                "answer": doc["answer"],
                "pred": pred,
                "logprobs": logprobs,
                "acc": float(pred == doc["answer"]),
                "acc_norm": float(pred_norm == doc["answer"]),
            }
        )
        per_subject.setdefault(doc["subject"], []).append(samples[-1])
    metrics = {}
    for name in ("acc", "acc_norm"):
        metrics[name] = sum(s[name] for s in samples) / max(1, len(samples))  # micro
        subject_means = [sum(s[name] for s in rows) / len(rows) for rows in per_subject.values()]
        metrics[f"{name}_macro"] = sum(subject_means) / max(1, len(subject_means))
    details = {
        "n": len(samples),
        "subjects": len(per_subject),
        "per_subject_acc": {k: sum(s["acc"] for s in v) / len(v) for k, v in per_subject.items()},
    }
    return TaskResult("mmlu", metrics, samples, details)
