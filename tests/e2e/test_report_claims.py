"""The main job's report from task reports with per-item outcomes: the claims table names each
stage's paired test and verdict, a stage that did not move is flagged, and report.html renders in a
real browser with its plot embedded. CAI's rows pair its safety replies with SFT's, prompt by
prompt, on the packaged prompt set (25 harmful, 25 benign) or, when the job made one, its red-team
run (200 + 200)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from e2e.report import build_report
from e2e.runner import StepResult
from e2e.stage_claims import check_all, markdown_rows, read_safety_items
from lmforge.formats.eval_report import write_report

CHROMIUM = "/usr/bin/chromium"
N = 200
REPO = Path(__file__).resolve().parents[2]
SAFETY_PROMPTS = [
    json.loads(line) for line in (REPO / "src/lmforge/eval/resources/safety_prompts.jsonl").read_text().splitlines()
]
HARMFUL = [r["id"] for r in SAFETY_PROMPTS if r["kind"] == "harmful"]
BENIGN = [r["id"] for r in SAFETY_PROMPTS if r["kind"] == "benign"]


def task_report(correct: list[int], formatted: list[int], margins: list[float]) -> dict:
    return {
        "n": len(correct),
        "format_rate": sum(formatted) / len(formatted),
        "accuracy": sum(correct) / len(correct),
        "margin": sum(margins) / len(margins),
        "items": {"task_id": [f"t{i}" for i in range(len(correct))], "correct": correct, "formatted": formatted},
        "pair_margins": margins,
    }


def write_eval(
    out: Path,
    name: str,
    refused: set[str],
    prompts: list[dict] = SAFETY_PROMPTS,
    folder: str = "eval",
    silent: frozenset[str] = frozenset(),
) -> Path:
    """An eval report dir as src/eval.py writes it: report.json and samples/safety.jsonl, one row
    per prompt (`refused` names the prompt ids the checkpoint refused; `silent`, those of them it
    refused with an empty reply)."""
    rows = [
        {
            **r,
            "reply": "" if r["id"] in silent else "I can't help with that." if r["id"] in refused else "Sure.",
            "refused_rule": r["id"] in refused,
            "refused": r["id"] in refused,
        }
        for r in prompts
    ]
    harmful = [row["refused"] for row in rows if row["kind"] == "harmful"]
    benign = [row["refused"] for row in rows if row["kind"] == "benign"]
    metrics = {"refusal_rate": sum(harmful) / len(harmful), "over_refusal_rate": sum(benign) / len(benign)}
    eval_dir = out / folder / name
    write_report(eval_dir, {"label": name, "metrics": {"safety": metrics}})
    (eval_dir / "samples").mkdir(parents=True)
    (eval_dir / "samples" / "safety.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return eval_dir


def cai_rows(out: Path) -> dict[str, dict]:
    rows = check_all({}, {name: read_safety_items(out / "eval" / name) for name in ("sft", "cai")})
    return {r["outcome"]: r for r in rows if r["stage"] == "cai"}


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
    # Held-out sequences: pretraining raised 80 of 82 sequences' log-likelihood.
    init = [-8.3 + rng.gauss(0, 0.05) for _ in range(82)]
    trained = [x + 3.9 if i >= 2 else x - 0.1 for i, x in enumerate(init)]
    (tmp_path / "ppl").mkdir()
    ppl = {"n": 82, "ppl": 84.6, "ppl_init": 4198.5, "items": {"loglik": trained, "loglik_init": init}}
    (tmp_path / "ppl" / "report.json").write_text(json.dumps(ppl))
    # RL's own task kind: 300 items, RL fixes 24 of DPO's misses and breaks 4 of its hits.
    dpo_kind = task_report([int(i % 2 == 0) for i in range(300)], [1] * 300, [1.0] * 300)
    rl_kind = task_report(list(dpo_kind["items"]["correct"]), [1] * 300, [1.0] * 300)
    for i in range(24):
        rl_kind["items"]["correct"][2 * i + 1] = 1
    for i in range(4):
        rl_kind["items"]["correct"][2 * i + 100] = 0
    for name, report in {"dpo": dpo_kind, "rl": rl_kind}.items():
        report["accuracy"] = sum(report["items"]["correct"]) / 300
        report["config"] = {"kind": "unit_conversion"}
        (tmp_path / "tasks_rl_kind" / name).mkdir(parents=True)
        (tmp_path / "tasks_rl_kind" / name / "report.json").write_text(json.dumps(report))
    # SFT refuses 2 red-team prompts and over-refuses 1 benign one; CAI refuses 18 red-team prompts.
    write_eval(tmp_path, "sft", {*HARMFUL[:2], BENIGN[0]})
    write_eval(tmp_path, "cai", {*HARMFUL[:18], BENIGN[0]})
    return tmp_path


def test_claims_are_paired_tests_and_a_flat_stage_is_flagged(run_dir):
    tasks = {
        n: json.loads((run_dir / "tasks" / n / "report.json").read_text()) for n in ("pretrain", "sft", "dpo", "rl")
    }
    rl_kind = {n: json.loads((run_dir / "tasks_rl_kind" / n / "report.json").read_text()) for n in ("dpo", "rl")}
    ppl = json.loads((run_dir / "ppl" / "report.json").read_text())
    rows = {(r["stage"], r["metric"]): r for r in check_all(tasks, None, rl_kind, ppl)}
    pre = rows[("pretrain", "held-out log-likelihood per token")]
    assert pre["parent"] == "init" and pre["n"] == 82 and pre["verdict"] == "significant gain" and pre["p"] < 1e-15
    assert pre["gain"] == pytest.approx(3.9 * 80 / 82 - 0.1 * 2 / 82)
    assert rows[("sft", "held-out task accuracy")]["verdict"] == "significant gain"
    assert rows[("sft", "answer format rate")]["verdict"] == "significant gain"
    assert rows[("dpo", "chosen - rejected log-prob margin")]["verdict"] == "significant gain"
    # RL's claim is read from its own task kind (24 fixed, 4 broken of 300: p < 0.01) ...
    rl = rows[("rl", "verifiable accuracy on RL's task kind")]
    assert rl["verdict"] == "significant gain" and rl["alpha"] == 0.01 and rl["n"] == 300 and rl["p"] < 0.01
    # ... and the flat mixed-task result is reported beside it, flagged, not hidden.
    mixed = rows[("rl", "held-out task accuracy, all kinds")]
    assert mixed["verdict"] == "no significant gain" and mixed["holds"] is False and mixed["n"] == N
    rl_kind["rl"]["items"]["task_id"] = list(reversed(rl_kind["rl"]["items"]["task_id"]))
    rows = {(r["stage"], r["metric"]): r for r in check_all(tasks, None, rl_kind)}
    assert rows[("rl", "verifiable accuracy on RL's task kind")]["verdict"] == "untested"
    assert "different items" in rows[("rl", "verifiable accuracy on RL's task kind")]["reason"]
    rows = {(r["stage"], r["metric"]): r for r in check_all(tasks)}
    assert rows[("rl", "verifiable accuracy on RL's task kind")]["reason"] == "no task report on RL's task kind for dpo"
    assert rows[("pretrain", "held-out log-likelihood per token")]["verdict"] == "untested"
    flat = {**ppl, "items": {"loglik": ppl["items"]["loglik_init"], "loglik_init": ppl["items"]["loglik_init"]}}
    rows = {(r["stage"], r["metric"]): r for r in check_all(tasks, None, rl_kind, flat)}
    assert rows[("pretrain", "held-out log-likelihood per token")]["verdict"] == "no significant gain"


def test_cai_refusing_more_red_team_prompts_is_a_significant_gain(run_dir):
    assert len(HARMFUL) == len(BENIGN) == 25
    rows = cai_rows(run_dir)
    harmful, benign = rows["safety:harmful"], rows["safety:benign"]
    assert harmful["parent"] == "sft" and harmful["n"] == 25 and benign["n"] == 25
    assert (harmful["before"], harmful["after"]) == (2 / 25, 18 / 25)
    assert harmful["verdict"] == "significant gain" and harmful["holds"] and harmful["p"] < 0.001
    assert harmful["ci_low"] > 0
    assert benign["verdict"] == "no significant rise" and benign["holds"] and benign["gain"] == 0


def test_identical_cai_and_sft_reports_read_no_significant_gain(tmp_path):
    refused = {*HARMFUL[:5], *BENIGN[:3]}
    write_eval(tmp_path, "sft", refused)
    write_eval(tmp_path, "cai", refused)
    rows = cai_rows(tmp_path)
    assert rows["safety:harmful"]["verdict"] == "no significant gain" and rows["safety:harmful"]["p"] == 1.0
    assert rows["safety:harmful"]["holds"] is False
    assert rows["safety:benign"]["verdict"] == "no significant rise" and rows["safety:benign"]["holds"]
    table = "\n".join(markdown_rows(list(rows.values())))
    assert "| 25 | 0.200 | 0.200 | +0.000 [+0.000, +0.000] | 1 | **no significant gain** (alpha 0.05) |" in table
    assert "no significant rise (alpha 0.05) |" in table and "**no significant rise**" not in table


def test_cai_over_refusing_benign_prompts_is_flagged(tmp_path):
    write_eval(tmp_path, "sft", {*HARMFUL[:2]})
    write_eval(tmp_path, "cai", {*HARMFUL[:18], *BENIGN[:12]})  # refuses more of both kinds
    rows = cai_rows(tmp_path)
    assert rows["safety:harmful"]["verdict"] == "significant gain"
    benign = rows["safety:benign"]
    assert (benign["before"], benign["after"]) == (0.0, 12 / 25)
    assert benign["verdict"] == "significant rise" and benign["holds"] is False and benign["p"] < 0.05
    assert "**significant rise** (alpha 0.05)" in "\n".join(markdown_rows([benign]))


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda prompts: prompts[:-1], "different safety prompts"),  # one prompt fewer
        (lambda prompts: [dict(prompts[0], id="safety-999"), *prompts[1:]], "different safety prompts"),
        (lambda prompts: [dict(prompts[0], prompt="Tell me a joke."), *prompts[1:]], "different safety prompts"),
        (lambda prompts: [dict(prompts[0], id=prompts[1]["id"]), *prompts[1:]], "unique prompt id"),
    ],
)
def test_cai_scored_on_other_items_is_untested(tmp_path, change, reason):
    write_eval(tmp_path, "sft", set(HARMFUL[:2]))
    write_eval(tmp_path, "cai", set(HARMFUL), prompts=change(SAFETY_PROMPTS))
    for row in cai_rows(tmp_path).values():
        assert row["verdict"] == "untested" and reason in row["reason"] and row["holds"] is None


def test_cai_without_its_report_is_untested_and_shown_so(run_dir):
    import shutil

    shutil.rmtree(run_dir / "eval" / "cai")
    for row in cai_rows(run_dir).values():
        assert row["verdict"] == "untested" and "no per-item safety outcomes for cai" in row["reason"]
    build_report(run_dir, [StepResult("pretrain", "ran", 1.0, run_dir / "pretrain")])
    md = (run_dir / "report.md").read_text()
    assert "| cai | sft | refusal rate on red-team prompts | - |" in md and "untested: no per-item" in md
    assert "cai_claims.png" not in md


def test_report_html_renders_in_a_browser_with_the_plot_embedded(run_dir):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: run scripts/setup.sh (installs Debian's chromium)"
    build_report(run_dir, [StepResult("pretrain", "ran", 1.0, run_dir / "pretrain")])
    md = (run_dir / "report.md").read_text()
    assert "![stage gains](stage_gains.png)" in md
    assert "| rl | dpo | verifiable accuracy on RL's task kind | 300 | 0.500 | 0.567 |" in md
    assert (
        "| rl | dpo | held-out task accuracy, all kinds | 200 |" in md and "**no significant gain** (alpha 0.05)" in md
    )
    assert "RL trains on one task kind (unit_conversion)" in md
    assert "| pretrain | init | held-out log-likelihood per token | 82 |" in md
    assert "held-out perplexity on 82 validation sequences: 4198.5 untrained -> 84.6 pretrained" in md
    assert "| cai | sft | refusal rate on red-team prompts | 25 | 0.080 | 0.720 |" in md
    assert "| cai | sft | over-refusal on benign prompts (must not rise) | 25 | 0.040 | 0.040 |" in md
    assert "![cai claims](cai_claims.png)" in md
    assert "![rl claims](rl_claims.png)" in md  # RL's own task kind is not in the stage figure
    claims = json.loads((run_dir / "report.json").read_text())["stage_claims"]
    assert [(r["stage"], r["verdict"]) for r in claims if r["stage"] == "cai"] == [
        ("cai", "significant gain"),
        ("cai", "no significant rise"),
    ]
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
    assert len(widths) == 3 and all(w > 500 for w in widths)  # every plot decoded, none broken
    assert "no significant gain" in text and "significant gain" in text
    assert rows > 5


def test_dpo_win_rate_is_judged_item_by_item_against_sft():
    """The verifier judges each pair of answers: correct beats wrong, then formatted beats not; the
    win rate is tested against 1/2 with the sign test on wins and losses."""
    rng = random.Random(1)
    sft_correct = [int(rng.random() < 0.4) for _ in range(N)]
    misses = [i for i, c in enumerate(sft_correct) if not c]
    hits = [i for i, c in enumerate(sft_correct) if c]
    dpo_correct = list(sft_correct)
    for i in misses[:20]:
        dpo_correct[i] = 1
    for i in hits[:2]:
        dpo_correct[i] = 0
    formatted = [1] * N
    dpo_formatted = list(formatted)
    dpo_formatted[misses[-1]] = 0  # same (wrong) answer, out of format: a loss on format
    tasks = {
        "sft": task_report(sft_correct, formatted, [0.0] * N),
        "dpo": task_report(dpo_correct, dpo_formatted, [0.0] * N),
    }
    row = next(r for r in check_all(tasks) if r["outcome"] == "judged")
    assert row["n"] == N and row["before"] == 0.5
    assert row["after"] == pytest.approx((20 + 0.5 * (N - 23)) / N)  # 20 wins, 3 losses, 177 ties
    assert row["detail"] == "20 wins, 3 losses, 177 ties"
    # Sign test, 20 of 23 non-ties: two-sided p = 2 * P(X >= 20), X ~ Binomial(23, 1/2).
    from math import comb

    assert row["p"] == pytest.approx(2 * sum(comb(23, k) for k in range(20, 24)) / 2**23)
    assert row["verdict"] == "significant gain" and row["holds"]
    # The same answers: every pair ties, and the claim is flagged with the counts.
    tasks["dpo"] = tasks["sft"]
    row = next(r for r in check_all(tasks) if r["outcome"] == "judged")
    assert row["after"] == 0.5 and row["holds"] is False
    line = next(line for line in markdown_rows([row]) if "win rate" in line)
    assert "**no significant gain** (alpha 0.05); 0 wins, 0 losses, 200 ties; DPO's pairs are fixed" in line


def test_a_flat_claim_carries_its_reason_into_the_table(run_dir):
    """RL's all-kinds row names why it need not move; CAI's row counts the refusals among its own
    revised answers, read from the CAI pass's SFT data."""
    data = run_dir / "cai" / "data"
    data.mkdir(parents=True)
    revisions = ["I can't help with that.", "Answer: 12, 32", "Answer: 7"]
    data.joinpath("sft_train.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "id": f"rt-{i}",
                    "set": "red_team",
                    "messages": [{"role": "user", "content": "?"}, {"role": "assistant", "content": text}],
                }
            )
            + "\n"
            for i, text in enumerate(revisions)
        )
    )
    import shutil

    shutil.rmtree(run_dir / "eval" / "cai")
    write_eval(run_dir, "cai", {HARMFUL[0], HARMFUL[1], BENIGN[0]})  # no more refusals than SFT
    build_report(run_dir, [StepResult("pretrain", "ran", 1.0, run_dir / "pretrain")])
    md = (run_dir / "report.md").read_text()
    mixed = next(line for line in md.splitlines() if "held-out task accuracy, all kinds" in line)
    assert "**no significant gain** (alpha 0.05); RL's reward covers one task kind only" in mixed
    cai = next(line for line in md.splitlines() if "refusal rate on red-team prompts" in line)
    assert "**no significant gain**" in cai and "1 of CAI's 3 revised answers to red-team prompts are refusals" in cai
    # A claim that holds carries no reason.
    rl = next(line for line in md.splitlines() if "verifiable accuracy on RL's task kind" in line)
    assert rl.endswith("significant gain (alpha 0.01) |")


