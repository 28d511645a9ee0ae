#!/usr/bin/env bash
# GPU training check (one device, a few minutes): bf16 pre-training of the ~1B shape (Llama-3.2-1B)
# under FSDP2 on one device, with MFU measured against the H100/H200 bf16 dense peak.
# Called by scripts/gpu_check.sh; needs the project .venv with a CUDA build of torch 2.13
# (`pip install torch==2.13.0` from the CUDA index on the GPU machine) and the default data.
# Writes $OUT_DIR/train_check.txt with tokens/s and MFU per logged step.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT_DIR:-runs/gpu_check}
PEAK=${PEAK_FLOPS:-989e12}   # H100/H200 SXM bf16 dense
STEPS=${STEPS:-40}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT_DIR"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT_DIR/gpu.txt"

# Tokenizer + shards of the embedded default corpus at seq 2048 (built on first use).
"$PY" src/train.py model=1b model.max_seq_len=2048 trainer=gpu strategy=fsdp precision=bf16-true \
    module.activation_checkpointing=true data.batch_size=8 trainer.max_steps="$STEPS" \
    trainer.val_check_interval="$STEPS" trainer.limit_val_batches=2 trainer.log_every_n_steps=5 \
    peak_flops_per_second="$PEAK" logger=csv hydra.run.dir="$OUT_DIR/pretrain_1b" \
    callbacks.progress_bar.refresh_rate=10 2>&1 | tee "$OUT_DIR/pretrain_1b.log"

# Compiled: compile=true (each decoder block torch.compiled, then FSDP2-wrapped), no activation
# checkpointing (its recompute is not in the 6N FLOPs MFU counts; 1B at batch 8 x 2048 fits in
# 141 GB without it). MFU target on one H200: >= 0.50. ~2 min of compile, then STEPS steps.
"$PY" src/train.py model=1b model.max_seq_len=2048 trainer=gpu strategy=fsdp precision=bf16-true \
    compile=true module.activation_checkpointing=false data.batch_size=8 trainer.max_steps="$STEPS" \
    trainer.val_check_interval="$STEPS" trainer.limit_val_batches=2 trainer.log_every_n_steps=5 \
    peak_flops_per_second="$PEAK" logger=csv hydra.run.dir="$OUT_DIR/pretrain_1b_compiled" \
    callbacks.progress_bar.refresh_rate=10 2>&1 | tee "$OUT_DIR/pretrain_1b_compiled.log"

"$PY" scripts/train_check_report.py --target-mfu 0.5 eager="$OUT_DIR/pretrain_1b" \
    compiled="$OUT_DIR/pretrain_1b_compiled" | tee "$OUT_DIR/train_check.txt"
