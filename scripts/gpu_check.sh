#!/usr/bin/env bash
# GPU serving check: SGLang serves our bf16 and compressed-tensors exports (chat + completion requests,
# wrong-key refusal, output tokens/s under 32 concurrent requests). Needs one CUDA GPU.
#
#   SGLANG_PYTHON=~/sglang-venv/bin/python scripts/gpu_check.sh          # a deploy venv with sglang[all]
#   CKPT=runs/.../last.ckpt scripts/gpu_check.sh                          # serve a trained checkpoint
#
# Without SGLANG_PYTHON, a deploy venv is made at $SGLANG_VENV with `pip install "sglang[all]"` (needs
# the package index). Without CKPT, a random-init Llama with head_dim 64 (the smallest that SGLang's
# attention kernels take; conf/model/tiny has 32) is built, so the check measures the engine, not text.
# Writes $OUT_DIR/sglang_check.json and prints a table; exits non-zero if any export failed.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT_DIR:-runs/gpu_check}
PY=${PY:-.venv/bin/python}
QUANTS=${QUANTS:-"none w8a8 w4a16 fp8 int8wo"}
mkdir -p "$OUT_DIR"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT_DIR/gpu.txt"

if [[ -z "${SGLANG_PYTHON:-}" ]]; then
  SGLANG_VENV=${SGLANG_VENV:-$HOME/sglang-venv}
  if [[ ! -x "$SGLANG_VENV/bin/python" ]]; then
    python3 -m venv "$SGLANG_VENV"
    "$SGLANG_VENV/bin/pip" install --quiet "sglang[all]"
  fi
  SGLANG_PYTHON="$SGLANG_VENV/bin/python"
fi
"$SGLANG_PYTHON" -c "import sglang; print('sglang', sglang.__version__)" | tee "$OUT_DIR/sglang_version.txt"

# 1. The checkpoint to serve (CPU work in the project venv).
if [[ -z "${CKPT:-}" ]]; then
  CKPT="$OUT_DIR/random_hd64"
  "$PY" - "$CKPT" <<'PYEOF'
import sys
from pathlib import Path

import torch

from lmforge.hf import export_hf
from lmforge.model import ModelConfig, build_model
from lmforge.tokenizer import Tokenizer, train_tokenizer

out = Path(sys.argv[1])
if Path("artifacts/tokenizer/default/tokenizer.json").is_file():
    tokenizer = Tokenizer.load("artifacts/tokenizer/default")
else:
    import pydoc_data.topics
    tokenizer = train_tokenizer(list(pydoc_data.topics.topics.values()), vocab_size=4096, show_progress=False)
torch.manual_seed(0)
# d_model / ffn_dim multiples of 128 (W4A16 group 128, Marlin tiles); head_dim 64.
cfg = ModelConfig(vocab_size=tokenizer.vocab_size, d_model=512, n_layers=4, n_heads=8, n_kv_heads=4,
                  ffn_dim=1536, max_seq_len=2048, name="gpu-check-hd64")
export_hf(build_model(cfg, device="cpu"), out, tokenizer, dtype=torch.float32,
          manifest={"parent": "random init (scripts/gpu_check.sh)"})
print(f"random-init checkpoint at {out}")
PYEOF
fi

# 2. Exports: dense bf16 and each compressed-tensors scheme.
EXPORTS=()
for quant in $QUANTS; do
  "$PY" -m serving.export ckpt="$CKPT" quant="$quant" out="$OUT_DIR/export/$quant" report=false \
      gate=skip gate_reason=gpu_check_random_init
  EXPORTS+=("$OUT_DIR/export/$quant")
done

# 3. SGLang on each export.
"$PY" -m serving.sglang_check --sglang-python "$SGLANG_PYTHON" --out "$OUT_DIR" "${EXPORTS[@]}" \
  | tee "$OUT_DIR/sglang_check.txt"

# 4. lm-eval on the bf16 export: GSM8K from ../shared/benchmarks (or $GSM8K_JSONL), first through lm-eval's
#    `local-completions` model against the SGLang server, then through lm-eval's `sglang` model
#    (docs/serving.md, Deploy on SGLang).
GSM8K_JSONL=${GSM8K_JSONL:-$(cd .. && pwd)/shared/benchmarks/gsm8k/test.jsonl}
if [[ -f "$GSM8K_JSONL" ]]; then
  mkdir -p "$OUT_DIR/lmeval_tasks"
  cat > "$OUT_DIR/lmeval_tasks/gsm8k_local.yaml" <<YAML
task: gsm8k_local
dataset_path: json
dataset_kwargs: {data_files: {test: "$GSM8K_JSONL"}}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{question}}\nAnswer:"
doc_to_target: "{{answer.split('####')[-1].strip()}}"
generation_kwargs: {until: ["Question:", "\n\n"], do_sample: false, max_gen_toks: 64}
metric_list: [{metric: exact_match, aggregation: mean, higher_is_better: true}]
YAML
  BF16="$OUT_DIR/export/none"
  "$SGLANG_PYTHON" -m sglang.launch_server --model-path "$BF16" --port 30001 --host 127.0.0.1 \
      > "$OUT_DIR/sglang_lmeval.log" 2>&1 &
  SGL_PID=$!
  for _ in $(seq 1 180); do curl -sf http://127.0.0.1:30001/health >/dev/null && break; sleep 1; done
  "$PY" -m lm_eval --model local-completions --tasks gsm8k_local --include_path "$OUT_DIR/lmeval_tasks" \
      --model_args "model=$BF16,base_url=http://127.0.0.1:30001/v1/completions,tokenizer_backend=huggingface,tokenizer=$BF16,num_concurrent=16" \
      --limit 50 --output_path "$OUT_DIR/lmeval" 2>&1 | tee "$OUT_DIR/lmeval.txt" || echo "lm-eval failed (see $OUT_DIR/lmeval.txt)"
  kill "$SGL_PID" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$SGL_PID" 2>/dev/null || break; sleep 1; done  # frees its GPU memory
  # lm-eval's own `sglang` model: SGLang's offline Engine inside lm-eval's process, so lm-eval is
  # installed into the SGLang venv (its torch stays SGLang's).
  "$SGLANG_PYTHON" -m pip install --quiet "lm-eval==0.4.13"
  "$SGLANG_PYTHON" -m lm_eval --model sglang --tasks gsm8k_local --include_path "$OUT_DIR/lmeval_tasks" \
      --model_args "pretrained=$BF16,dtype=auto,tp_size=1,mem_fraction_static=0.5" \
      --limit 50 --output_path "$OUT_DIR/lmeval_sglang" 2>&1 | tee "$OUT_DIR/lmeval_sglang.txt" \
      || echo "lm-eval --model sglang failed (see $OUT_DIR/lmeval_sglang.txt)"
fi

# 5. Training on the GPU: bf16 1B pre-training under FSDP2 on one device, tokens/s and MFU.
OUT_DIR="$OUT_DIR" PY="$PY" bash scripts/gpu_check_train.sh
