import json

import pytest

from lmforge.formats.checkpoint_meta import (
    EXPORT_FORMAT,
    MANIFEST,
    RUN_FORMAT,
    read_export_manifest,
    read_run_manifest,
    write_export_manifest,
    write_run_manifest,
)
from tests.support.format_versions import assert_refused

KINDS = [
    (RUN_FORMAT, write_run_manifest, read_run_manifest),
    (EXPORT_FORMAT, write_export_manifest, read_export_manifest),
]


@pytest.mark.parametrize("version, write, read", KINDS)
def test_round_trip(tmp_path, version, write, read):
    write(tmp_path, {"kind": "sft", "best_checkpoint": str(tmp_path / "best.ckpt")})
    assert read(tmp_path) == {"version": version, "kind": "sft", "best_checkpoint": str(tmp_path / "best.ckpt")}


@pytest.mark.parametrize("version, write, read", KINDS)
def test_a_folder_without_manifest_has_an_empty_one(tmp_path, version, write, read):
    assert read(tmp_path) == {}


@pytest.mark.parametrize("version, write, read", KINDS)
def test_manifests_from_before_the_tag_read_as_version_1(tmp_path, version, write, read):
    (tmp_path / MANIFEST).write_text(json.dumps({"kind": "pretrain"}))
    assert read(tmp_path) == {"kind": "pretrain"}


@pytest.mark.parametrize("version, write, read", KINDS)
@pytest.mark.parametrize("found", ["lmforge-run/0", "lmforge-export/2", "lmforge-shards/1"])
def test_another_version_is_refused_naming_file_and_versions(tmp_path, version, write, read, found):
    assert_refused(read, tmp_path, tmp_path / MANIFEST, {"version": found}, version)


def test_rewriting_a_legacy_manifest_tags_it_with_this_version(tmp_path):
    write_export_manifest(tmp_path, {"version": None, "quant": "int8"})
    assert read_export_manifest(tmp_path) == {"version": EXPORT_FORMAT, "quant": "int8"}
