"""Arena: a real browser votes through the page; no served byte names a model; the
statistics equal independently computed values on a fixed vote table."""

from __future__ import annotations

import math
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from scipy import optimize, stats

from lmforge.eval.arena.app import make_handler
from lmforge.eval.arena.stats import arena_stats, comparisons, head_to_head
from lmforge.eval.arena.store import ArenaStore
from lmforge.eval.metrics import bradley_terry, wilson_interval

CHROMIUM = "/usr/bin/chromium"
NEW, BASE = "candidate-zephyr-x91", "baseline-orca-q07"


class _Tee:
    def __init__(self, raw, sink: list[bytes]) -> None:
        self.raw, self.sink = raw, sink

    def write(self, data) -> int:
        self.sink.append(bytes(data))
        return self.raw.write(data)

    def __getattr__(self, name):
        return getattr(self.raw, name)


@pytest.fixture
def arena(tmp_path):
    store = ArenaStore(tmp_path / "arena.sqlite", seed=1)
    rows = []
    for i in range(3):
        prompt = f"Question number {i}: explain photosynthesis briefly."
        rows.append({"prompt_id": f"p{i}", "prompt": prompt, "model": NEW, "response": f"Answer one for {i}."})
        rows.append({"prompt_id": f"p{i}", "prompt": prompt, "model": BASE, "response": f"Answer two for {i}."})
    store.add_responses(rows)
    served: list[bytes] = []  # every byte the server writes to any client (headers + bodies)

    class RecordingHandler(make_handler(store)):
        def setup(self):
            super().setup()
            self.wfile = _Tee(self.wfile, served)

    server = ThreadingHTTPServer(("127.0.0.1", 0), RecordingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield store, f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_votes_cast_in_a_real_browser_and_no_model_name_is_served(arena):
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (scripts/setup.sh installs Debian's chromium)")
    store, url, served = arena
    shown = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-extensions",
            ],
        )
        page = browser.new_page()
        requests = []
        page.on("request", lambda request: requests.append(request.url))
        with page.expect_response(lambda r: "/api/next" in r.url):
            page.goto(f"{url}/?annotator=alice")
        for choice in ("Left is better", "Right is better", "Tie"):
            page.wait_for_selector("#task:not([hidden])")
            shown.append((page.inner_text("#left"), page.inner_text("#right")))
            with page.expect_response(lambda r: "/api/next" in r.url):  # the vote, then the next pair
                page.get_by_role("button", name=choice).click()
        page.wait_for_function("document.getElementById('status').textContent.includes('All pairs judged')")
        served.append(page.content().encode())
        browser.close()

    votes = store.votes()
    assert len(votes) == 3 and {v["annotator"] for v in votes} == {"alice"}
    # Each recorded outcome matches what was on screen: "left" credits whichever model was shown left.
    by_text = {f"Answer one for {i}.": NEW for i in range(3)} | {f"Answer two for {i}.": BASE for i in range(3)}
    expected = []
    for (left, right), choice in zip(shown, ("left", "right", "tie")):
        winner = {"left": by_text[left], "right": by_text[right], "tie": None}[choice]
        expected.append("tie" if winner is None else ("a" if winner == min(NEW, BASE) else "b"))
    assert [v["outcome"] for v in votes] == expected
    blob = b"\n".join(served)
    assert sum("/api/next" in r for r in requests) == 4 and sum("/api/vote" in r for r in requests) == 3
    assert b"Answer one for 0." in blob  # the capture really holds the payloads
    for name in (NEW, BASE, "candidate", "baseline", "zephyr", "orca"):
        assert name.encode() not in blob, f"{name} leaked into served bytes"


def test_api_rejects_a_token_from_another_annotator(arena):
    store, _, _ = arena
    pair = store.next_pair("bob")
    with pytest.raises(PermissionError):
        store.record_vote(pair["token"], "left", "mallory")
    with pytest.raises(ValueError):
        store.record_vote(pair["token"], "left-ish", "bob")
    assert set(pair) == {"token", "prompt", "left", "right"}


# Fixed vote table: candidate vs baseline 14 wins, 5 losses, 3 ties, 2 both bad.
TABLE = [("a", 14), ("b", 5), ("tie", 3), ("both_bad", 2)]


def _votes(model_a: str, model_b: str, table) -> list[dict]:
    return [
        {"annotator": f"u{i % 3}", "prompt_id": f"p{i}", "model_a": model_a, "model_b": model_b, "outcome": o}
        for i, (o, n) in enumerate(table)
        for _ in range(n)
    ]


def test_head_to_head_statistics_equal_reference_values():
    votes = _votes(BASE, NEW, [("b", 14), ("a", 5), ("tie", 3), ("both_bad", 2)])  # NEW sorts second: wins are "b"
    h2h = head_to_head(votes, NEW, BASE, alpha=0.05)
    assert (h2h["wins"], h2h["losses"], h2h["ties"], h2h["both_bad"]) == (14, 5, 3, 2)
    assert h2h["win_rate"] == pytest.approx(14 / 19)
    # Sign test by hand: P(X >= 14), X ~ Bin(19, 1/2) = (C(19,14)+...+C(19,19)) / 2^19 = 0.0317840576171875
    by_hand = sum(math.comb(19, k) for k in range(14, 20)) / 2**19
    assert by_hand == pytest.approx(0.0317840576171875)
    assert h2h["p_value"] == pytest.approx(by_hand, rel=1e-12)
    assert h2h["p_value"] == pytest.approx(stats.binomtest(14, 19, 0.5, alternative="greater").pvalue, rel=1e-9)
    ci = stats.binomtest(14, 19).proportion_ci(confidence_level=0.95, method="wilson")
    assert h2h["win_rate_ci"] == pytest.approx([ci.low, ci.high], rel=1e-9)
    assert h2h["wins_statistically"] is True
    assert head_to_head(votes, NEW, BASE, alpha=0.01)["wins_statistically"] is False  # p=0.032 > 0.01
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_bradley_terry_matches_direct_likelihood_maximisation():
    models = ["m1", "m2", "m3"]
    votes = (
        _votes("m1", "m2", [("a", 8), ("b", 4), ("tie", 2)])
        + _votes("m1", "m3", [("a", 9), ("b", 3)])
        + _votes("m2", "m3", [("a", 6), ("b", 5), ("both_bad", 4)])
    )
    comps = comparisons(votes)
    ours = bradley_terry(comps)

    # Independent reference: maximise the BT log-likelihood (ties as half wins) with scipy.
    def nll(theta_free):
        theta = dict(zip(models, [0.0, *theta_free]))
        total = 0.0
        for a, b, s in comps:
            p = 1 / (1 + math.exp(theta[b] - theta[a]))
            total -= s * math.log(p) + (1 - s) * math.log(1 - p)
        return total

    fit = optimize.minimize(nll, [0.0, 0.0], method="BFGS", options={"gtol": 1e-10})
    reference = dict(zip(models, [0.0, *fit.x]))
    for m in models[1:]:
        # The MM fit adds a 1e-3 pseudo-win per model; differences agree to that precision.
        assert ours[m] - ours["m1"] == pytest.approx(reference[m] - reference["m1"], abs=5e-3)
    result = arena_stats(votes, models, "m1", "m3", bootstrap_rounds=100)
    bt = result["bradley_terry"]
    assert bt["m1"]["score"] > bt["m2"]["score"] > bt["m3"]["score"]
    for m in models:
        assert bt[m]["ci_low"] <= bt[m]["score"] <= bt[m]["ci_high"]
    assert result["head_to_head"]["wins"] == 9 and result["head_to_head"]["losses"] == 3
