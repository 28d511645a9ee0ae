"""Read an offline W&B run's transaction log (`run-<id>.wandb`) back, as `wandb sync` would.

The file is W&B's 7-byte header (`:W&B`, magic 0xBEE1, version) followed by a LevelDB-style log:
32 KiB blocks of chunks, each `crc32 (4) | length (2) | type (1) | data`, type FULL=1 or
FIRST=2 / MIDDLE=3 / LAST=4 pieces of one record; each record is a `wandb_internal_pb2.Record`.
wandb >= 0.2x dropped its Python reader (the Go core writes these files), so tests read them here.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

from wandb.proto import wandb_internal_pb2

_HEADER = struct.Struct("<4sHB")
_CHUNK = struct.Struct("<IHB")
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def iter_records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    ident, magic, _version = _HEADER.unpack_from(data)
    assert ident == b":W&B" and magic == 0xBEE1, f"{path} is not a W&B transaction log"
    pos, pending = _HEADER.size, b""
    while pos + _CHUNK.size <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _CHUNK.size:  # block trailer: padding
            pos += left_in_block
            continue
        _crc, length, kind = _CHUNK.unpack_from(data, pos)
        pos += _CHUNK.size
        chunk, pos = data[pos : pos + length], pos + length
        if kind in (_FULL, _FIRST):
            pending = chunk
        elif kind in (_MIDDLE, _LAST):
            pending += chunk
        else:
            break  # zero padding at the end of the file
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def run_config(path: Path) -> dict:
    """The run's config as W&B would show it: the run record's config, then every config update."""
    config: dict = {}
    for record in iter_records(path):
        kind = record.WhichOneof("record_type")
        updates = record.run.config.update if kind == "run" else record.config.update if kind == "config" else []
        for item in updates:
            config[item.key] = json.loads(item.value_json)
    return config
