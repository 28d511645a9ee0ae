"""Write the evaluation report: report.json, per-task samples, summary.html (a table per
benchmark and the gate verdict) and metrics.png (every metric across checkpoints)."""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

from lmforge.formats.eval_report import read_report
from lmforge.formats.eval_report import write_report as write_report_json

log = logging.getLogger(__name__)


def write_report(out_dir: Path, report: dict, samples: dict[str, list[dict]], compare: list[dict]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path = write_report_json(out_dir, report)
    sample_dir = out_dir / "samples"
    sample_dir.mkdir(exist_ok=True)
    for task, rows in samples.items():
        with open(sample_dir / f"{task}.jsonl", "w") as handle:
            for row in rows:
                handle.write(json.dumps(row, default=str) + "\n")
    runs = [report] + compare
    plot_across_checkpoints(runs, out_dir / "metrics.png")
    (out_dir / "summary.html").write_text(render_html(report, runs))
    return report_path


def load_compare(paths: list[str]) -> list[dict]:
    return [read_report(p) for p in paths]


def _label(report: dict) -> str:
    return report.get("label") or Path(str(report.get("checkpoint") or "random-init")).name


def render_html(report: dict, runs: list[dict]) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><meta charset='utf-8'><title>lmforge evaluation</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}th:first-child,td:first-child{text-align:left}"
        ".pass{color:#070}.fail{color:#b00}</style>",
        f"<h1>Evaluation of {esc(_label(report))}</h1>",
        f"<p>checkpoint: <code>{esc(str(report.get('checkpoint')))}</code> &middot; suite: {esc(str(report.get('suite')))}"
        f" &middot; {esc(str(report.get('created')))}</p>",
        f"<p>checkpoint sha256: <code>{esc(str((report.get('binding') or {}).get('checkpoint_sha256')))}</code>"
        f" &middot; code sandbox: {esc(str((report.get('sandbox') or {}).get('humaneval') or 'no code task'))}"
        f" (available here: {esc(str((report.get('sandbox') or {}).get('available')))})</p>",
    ]
    gate = report.get("gate")
    if gate is not None:
        cls, word = ("pass", "PASS") if gate["passed"] else ("fail", "FAIL")
        parts.append(f"<h2>Release gate: <span class='{cls}'>{word}</span></h2><ul>")
        parts += [f"<li class='fail'>{esc(r)}</li>" for r in gate["reasons"]] or ["<li>all checks passed</li>"]
        parts.append("</ul>")
    for task in report["metrics"]:
        names = sorted({m for run in runs for m in run.get("metrics", {}).get(task, {})})
        parts.append(
            f"<h2>{esc(task)}</h2><table><tr><th>checkpoint</th>"
            + "".join(f"<th>{esc(n)}</th>" for n in names)
            + "</tr>"
        )
        for run in runs:
            values = run.get("metrics", {}).get(task, {})
            cells = "".join(
                f"<td>{values[n]:.4f}</td>" if isinstance(values.get(n), (int, float)) else "<td>-</td>" for n in names
            )
            parts.append(f"<tr><td>{esc(_label(run))}</td>{cells}</tr>")
        stats = (report.get("stats") or {}).get(task, {})
        cells = "".join(
            f"<td>n={stats[n]['n']} [{stats[n]['ci'][0]:.3f}, {stats[n]['ci'][1]:.3f}]</td>"
            if n in stats
            else "<td>-</td>"
            for n in names
        )
        parts.append(f"<tr><td>this run: items, 95% CI</td>{cells}</tr>")
        parts.append("</table>")
    parts.append("<img src='metrics.png' alt='metrics across checkpoints' style='max-width:100%'>")
    return "\n".join(parts)


def plot_across_checkpoints(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [f"{t}.{m}" for t, ms in runs[0]["metrics"].items() for m in ms]
    if not keys:
        return
    cols = min(4, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    labels = [_label(r) for r in runs]
    for ax in axes.flat[len(keys) :]:
        ax.axis("off")
    for ax, key in zip(axes.flat, keys):
        task, metric = key.split(".", 1)
        values = [r.get("metrics", {}).get(task, {}).get(metric, float("nan")) for r in runs]
        ax.bar(range(len(runs)), values, color=["C0"] + ["C7"] * (len(runs) - 1))
        finite = [v for v in values if v == v]
        ax.set_ylim(0, max([1.0] + finite))  # rates on a fixed 0-1 axis; MT-Bench scores up to 10
        ax.set_xticks(range(len(runs)), labels, rotation=30, ha="right", fontsize=7)
        ax.set_title(key, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def log_wandb(report: dict, out_dir: Path, wandb_cfg: dict) -> None:
    import wandb

    run = wandb.init(
        project=wandb_cfg.get("project", "lmforge"),
        mode=wandb_cfg.get("mode", "offline"),
        dir=str(out_dir),
        job_type="eval",
        name=wandb_cfg.get("name"),
        config=report.get("config"),
    )
    flat = {f"eval/{t}/{m}": v for t, ms in report["metrics"].items() for m, v in ms.items()}
    if report.get("gate") is not None:
        flat["eval/gate_passed"] = float(report["gate"]["passed"])
    run.log(flat)
    table = wandb.Table(
        columns=["task", "metric", "value"],
        data=[[t, m, v] for t, ms in report["metrics"].items() for m, v in ms.items()],
    )
    run.log({"eval/metrics": table, "eval/plot": wandb.Image(str(out_dir / "metrics.png"))})
    log_report_artifact(run, report, out_dir)
    run.finish()


def log_report_artifact(run, report: dict, out_dir: Path) -> str:
    """The report dir (report.json, samples, summary.html, metrics.png; not the run's own wandb/)
    as an `eval-report` artifact of file:// references whose metadata names the evaluated
    checkpoint's `model` artifact (`parent_artifact`) and the hashes the report is bound to."""
    from lmforge.callbacks.wandb_lineage import (
        artifact_name,
        checkpoint_artifact,
        directory_files,
        log_reference_artifact,
    )

    binding = report.get("binding") or {}
    gate = report.get("gate")
    metadata = {
        "parent_checkpoint": report.get("checkpoint"),
        "parent_artifact": checkpoint_artifact(report.get("checkpoint")),
        "checkpoint_sha256": binding.get("checkpoint_sha256"),
        "suite": report.get("suite"),
        "suite_sha256": binding.get("suite_sha256"),
        "report_digest": binding.get("digest"),
        "gate_passed": gate["passed"] if gate is not None else None,
        "metrics": report.get("metrics"),
    }
    return log_reference_artifact(
        run, artifact_name("eval-report", run.id), "eval-report", directory_files(out_dir), metadata
    )
