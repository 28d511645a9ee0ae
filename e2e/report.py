"""The end-to-end report: every number read back from the artifacts this run wrote.

Writes `<out>/report.md`, the same as one self-contained `<out>/report.html`, `<out>/report.json`, PNG plots, and `<out>/export/lineage.json`
(the chain from raw pages to the served model: each artifact's path, fingerprint and parent).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from e2e.report_html import write_html  # noqa: E402
from e2e.runner import StepResult  # noqa: E402
from e2e.stage_claims import SAFETY_SAMPLES, cai_revision_note, check_all, markdown_rows, read_safety_items  # noqa: E402
from e2e.stage_plot import plot_claims, plot_stages  # noqa: E402
from e2e.steps import BRANCHES, CHECKPOINTS, RL_CLAIM_CHECKPOINTS  # noqa: E402
from lmforge.formats.eval_report import REPORT_FILE, read_report  # noqa: E402


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)):
            flat[f"{prefix}{key}"] = value
    return flat


def read_curve(metrics_csv: Path) -> dict[str, list[tuple[int, float]]]:
    """{metric: [(step, value), ...]} from a Lightning CSVLogger file."""
    curves: dict[str, list[tuple[int, float]]] = {}
    if not metrics_csv.exists():
        return curves
    with open(metrics_csv) as f:
        for row in csv.DictReader(f):
            step = int(float(row.get("step") or 0))
            for key, value in row.items():
                if key in ("step", "epoch") or value in ("", None):
                    continue
                try:
                    curves.setdefault(key, []).append((step, float(value)))
                except ValueError:
                    continue
    return curves


def plot_loss(curves: dict, path: Path) -> Path | None:
    if "train/loss" not in curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, style in (("train/loss", "-"), ("val/loss", "o-")):
        if key in curves:
            steps, values = zip(*curves[key])
            ax.plot(steps, values, style, label=key, markersize=4)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("Pre-training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def build_lineage(out: Path) -> dict:
    corpus = _json(out / "corpus" / "manifest.json") or {}
    tokenizer = _json(out / "tokenizer" / "manifest.json") or {}
    shards = _json(out / "shards" / "manifest.json") or {}
    chain = {
        "raw_input": corpus.get("inputs"),
        "corpus": {
            "path": str(out / "corpus"),
            "fingerprint": corpus.get("fingerprint"),
            "documents": corpus.get("total_docs"),
        },
        "tokenizer": {
            "path": str(out / "tokenizer"),
            "fingerprint": tokenizer.get("fingerprint"),
            "parent": tokenizer.get("parent"),
        },
        "shards": {
            "path": str(out / "shards"),
            "tokenizer_fingerprint": shards.get("tokenizer_fingerprint"),
            "parent": shards.get("parent"),
        },
        "checkpoints": {},
        "eval_reports": {},
    }
    for name in CHECKPOINTS:
        manifest = _json(out / name / "manifest.json") or {}
        chain["checkpoints"][name] = {
            "path": str(out / name),
            "checkpoint": manifest.get("last_checkpoint") or manifest.get("best_checkpoint"),
            "parent": manifest.get("parent"),
            "tokenizer_fingerprint": manifest.get("tokenizer_fingerprint"),
        }
        chain["eval_reports"][name] = str(out / "eval" / name / "report.json")
    # Checkpoints off the exported chain (CAI from SFT): evaluated, not exported.
    chain["branches"] = {
        name: {
            "path": str(out / name),
            "parent": (_json(out / name / "manifest.json") or {}).get("parent"),
            "eval_report": str(out / "eval" / name / "report.json"),
        }
        for name in BRANCHES
    }
    export_manifest = _json(out / "export" / "manifest.json")
    chain["export"] = {
        "path": str(out / "export"),
        "release_gate": (export_manifest or {}).get("release_gate"),  # checked, skipped or forced, and why
        "manifest": export_manifest,
    }
    fingerprints = {v.get("tokenizer_fingerprint") for v in chain["checkpoints"].values()}
    fingerprints |= {chain["tokenizer"]["fingerprint"], chain["shards"]["tokenizer_fingerprint"]}
    chain["tokenizer_fingerprints_agree"] = len(fingerprints) == 1 and None not in fingerprints
    return chain


def _task_quality_lines(result: dict | None) -> list[str]:
    """The export judged on the held-out tasks against bf16 (serving/task_quality.py)."""
    if not result:
        return ["", "(no task_quality.json: the export was not judged on the task)"]
    lines = [
        "",
        "On the task, against the same weights in bf16 (paired on the same held-out items):",
        "",
        "| export | n | accuracy | bf16 | delta [items gained/lost] | p | chat ppl (bf16) | greedy agreement | MB | within 1 point |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result.get("exports", []):
        lines.append(
            f"| {r.get('quant') or r['name']} | {r['n']} | {r['accuracy']:.3f} | {r['accuracy_bf16']:.3f} | "
            f"{r['accuracy_delta']:+.3f} [{r['items_gained']}/{r['items_lost']}] | {r['p_vs_bf16']:.2g} | "
            f"{r['chat_perplexity']:.3f} ({r['chat_perplexity_bf16']:.3f}) | {r['greedy_agreement']:.3f} | "
            f"{(r['size_bytes'] or 0) / 1e6:.2f} | {'yes' if r['within_max_drop'] else '**NO**'} |"
        )
    lines += ["", f"_{result.get('note', '')}_"]
    return lines


def _section_funnel(out: Path, lines: list[str]) -> None:
    funnel = _json(out / "corpus" / "funnel.json")
    lines += ["## 1. Data funnel (curation)", ""]
    if not funnel:
        lines += ["(no funnel.json)", ""]
        return
    steps = funnel.get("steps", {})
    lines += ["| step | docs in | docs out | MB in | MB out | top removal reasons |", "|---|---|---|---|---|---|"]
    for name, step in steps.items():
        reasons = step.get("removed") or {}
        top = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
        if step.get("modified"):
            top += (", " if top else "") + "modified: " + ", ".join(f"{k} {v}" for k, v in step["modified"].items())
        lines.append(
            f"| {name} | {step.get('docs_in')} | {step.get('docs_out')} | "
            f"{_fmt(step.get('bytes_in', 0) / 1e6, 2)} | {_fmt(step.get('bytes_out', 0) / 1e6, 2)} | {top} |"
        )
    if (out / "corpus" / "funnel.png").exists():
        shutil.copy(out / "corpus" / "funnel.png", out / "funnel.png")
        lines += ["", "![funnel](funnel.png)"]
    lines.append("")


def _metric_n(evals: dict[str, dict | None], metric: str) -> int | None:
    """Items behind `metric` ("task.name") in the eval reports' stats (the same for every checkpoint)."""
    task, _, name = metric.partition(".")
    for report in evals.values():
        n = (((report or {}).get("stats") or {}).get(task) or {}).get(name, {}).get("n")
        if n:
            return int(n)
    return None


