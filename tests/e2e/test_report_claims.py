"""The main job's report from task reports with per-item outcomes: the claims table names each
stage's paired test and verdict, a stage that did not move is flagged, and report.html renders in a
real browser with its plot embedded."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from e2e.report import build_report
from e2e.runner import StepResult
from e2e.stage_claims import check_all

CHROMIUM = "/usr/bin/chromium"
N = 200


def task_report(correct: list[int], formatted: list[int], margins: list[float]) -> dict:
    return {
        "n": len(correct),
        "format_rate": sum(formatted) / len(formatted),
        "accuracy": sum(correct) / len(correct),
        "margin": sum(margins) / len(margins),
        "items": {"task_id": [f"t{i}" for i in range(len(correct))], "correct": correct, "formatted": formatted},
        "pair_margins": margins,
    }


@pytest.fixture
def run_dir(tmp_path) -> Path:
    rng = random.Random(0)
    pre = task_report([0] * N, [rng.random() < 0.05 for _ in range(N)], [rng.gauss(0, 1) for _ in range(N)])
    sft_correct = [int(rng.random() < 0.4) for _ in range(N)]
    sft = task_report(sft_correct, [1] * N, [m + rng.gauss(0, 0.3) for m in pre["pair_margins"]])
    dpo = task_report(sft_correct, [1] * N, [m + 0.5 + rng.gauss(0, 0.3) for m in sft["pair_margins"]])
    rl = task_report(list(sft_correct), [1] * N, dpo["pair_margins"])  # RL changed nothing
    rl["items"]["correct"][:2] = [1, 1]
    rl["accuracy"] = sum(rl["items"]["correct"]) / N
    for name, report in {"pretrain": pre, "sft": sft, "dpo": dpo, "rl": rl}.items():
        (tmp_path / "tasks" / name).mkdir(parents=True)
        (tmp_path / "tasks" / name / "report.json").write_text(json.dumps(report))
    return tmp_path


def test_claims_are_paired_tests_and_a_flat_stage_is_flagged(run_dir):
    tasks = {
        n: json.loads((run_dir / "tasks" / n / "report.json").read_text()) for n in ("pretrain", "sft", "dpo", "rl")
    }
    rows = {(r["stage"], r["metric"]): r for r in check_all(tasks)}
    assert rows[("sft", "held-out task accuracy")]["verdict"] == "significant gain"
    assert rows[("sft", "answer format rate")]["verdict"] == "significant gain"
    assert rows[("dpo", "chosen - rejected log-prob margin")]["verdict"] == "significant gain"
    rl = rows[("rl", "verifiable accuracy")]
    assert rl["verdict"] == "no significant gain" and rl["alpha"] == 0.01 and rl["n"] == N
    tasks["rl"]["items"]["task_id"] = list(reversed(tasks["rl"]["items"]["task_id"]))
    rows = {(r["stage"], r["metric"]): r for r in check_all(tasks)}
    assert rows[("rl", "verifiable accuracy")]["verdict"] == "untested"
    assert "different items" in rows[("rl", "verifiable accuracy")]["reason"]


def test_report_html_renders_in_a_browser_with_the_plot_embedded(run_dir):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: run scripts/setup.sh (installs Debian's chromium)"
    build_report(run_dir, [StepResult("pretrain", "ran", 1.0, run_dir / "pretrain")])
    md = (run_dir / "report.md").read_text()
    assert "**no significant gain** (alpha 0.01)" in md and "![stage gains](stage_gains.png)" in md
    html = (run_dir / "report.html").read_text()
    assert "data:image/png;base64," in html and 'src="stage_gains.png"' not in html
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        page = browser.new_page()
        page.goto((run_dir / "report.html").as_uri())
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
        text = page.inner_text("body")
        rows = page.eval_on_selector_all("table tr", "rows => rows.length")
        browser.close()
    assert widths and all(w > 500 for w in widths)  # every plot decoded, none broken
    assert "no significant gain" in text and "significant gain" in text
    assert rows > 5
