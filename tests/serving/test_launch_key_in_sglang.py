"""SGLang's own argument parser (`sglang.srt.server_args.prepare_server_args`, in .venv-sglang) reads
the API key from the owner-only `--config` file serving.launch writes, so the key is never on the
server's command line. A key with YAML-special characters and quotes arrives unchanged."""

from __future__ import annotations

import json

from serving.launch import LaunchConfig, build_sglang_command, remove_key_config, write_key_config
from tests.serving.engine_env import run_engine

PARSE = """
import json, sys
from sglang.srt.server_args import prepare_server_args
args = prepare_server_args(json.loads(sys.argv[1]))
print(json.dumps({"api_key": args.api_key, "host": args.host, "port": args.port, "model_path": args.model_path}))
"""


def test_sglang_reads_the_key_from_the_config_file(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / "config.json").write_text('{"model_type": "llama", "torch_dtype": "bfloat16"}')
    key = "sk-Zq:9 #not-a-comment 'single' \"double\" - [x]"
    key_config = write_key_config(key)
    try:
        argv = build_sglang_command(LaunchConfig(export=str(export), python="unused", port=31234), key_config)
        assert key not in " ".join(argv)
        result = run_engine("sglang", ["-c", PARSE, json.dumps(argv[3:])], timeout=600)
    finally:
        remove_key_config(key_config)
    parsed = json.loads(result.stdout.strip().splitlines()[-1])
    assert parsed == {"api_key": key, "host": "127.0.0.1", "port": 31234, "model_path": str(export.resolve())}