def _suite_caption(evals: dict[str, dict | None]) -> str:
    suites = sorted({str(r.get("suite")) for r in evals.values() if r})
    return (
        f"suite {', '.join(suites)}: the n column is the items per metric; with a few items per benchmark "
        "a difference between checkpoints here is noise, and the paired claims in section 4 are the tests"
    )


def build_report(out: Path, results: list[StepResult], wandb_enabled: bool = False) -> Path:
    out = Path(out)
    tokenizer = _json(out / "tokenizer" / "manifest.json") or {}
    curves = read_curve(out / "pretrain" / "csv" / "metrics.csv")
    tasks = {name: _json(out / "tasks" / name / "report.json") for name in CHECKPOINTS}
    rl_kind = {name: _json(out / "tasks_rl_kind" / name / "report.json") for name in RL_CLAIM_CHECKPOINTS}
    ppl = _json(out / "ppl" / "report.json")
    evaluated = (*CHECKPOINTS, *BRANCHES)
    evals = {
        name: read_report(out / "eval" / name) if (out / "eval" / name / REPORT_FILE).exists() else None
        for name in evaluated
    }
    # The CAI claims read the large red-team set's safety run when the job made one (step redteam_*),
    # else the eval suite's packaged prompts.
    redteam = all((out / "redteam" / name / SAFETY_SAMPLES).exists() for name in (*BRANCHES, *BRANCHES.values()))
    safety_root = out / ("redteam" if BRANCHES and redteam else "eval")
    safety = {name: read_safety_items(safety_root / name) for name in evaluated}
    quality = _json(out / "export" / "quality.json")
    smoke = _json(out / "serve_smoke" / "result.json")
    cai = (_json(out / "cai" / "data" / "manifest.json") or {}).get("counts")

    lineage = build_lineage(out)
    (out / "export").mkdir(parents=True, exist_ok=True)
    (out / "export" / "lineage.json").write_text(json.dumps(lineage, indent=2))

    lines = [
        "# lmforge end-to-end report",
        "",
        "Every number below was computed in this run from the artifacts under "
        f"`{out}`; rerunning skips finished steps.",
        "",
    ]
    lines += ["## Steps", "", "| step | status | seconds |", "|---|---|---|"]
    lines += [f"| {r.name} | {r.status} | {r.seconds:.1f} |" for r in results]
    lines += [f"| **total** | | **{sum(r.seconds for r in results):.1f}** |", ""]

    _section_funnel(out, lines)

    lines += [
        "## 2. Tokenizer",
        "",
        f"vocab {tokenizer.get('vocab_size')} (asked {tokenizer.get('requested_vocab_size')}), "
        f"{_fmt(tokenizer.get('bytes_per_token'))} bytes/token on held-out text, "
        f"fingerprint `{str(tokenizer.get('fingerprint'))[:16]}…`",
        "",
    ]

    lines += ["## 3. Pre-training", ""]
    val = curves.get("val/loss") or []
    train = curves.get("train/loss") or []
    if train:
        lines.append(f"- train loss {train[0][1]:.3f} (step {train[0][0]}) -> {train[-1][1]:.3f} (step {train[-1][0]})")
    if val:
        lines.append(
            f"- held-out loss {val[0][1]:.3f} (step {val[0][0]}) -> {val[-1][1]:.3f} (step {val[-1][0]}), "
            f"held-out perplexity {math.exp(val[-1][1]):.1f}"
        )
    if ppl:
        lines.append(
            f"- held-out perplexity on {ppl.get('n')} validation sequences: {_fmt(ppl.get('ppl_init'), 1)} untrained "
            f"-> {_fmt(ppl.get('ppl'), 1)} pretrained (paired per sequence in section 4)"
        )
    if plot_loss(curves, out / "pretrain_loss.png"):
        lines += ["", "![pretraining loss](pretrain_loss.png)"]
    lines.append("")

    lines += [
        "## 4. Three learning signals, three models (held-out generated tasks)",
        "",
        "| checkpoint | answer format rate | accuracy | chosen-rejected margin | pair accuracy |",
        "|---|---|---|---|---|",
    ]
    for name in CHECKPOINTS:
        t = tasks.get(name) or {}
        lines.append(
            f"| {name} | {_fmt(t.get('format_rate'))} | {_fmt(t.get('accuracy'))} | "
            f"{_fmt(t.get('margin'))} | {_fmt(t.get('pair_accuracy'))} |"
        )

    cai_note = cai_revision_note(out / "cai" / "data")
    claims = check_all(tasks, safety, rl_kind, ppl, notes={"cai": cai_note} if cai_note else None)
    if all(rl_kind.values()):
        kind = (rl_kind["rl"].get("config") or {}).get("kind")
        lines += [
            "",
            f"RL trains on one task kind ({kind}); its claim is tested on held-out items of that kind: "
            + ", ".join(
                f"{name} {_fmt(r.get('accuracy'))} (n={r.get('n')})" for name, r in rl_kind.items() if r is not None
            )
            + ".",
        ]
    lines += [
        "",
        "Each stage against its parent on the same held-out items (paired: exact sign test on the items "
        "that changed; margins: sign test + bootstrap interval). Anything short of p < alpha in the claimed "
        "direction is reported as no significant gain. CAI is tested on "
        + (
            "HarmBench's 200 standard behaviours (red-team) and 200 GSM8K test questions (benign), "
            "scripts/build_redteam_set.py"
            if safety_root.name == "redteam"
            else "the eval suite's safety prompts (25 red-team, 25 benign look-alikes)"
        )
        + ", each paired with SFT's reply to the same prompt: refusals on the red-team prompts must rise, "
        "over-refusal on the benign ones must not rise significantly. An empty reply counts as a refusal.",
        "",
        *markdown_rows(claims),
    ]
    if cai:
        lines.append(f"- CAI short pass: {json.dumps(cai)}")
    if plot_stages(tasks, list(CHECKPOINTS), out / "stage_gains.png"):
        lines += ["", "![stage gains](stage_gains.png)"]
    # RL's own claim (its task kind) and the CAI branch's are not in the stage figure's panels.
    for name in (*(("rl",) if "rl" in CHECKPOINTS else ()), *BRANCHES):
        if plot_claims(claims, name, out / f"{name}_claims.png"):
            lines += ["", f"![{name} claims]({name}_claims.png)"]
    lines.append("")

    lines += ["## 5. Benchmarks per checkpoint (eval suite)", ""]
    flat = {n: _flatten((e or {}).get("metrics") or {}) for n, e in evals.items()}
    metric_names = sorted({k for m in flat.values() for k in m})
    if metric_names:
        lines += [
            f"_{_suite_caption(evals)}_",
            "",
            "| metric | n | " + " | ".join(evaluated) + " |",
            "|---" * (len(evaluated) + 2) + "|",
        ]
        for m in metric_names:
            n = _metric_n(evals, m)
            lines.append(f"| {m} | {n if n else '-'} | " + " | ".join(_fmt(flat[c].get(m)) for c in evaluated) + " |")
    final_eval = evals.get(CHECKPOINTS[-1]) or {}
    verdict = final_eval.get("gate") or {}
    lines += ["", f"**Release gate ({CHECKPOINTS[-1]}):** {'PASS' if verdict.get('passed') else 'FAIL'}"]
    for check in verdict.get("checks", []):
        parent = "" if check.get("parent_value") is None else f", parent {_fmt(check['parent_value'])}"
        lines.append(
            f"- {'ok ' if check['passed'] else 'FAIL'} {check['metric']} {check['rule']} "
            f"{check['threshold']}: {_fmt(check['value'])}{parent} {check.get('reason') or ''}"
        )
    export_gate = lineage["export"].get("release_gate") or {}
    if export_gate.get("skipped"):
        lines.append(f"- export: gate SKIPPED ({export_gate.get('by')}): {export_gate.get('reason')}")
        if "would_pass" in export_gate:
            verdict_word = "PASS" if export_gate["would_pass"] else "FAIL: " + "; ".join(export_gate["reasons"])
            lines.append(f"  (the release policy's verdict on the final report: {verdict_word})")
    elif export_gate.get("checked"):
        forced = " (FORCED: " + str(export_gate.get("reason")) + ")" if export_gate.get("forced") else ""
        lines.append(
            f"- export: gate checked by the release policy: {'PASS' if export_gate['passed'] else 'FAIL'}{forced}"
        )
    lines.append("")

    lines += ["## 6. Quantized export", ""]
    if quality:
        rows = quality if isinstance(quality, list) else (quality.get("rows") or [])
        if rows:
            keys = list(rows[0].keys())
            lines += ["| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
            lines += ["| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |" for r in rows]
            lines += [
                "",
                "_perplexity and greedy agreement above are on raw pretraining text (the export's `val_shards`), "
                "which a chat-tuned model no longer fits; the task comparison below is the one to read_",
            ]
        else:
            lines.append("```\n" + json.dumps(quality, indent=2)[:3000] + "\n```")
    else:
        lines.append("(no quality.json)")
    lines += _task_quality_lines(_json(out / "task_quality" / "task_quality.json"))
    if smoke:
        lines += [
            "",
            f"Serving smoke test: {smoke.get('engine')} at {smoke.get('endpoint')} answered "
            f"{smoke.get('reply')!r} in {smoke.get('reply_seconds')}s; wrong API key -> HTTP {smoke.get('wrong_key_status')}.",
        ]
    lines += [
        "",
        "## 7. Lineage",
        "",
        f"`export/lineage.json` links raw input -> corpus -> tokenizer -> shards -> "
        f"{' -> '.join(CHECKPOINTS)} -> export; tokenizer fingerprints agree: "
        f"**{lineage['tokenizer_fingerprints_agree']}**.",
        "",
    ]

    report_path = out / "report.md"
    report_path.write_text("\n".join(lines))
    write_html(report_path)
    summary = {
        "steps": [{"name": r.name, "status": r.status, "seconds": r.seconds} for r in results],
        "tokenizer": tokenizer,
        "tasks": tasks,
        "tasks_rl_kind": rl_kind,
        "ppl": ppl,
        "stage_claims": claims,
        "eval_metrics": {n: (e or {}).get("metrics") for n, e in evals.items()},
        "gate": verdict,
        "quantization": quality,
        "task_quality": _json(out / "task_quality" / "task_quality.json"),
        "serve_smoke": smoke,
        "lineage_ok": lineage["tokenizer_fingerprints_agree"],
    }
    (out / "report.json").write_text(json.dumps(summary, indent=2, default=str))
    if wandb_enabled:
        _log_wandb(out, summary)
    return report_path


def _log_wandb(out: Path, summary: dict) -> None:
    import wandb

    run = wandb.init(project="lmforge", job_type="e2e-report", dir=str(out), mode="offline", reinit=True)
    flat = {
        f"tasks/{ckpt}/{k}": v
        for ckpt, t in (summary["tasks"] or {}).items()
        if t
        for k, v in t.items()
        if isinstance(v, (int, float))
    }
    run.log(flat)
    for png in sorted(out.glob("*.png")):
        run.log({png.stem: wandb.Image(str(png))})
    run.finish()
