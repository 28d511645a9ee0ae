#!/usr/bin/env bash
# The README's test command: set up .venv (idempotent), then run the whole suite, slow tests
# included. Extra arguments go to pytest (e.g. bash scripts/test.sh -m "not slow" -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The engines' own environments (.venv-sglang, .venv-vllm) for tests/serving/test_engine_*.py.
bash scripts/setup_engines.sh
export WANDB_MODE=offline HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Fast static checks first: the layer contract (pyproject.toml [tool.importlinter]) and ruff.
.venv/bin/lint-imports --no-cache >/dev/null || { .venv/bin/lint-imports --no-cache | tail -n 30; exit 1; }
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
exec .venv/bin/python -m pytest -q -p no:cacheprovider --timeout=900 "$@"
