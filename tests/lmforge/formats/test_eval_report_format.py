import json

import pytest

from lmforge.formats.eval_report import EVAL_REPORT_FORMAT, REPORT_FILE, read_report, write_report
from tests.support.format_versions import assert_refused


def test_round_trip_from_the_file_or_its_directory(tmp_path):
    report = {"checkpoint": "ckpt", "metrics": {"gsm8k": {"exact_match": 0.25}}, "gate": None}
    path = write_report(tmp_path, report)
    assert path == tmp_path / REPORT_FILE
    assert read_report(tmp_path) == read_report(path) == {"version": EVAL_REPORT_FORMAT, **report}


def test_a_missing_report_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="src/eval.py"):
        read_report(tmp_path)


def test_reports_from_before_the_tag_read_as_version_1(tmp_path):
    (tmp_path / REPORT_FILE).write_text(json.dumps({"metrics": {}, "gate": {"passed": True}}))
    assert read_report(tmp_path)["gate"] == {"passed": True}


@pytest.mark.parametrize("found", ["lmforge-eval-report/0", "lmforge-eval-report/2", "lmforge-run/1"])
def test_another_version_is_refused_naming_file_and_versions(tmp_path, found):
    assert_refused(read_report, tmp_path, tmp_path / REPORT_FILE, {"version": found}, EVAL_REPORT_FORMAT)
