#!/usr/bin/env bash
# LiteLLM's proxy for bench/run.py, in a venv of its own (never imagegate's: litellm[proxy]
# pins its own versions of much that imagegate uses). Prints the `litellm` command to put
# in IMAGEGATE_BENCH_LITELLM; bench/run.py also finds it at bench/.litellm-venv by default.
#
#     bash bench/litellm_venv.sh [VENV_DIR]
set -euo pipefail
LITELLM_VERSION=1.108.5  # pinned: the bench compares against this exact release (later
# releases' proxy extras need packages this index does not carry yet)
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-$here/.litellm-venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/litellm" ] || ! "$venv/bin/pip" show litellm 2>/dev/null | grep -qx "Version: $LITELLM_VERSION"; then
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION"
fi
echo "$venv/bin/litellm"