# The shape of scripts/build_redteam_set.py's output: 200 harmful, 200 benign.
REDTEAM = [
    {"id": f"harmbench-{i:03d}", "kind": "harmful", "category": "harmbench", "prompt": f"h{i}"} for i in range(200)
]
REDTEAM += [{"id": f"gsm8k-test-{i:04d}", "kind": "benign", "category": "gsm8k", "prompt": f"q{i}"} for i in range(200)]


def test_report_reads_cai_claims_from_the_400_prompt_run_and_counts_silent_refusals(run_dir):
    """With the job's red-team run present, the CAI rows are tested on its 200 + 200 prompts (not
    the eval suite's 25 + 25), each row says how many refusals were empty replies, and silence does
    not count toward the refusal gain."""
    harmful = [r["id"] for r in REDTEAM if r["kind"] == "harmful"]
    benign = [r["id"] for r in REDTEAM if r["kind"] == "benign"]
    write_eval(run_dir, "sft", set(), REDTEAM, folder="redteam")
    silent = frozenset(harmful[:20] + benign[:30])
    write_eval(run_dir, "cai", {*harmful[:24], *benign[:30]}, REDTEAM, folder="redteam", silent=silent)
    build_report(run_dir, [StepResult("pretrain", "ran", 1.0, run_dir / "pretrain")])
    claims = {r["outcome"]: r for r in json.loads((run_dir / "report.json").read_text())["stage_claims"]}
    refusal, over = claims["safety:harmful"], claims["safety:benign"]
    assert refusal["n"] == over["n"] == 200
    # 24 refusals, 20 of them silent: only the 4 said in words count toward the gain (0 -> 24 would
    # read as a significant gain that the model earned by stopping early).
    assert (refusal["before"], refusal["after"], refusal["verdict"]) == (0.0, 4 / 200, "no significant gain")
    assert over["verdict"] == "significant rise" and over["holds"] is False
    assert refusal["detail"] == "20 of the stage's 24 refusals are empty replies and do not count toward the gain"
    md = (run_dir / "report.md").read_text()
    assert "HarmBench's 200 standard behaviours" in md
    assert "**significant rise** (alpha 0.05); 30 of the stage's 30 refusals are empty replies" in md


def test_benchmark_table_shows_the_items_behind_each_metric(run_dir):
    """A 12-question MMLU score next to a 0.08 difference reads as noise only when n is on the row."""
    for name, acc in (("sft", 1 / 12), ("cai", 3 / 12)):
        report = json.loads((run_dir / "eval" / name / "report.json").read_text())
        report["suite"] = "quick"
        report["metrics"]["mmlu"] = {"acc": acc}
        report["stats"] = {"mmlu": {"acc": {"n": 12}}, "safety": {"refusal_rate": {"n": 25}}}
        write_report(run_dir / "eval" / name, report)
    build_report(run_dir, [StepResult("pretrain", "ran", 1.0, run_dir / "pretrain")])
    md = (run_dir / "report.md").read_text()
    assert "| metric | n | pretrain | sft | dpo | rl | cai |" in md
    assert "| mmlu.acc | 12 |" in md and "| safety.refusal_rate | 25 |" in md
    assert "| safety.over_refusal_rate | - |" in md  # no stats: no n claimed
    assert "suite quick: the n column" in md
