"""The SGLang command builder: flags checked against argparse-style parsing of the argv it returns."""

from __future__ import annotations

import argparse
import json

import pytest

from serving.launch import LaunchConfig, build_sglang_command


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
    return parser.parse_args(argv)


def test_command_has_expected_flags(tmp_path):
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
    argv = build_sglang_command(cfg, api_key="secret")
    assert argv[:3] == ["/venvs/sglang/bin/python", "-m", "sglang.launch_server"]
    args = _parse(argv[3:])
    assert args.model_path == args.tokenizer_path == str(export.resolve())
    assert (args.dtype, args.tp_size, args.api_key, args.host, args.port) == (
        "bfloat16",
        "2",
        "secret",
        "0.0.0.0",
        "31000",
    )
    assert args.served_model_name == export.name and args.mem_fraction_static == "0.8" and args.enable_metrics
    assert args.quantization is None and args.context_length is None  # auto-detected from config.json


def test_explicit_dtype_wins(tmp_path):
    argv = build_sglang_command(LaunchConfig(export=str(_export(tmp_path)), dtype="float16"), api_key="k")
    assert _parse(argv[3:]).dtype == "float16"


def test_refuses_quantization_flag_and_torchao_exports(tmp_path):
    export = _export(tmp_path)
    with pytest.raises(ValueError, match="--quantization"):
        build_sglang_command(LaunchConfig(export=str(export), extra_args=["--quantization", "fp8"]), api_key="k")
    _export(tmp_path, {"quant_method": "torchao"})
    with pytest.raises(ValueError, match="compressed-tensors"):
        build_sglang_command(LaunchConfig(export=str(export)), api_key="k")
    with pytest.raises(FileNotFoundError):
        build_sglang_command(LaunchConfig(export=str(tmp_path / "missing")), api_key="k")
