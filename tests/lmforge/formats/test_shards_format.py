import json

import numpy as np
import pytest

from lmforge.formats.shards import (
    MANIFEST,
    SAMPLE_KEY,
    SHARDS_FORMAT,
    read_manifest,
    read_shard,
    sample,
    write_manifest,
)
from tests.support.format_versions import assert_refused


def test_shard_and_manifest_round_trip(tmp_path):
    import webdataset as wds

    rows = np.arange(12, dtype=np.uint32).reshape(3, 4)
    with wds.TarWriter(str(tmp_path / "train-00000.tar")) as tar:
        for i, row in enumerate(rows):
            tar.write(sample(f"web-train-{i:09d}", row, np.dtype("<u2")))
    written = write_manifest(tmp_path, {"format": {"sample_key": SAMPLE_KEY, "dtype": "<u2", "seq_len": 4}})

    assert read_manifest(tmp_path) == written == {"version": SHARDS_FORMAT, **written}
    np.testing.assert_array_equal(read_shard(tmp_path / "train-00000.tar", np.dtype("<u2"), expected=3), rows)
    with pytest.raises(ValueError, match="manifest says 4"):
        read_shard(tmp_path / "train-00000.tar", np.dtype("<u2"), expected=4)


def test_missing_shards_say_how_to_write_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_pipeline.shards"):
        read_manifest(tmp_path)


def test_manifests_from_before_the_tag_read_as_version_1(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({"job_key": "k"}))
    assert read_manifest(tmp_path)["job_key"] == "k"


@pytest.mark.parametrize("found", ["lmforge-shards/0", "lmforge-shards/2", "lmforge-corpus/1"])
def test_another_version_is_refused_naming_file_and_versions(tmp_path, found):
    assert_refused(read_manifest, tmp_path, tmp_path / MANIFEST, {"version": found}, SHARDS_FORMAT)
