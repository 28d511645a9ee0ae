"""The one check every format reader must pass: another version is refused in one line that
names the file, the version this lmforge reads and the version found."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from lmforge.formats import FormatVersionError


def assert_refused(read: Callable[[Path], object], folder: Path, file: Path, tag: dict, expected: str) -> None:
    """Write `tag` (e.g. {"version": "x/0"}) as `file`, then `read(folder)` must refuse it."""
    file.write_text(json.dumps(tag))
    with pytest.raises(FormatVersionError) as err:
        read(folder)
    message = str(err.value)
    found = next(iter(tag.values()))
    assert "\n" not in message
    assert str(file) in message and expected in message
    assert (found if found is not None else "no version tag") in message
