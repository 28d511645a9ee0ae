"""The SGLang command builder: flags checked against argparse-style parsing of the argv it returns,
with the key file merged the way SGLang's `--config` merges it (YAML keys become leading flags)."""

from __future__ import annotations

import argparse
import json
import stat

import pytest
import yaml

from serving.launch import LaunchConfig, build_sglang_command, remove_key_config, write_key_config


def _export(tmp_path, quantization_config=None, dtype="bfloat16"):
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": dtype}
    if quantization_config is not None:
        config["quantization_config"] = quantization_config
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    for flag in [
        "--model-path",
        "--tokenizer-path",
        "--dtype",
        "--tp-size",
        "--api-key",
        "--host",
        "--port",
        "--served-model-name",
        "--mem-fraction-static",
        "--context-length",
        "--quantization",
    ]:
        parser.add_argument(flag)
    parser.add_argument("--enable-metrics", action="store_true")
    if "--config" in argv:  # SGLang's merge: the file's `key: value`s go first as `--key value`
        at = argv.index("--config")
        merged = [arg for key, value in yaml.safe_load(open(argv[at + 1])).items() for arg in (f"--{key}", str(value))]
        argv = merged + argv[:at] + argv[at + 2 :]
    return parser.parse_args(argv)


@pytest.fixture
def key_config():
    path = write_key_config("s3cr:et #with yaml-special chars")
    yield path
    remove_key_config(path)


def test_command_has_expected_flags(tmp_path, key_config):
    export = _export(tmp_path, {"quant_method": "compressed-tensors", "format": "pack-quantized"})
    cfg = LaunchConfig(
        export=str(export),
        python="/venvs/sglang/bin/python",
        host="0.0.0.0",
        port=31000,
        tp_size=2,
        mem_fraction_static=0.8,
        extra_args=["--enable-metrics"],
    )
    argv = build_sglang_command(cfg, key_config)
    assert argv[:3] == ["/venvs/sglang/bin/python", "-m", "sglang.launch_server"]
    assert "--api-key" not in argv and not any("s3cr" in arg for arg in argv)  # the key is in the file only
    assert stat.S_IMODE(key_config.stat().st_mode) == 0o600 and stat.S_IMODE(key_config.parent.stat().st_mode) == 0o700
    args = _parse(argv[3:])
    assert args.model_path == args.tokenizer_path == str(export.resolve())
    assert (args.dtype, args.tp_size, args.api_key, args.host, args.port) == (
        "bfloat16",
        "2",
        "s3cr:et #with yaml-special chars",
        "0.0.0.0",
        "31000",
    )
    assert args.served_model_name == export.name and args.mem_fraction_static == "0.8" and args.enable_metrics
    assert args.quantization is None and args.context_length is None  # auto-detected from config.json


def test_explicit_dtype_wins(tmp_path, key_config):
    argv = build_sglang_command(LaunchConfig(export=str(_export(tmp_path)), dtype="float16"), key_config)
    assert _parse(argv[3:]).dtype == "float16"


def test_refuses_quantization_flag_key_flags_and_torchao_exports(tmp_path, key_config):
    export = _export(tmp_path)
    with pytest.raises(ValueError, match="--quantization"):
        build_sglang_command(LaunchConfig(export=str(export), extra_args=["--quantization", "fp8"]), key_config)
    for flags in (["--api-key", "k"], ["--api-key=k"], ["--config", "other.yaml"]):
        with pytest.raises(ValueError, match="cmdline"):
            build_sglang_command(LaunchConfig(export=str(export), extra_args=flags), key_config)
    _export(tmp_path, {"quant_method": "torchao"})
    with pytest.raises(ValueError, match="compressed-tensors"):
        build_sglang_command(LaunchConfig(export=str(export)), key_config)
    with pytest.raises(FileNotFoundError):
        build_sglang_command(LaunchConfig(export=str(tmp_path / "missing")), key_config)
