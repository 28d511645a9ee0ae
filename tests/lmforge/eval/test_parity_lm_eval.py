"""Scoring parity with lm-evaluation-harness.

lm-eval runs its own `mmlu_*` and `gsm8k` task YAMLs (prompt templates, few-shot assembly,
regex filters, exact_match metric) through `simple_evaluate` on our `LMForgeLM` model class,
offline: only the dataset source is redirected to JSON files written from the shared
benchmark copies (and GSM8K's few-shot sampler pinned to first_n, because its default draws
random shots). Our implementation must then give the same per-document predictions and the
same aggregate scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import lm_eval
import pytest
from lm_eval.tasks._yaml_loader import load_yaml as load_yaml_config  # resolves `include:`

from lmforge.eval.data import load_gsm8k, load_mmlu
from lmforge.eval.lm import EvalLM
from lmforge.eval.lm_eval_model import LMForgeLM
from lmforge.eval.metrics import extract_flexible, extract_strict
from lmforge.eval.tasks import gsm8k, mmlu

TASKS_DIR = Path(lm_eval.__file__).parent / "tasks"
SUBJECTS = ["abstract_algebra", "college_biology", "world_religions"]


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _evaluate(lm: EvalLM, task_configs: list[dict], **kw) -> dict:
    return lm_eval.simple_evaluate(
        model=LMForgeLM(eval_lm=lm), tasks=task_configs, log_samples=True, bootstrap_iters=0, **kw
    )


@pytest.mark.slow
@pytest.mark.parity
def test_mmlu_accuracy_matches_lm_eval(tiny_eval_model, benchmarks, tmp_path):
    lm = EvalLM(tiny_eval_model.model, tiny_eval_model.tokenizer, batch_size=8, show_progress=False)
    root, limit, shots = benchmarks / "mmlu", 5, 2
    configs = []
    for subject in SUBJECTS:
        cfg = load_yaml_config(str(TASKS_DIR / "mmlu" / "default" / f"mmlu_{subject}.yaml"))
        files = {
            split: _write_jsonl(
                tmp_path / f"{subject}_{split}.jsonl",
                [{k: r[k] for k in ("question", "choices", "answer")} for r in load_mmlu(root, subject, split)],
            )
            for split in ("dev", "test")
        }
        cfg.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": files}, num_fewshot=shots)
        cfg.pop("tag", None)
        configs.append(cfg)
    theirs = _evaluate(lm, configs, limit=limit)
    ours = mmlu.run(lm, mmlu.MMLUConfig(path=str(root), subjects=SUBJECTS, num_fewshot=shots, limit=limit))

    their_acc = {}
    for subject in SUBJECTS:
        name = f"mmlu_{subject}"
        their_acc[subject] = theirs["results"][name]["acc,none"]
        their_preds = [
            max(range(4), key=lambda j: s["filtered_resps"][j][0])
            for s in sorted(theirs["samples"][name], key=lambda s: s["doc_id"])
        ]
        our_preds = [s["pred"] for s in ours.samples if s["subject"] == subject]
        assert our_preds == their_preds, subject
    micro = sum(their_acc.values()) / len(SUBJECTS)  # equal subject sizes: micro == mean of subjects
    assert ours.metrics["acc"] == pytest.approx(micro, abs=1e-12)
    assert ours.metrics["acc_macro"] == pytest.approx(micro, abs=1e-12)
    for subject in SUBJECTS:
        assert ours.details["per_subject_acc"][subject] == pytest.approx(their_acc[subject], abs=1e-12)
    print(
        f"\nMMLU parity ({len(SUBJECTS)} subjects x {limit}, {shots}-shot): ours={ours.metrics['acc']:.4f} "
        f"lm-eval={micro:.4f} per-subject={their_acc}"
    )


@pytest.mark.slow
@pytest.mark.parity
def test_gsm8k_extraction_matches_lm_eval(tiny_eval_model, benchmarks, tmp_path):
    lm = EvalLM(tiny_eval_model.model, tiny_eval_model.tokenizer, batch_size=8, show_progress=False)
    root, limit, shots, max_new = benchmarks / "gsm8k", 6, 2, 48
    cfg = load_yaml_config(str(TASKS_DIR / "gsm8k" / "gsm8k.yaml"))
    files = {
        split: _write_jsonl(tmp_path / f"gsm8k_{split}.jsonl", load_gsm8k(root, split)[:200])
        for split in ("train", "test")
    }
    cfg.update(
        dataset_path="json",
        dataset_name=None,
        dataset_kwargs={"data_files": files},
        num_fewshot=shots,
        fewshot_config={"sampler": "first_n"},
    )
    cfg.pop("tag", None)
    cfg["generation_kwargs"] = {**cfg["generation_kwargs"], "max_gen_toks": max_new}
    theirs = _evaluate(lm, [cfg], limit=limit)
    ours = gsm8k.run(lm, gsm8k.GSM8KConfig(path=str(root), num_fewshot=shots, max_new_tokens=max_new, limit=limit))

    by_filter, outputs = {}, {}
    for s in theirs["samples"]["gsm8k"]:  # one record per (document, filter)
        by_filter.setdefault(s["filter"], {})[s["doc_id"]] = s["filtered_resps"][0]
        outputs[s["doc_id"]] = s["resps"][0][0]
    assert [outputs[i] for i in range(limit)] == [s["output"] for s in ours.samples]  # same prompts => same text
    assert [by_filter["strict-match"][i] for i in range(limit)] == [s["strict"] for s in ours.samples]
    assert [by_filter["flexible-extract"][i] for i in range(limit)] == [s["flexible"] for s in ours.samples]
    res = theirs["results"]["gsm8k"]
    assert ours.metrics["exact_match_strict"] == pytest.approx(res["exact_match,strict-match"])
    assert ours.metrics["exact_match_flexible"] == pytest.approx(res["exact_match,flexible-extract"])
    print(
        f"\nGSM8K parity ({limit} docs): strict ours={ours.metrics['exact_match_strict']} "
        f"lm-eval={res['exact_match,strict-match']}; flexible ours={ours.metrics['exact_match_flexible']} "
        f"lm-eval={res['exact_match,flexible-extract']}; extracted={[s['flexible'] for s in ours.samples]}"
    )


CRAFTED = [
    "She has 5 apples.\n#### 1,234",
    "#### -7.5\nand later #### 9",
    "The answer is $18.",
    "no digits here",
    "Total 3 + 4 = 7. So 7.",
    "#### 12 dollars, 13",
    "x=.5 then 42",
    "pay $1,000.00 total",
]


def test_extractors_match_lm_eval_filters():
    """Our two regex extractors against lm-eval's RegexFilter configured as in gsm8k.yaml."""
    from lm_eval.filters.extraction import RegexFilter

    cfg = load_yaml_config(str(TASKS_DIR / "gsm8k" / "gsm8k.yaml"))
    filters = {f["name"]: f["filter"][0] for f in cfg["filter_list"]}
    strict = RegexFilter(regex_pattern=filters["strict-match"]["regex_pattern"])
    flexible = RegexFilter(
        regex_pattern=filters["flexible-extract"]["regex_pattern"],
        group_select=filters["flexible-extract"]["group_select"],
    )
    assert [r[0] for r in strict.apply([[t] for t in CRAFTED], None)] == [extract_strict(t) for t in CRAFTED]
    assert [r[0] for r in flexible.apply([[t] for t in CRAFTED], None)] == [extract_flexible(t) for t in CRAFTED]
