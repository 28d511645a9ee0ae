#!/usr/bin/env bash
# The README's main command: set up .venv (idempotent), then run the end-to-end job.
# Extra arguments are conf/e2e.yaml overrides (e.g. bash scripts/e2e.sh steps.pretrain=100).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export WANDB_MODE=${WANDB_MODE:-offline} TOKENIZERS_PARALLELISM=false
exec .venv/bin/python scripts/pipeline.py "$@"
