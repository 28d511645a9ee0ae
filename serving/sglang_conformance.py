"""SGLang's own config, quantization and weight-loading code run on CPU against our exports.

Run with the SGLang environment's interpreter (scripts/setup_engines.sh makes .venv-sglang), never the
project venv; this file imports nothing from lmforge:

    .venv-sglang/bin/python -P serving/sglang_conformance.py --out <dir> EXPORT_DIR...

For each export it records what SGLang decides, in SGLang's code:
- `ModelConfig`: architecture, dtype, context length and the quantization method it detects;
- the quantization config the model loader builds (`_get_quantization_config`) and the linear scheme
  the compressed-tensors config picks for every layer of SGLang's `LlamaForCausalLM`;
- the weights `DefaultModelLoader` loads into that model on the CPU, written to
  `<out>/<export name>.sglang.safetensors` so the caller compares them with the export;
- whether `process_weights_after_loading` (kernel repacking) runs, or the error it raises.

SGLang targets CUDA, so three things are patched here and only here: the GPU capability queries answer
(9, 0) (an H100), rotary embedding is built as on CUDA (its non-CUDA path imports vLLM's kernels), and
the process is its own one-rank gloo tensor-parallel group. Nothing on the weight path is patched.
Results: <out>/sglang_conformance.json.
"""

from __future__ import annotations

import argparse
import json
import socket
import traceback
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

# The capability SGLang is told it runs on: sm90, which every scheme it has for our formats accepts.
CAPABILITY = (9, 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_rank_groups(export: Path) -> None:
    from sglang.srt.distributed import parallel_state
    from sglang.srt.runtime_context import get_parallel
    from sglang.srt.server_args import ServerArgs, set_global_server_args_for_scheduler

    set_global_server_args_for_scheduler(ServerArgs(model_path=str(export), device="cpu"))
    parallel_state.init_distributed_environment(
        world_size=1,
        rank=0,
        local_rank=0,
        distributed_init_method=f"tcp://127.0.0.1:{_free_port()}",
        backend="gloo",
    )
    parallel_state.initialize_model_parallel()
    get_parallel().override_permanently(tp_rank=0, pp_rank=0)


def _cuda_patches(stack: ExitStack) -> None:
    from sglang.srt.model_loader import loader

    stack.enter_context(mock.patch.object(loader, "get_device_capability", lambda *a, **k: CAPABILITY))
    stack.enter_context(mock.patch("torch.cuda.get_device_capability", lambda *a, **k: CAPABILITY))
    stack.enter_context(mock.patch("sglang.srt.layers.rotary_embedding.base._is_cuda", True))


def check_export(export: Path, out: Path) -> dict:
    import torch
    from safetensors.torch import save_file
    from sglang.srt.configs.load_config import LoadConfig
    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.model_loader import loader

    result: dict = {"export": str(export)}
    model_config = ModelConfig(model_path=str(export))
    result["model_config"] = {
        "architectures": list(model_config.hf_config.architectures),
        "quantization": model_config.quantization,
        "dtype": str(model_config.dtype).removeprefix("torch."),
        "context_len": model_config.context_len,
        "num_hidden_layers": model_config.num_hidden_layers,
        "head_dim": model_config.head_dim,
    }
    load_config = LoadConfig()
    with ExitStack() as stack:
        _cuda_patches(stack)
        quant_config = loader._get_quantization_config(model_config, load_config)
        result["quant_config"] = type(quant_config).__name__ if quant_config is not None else None
        with torch.device("cpu"), loader.set_default_torch_dtype(model_config.dtype):
            model = loader._initialize_model(model_config, load_config, quant_config)
    result["model_class"] = type(model).__name__
    result["schemes"] = {
        name: type(module.scheme).__name__
        for name, module in model.named_modules()
        if getattr(module, "scheme", None) is not None
    }
    result["linear_methods"] = {
        name: type(module.quant_method).__name__
        for name, module in model.named_modules()
        if type(module).__name__ in {"QKVParallelLinear", "MergedColumnParallelLinear", "RowParallelLinear"}
    }
    model_loader = loader.DefaultModelLoader(load_config)
    weights = model_loader._get_all_weights(model_config, model)
    loader.DefaultModelLoader.load_weights_only(model, weights, torch.device("cpu"))
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    dumped = out / f"{export.name}.sglang.safetensors"
    save_file(state, str(dumped))
    result["loaded"] = str(dumped)
    result["loaded_shapes"] = {name: [list(t.shape), str(t.dtype).removeprefix("torch.")] for name, t in state.items()}
    # Repacking for the kernels is the first step that needs the GPU; record how far it gets.
    try:
        with ExitStack() as stack:
            _cuda_patches(stack)
            loader.DefaultModelLoader.postprocess_weights(model, torch.device("cpu"))
        result["post_load"] = "ok"
    except Exception as error:  # recorded: the caller asserts on it
        frame = traceback.extract_tb(error.__traceback__)[-1]
        result["post_load"] = f"{type(error).__name__}: {error} ({Path(frame.filename).name}:{frame.lineno})"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exports", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import sglang

    args.out.mkdir(parents=True, exist_ok=True)
    _one_rank_groups(args.exports[0])
    results = {"sglang": sglang.__version__, "exports": [check_export(e, args.out) for e in args.exports]}
    (args.out / "sglang_conformance.json").write_text(json.dumps(results, indent=2) + "\n")
    for r in results["exports"]:
        schemes = sorted(set(r["schemes"].values())) or ["(dense)"]
        print(f"{Path(r['export']).name}: {r['model_config']['quantization']} -> {', '.join(schemes)}")


if __name__ == "__main__":
    main()
