"""The step runner: order, caching by key, invalidation downstream, failure reporting."""

import sys
from pathlib import Path

import pytest

from e2e.runner import Step, StepFailed, run_steps


def _writer(out: Path, text: str) -> list[str]:
    # A step that appends to a counter file, so reruns are observable.
    code = (
        "import pathlib,sys; p=pathlib.Path(sys.argv[1]); p.mkdir(parents=True, exist_ok=True);"
        "c=p/'count'; c.write_text(str(int(c.read_text())+1) if c.exists() else '1');"
        "(p/'value').write_text(sys.argv[2])"
    )
    return [sys.executable, "-c", code, str(out), text]


def _steps(tmp_path: Path, a_text: str = "a") -> list[Step]:
    return [
        Step("a", _writer(tmp_path / "a", a_text), tmp_path / "a"),
        Step("b", _writer(tmp_path / "b", "b"), tmp_path / "b", parents=["a"]),
    ]


def count(path: Path) -> int:
    return int((path / "count").read_text())


def test_rerun_skips_finished_steps(tmp_path):
    first = run_steps(_steps(tmp_path), tmp_path / "logs")
    assert [r.status for r in first] == ["ran", "ran"]
    second = run_steps(_steps(tmp_path), tmp_path / "logs")
    assert [r.status for r in second] == ["cached", "cached"]
    assert count(tmp_path / "a") == 1 and count(tmp_path / "b") == 1


def test_changed_step_reruns_it_and_its_children(tmp_path):
    run_steps(_steps(tmp_path), tmp_path / "logs")
    again = run_steps(_steps(tmp_path, a_text="changed"), tmp_path / "logs")
    assert [r.status for r in again] == ["ran", "ran"]
    assert (tmp_path / "a" / "value").read_text() == "changed"
    assert count(tmp_path / "b") == 2


def test_failure_names_the_step_and_keeps_earlier_work(tmp_path):
    steps = _steps(tmp_path) + [
        Step(
            "boom",
            [sys.executable, "-c", "print('bad input in x.yaml'); raise SystemExit(3)"],
            tmp_path / "boom",
            parents=["b"],
        ),
    ]
    with pytest.raises(StepFailed, match=r"step 'boom' failed: exit code 3(.|\n)*bad input in x.yaml"):
        run_steps(steps, tmp_path / "logs")
    assert [r.status for r in run_steps(_steps(tmp_path), tmp_path / "logs")] == ["cached", "cached"]


def test_unknown_parent_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="parents"):
        run_steps([Step("x", _writer(tmp_path / "x", "x"), tmp_path / "x", parents=["nope"])], tmp_path / "l")


def test_editing_a_watched_config_file_reruns_the_steps(tmp_path):
    """A stage's YAML edited between runs must not leave its old artifact standing as 'complete'."""
    conf = tmp_path / "conf"
    (conf / "stage").mkdir(parents=True)
    (conf / "stage" / "sft.yaml").write_text("lr: 1e-3\n")
    run_steps(_steps(tmp_path), tmp_path / "logs", watched=[conf])
    same = run_steps(_steps(tmp_path), tmp_path / "logs", watched=[conf])
    assert [r.status for r in same] == ["cached", "cached"]
    (conf / "stage" / "sft.yaml").write_text("lr: 3e-3\n")
    edited = run_steps(_steps(tmp_path), tmp_path / "logs", watched=[conf])
    assert [r.status for r in edited] == ["ran", "ran"]
    assert count(tmp_path / "a") == 2 and count(tmp_path / "b") == 2
