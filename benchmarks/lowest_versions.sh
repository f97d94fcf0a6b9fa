#!/usr/bin/env bash
# The oldest dependencies pyproject.toml allows, installed and tested: torch 2.4.0 (README: "any torch >= 2.4")
# and the lowest allowed release of every other direct dependency of `.[dev,all]` (uv's --resolution
# lowest-direct; what those need resolves to its newest, as it would for a user today). The trackers' extras
# (mlflow, wandb) are left out, and their tests skip, unless TRACKERS=1: then MLflow 2.10 comes with SQLAlchemy
# < 2.1, which its SQL store (the test's `mlflow server`) predates.
#
#   bash benchmarks/lowest_versions.sh                   # the quick loop
#   bash benchmarks/lowest_versions.sh -m slow tests/test_after_training.py    # any pytest arguments
#   TRACKERS=1 bash benchmarks/lowest_versions.sh tests/test_trackers.py      # MLflow and W&B too
#
# The environment is kept in $LOWEST_VENV (default: $TMPDIR/resnet-cli-lowest; about 5 GB, torch 2.4.0 from PyPI
# with its CUDA libraries) and reused; delete it to start over. Needs PyPI (uv is installed into it from there).
# What it found, and when it last passed: CONTRIBUTING.md.
set -eu
cd "$(dirname "$0")/.."
venv=${LOWEST_VENV:-${TMPDIR:-/tmp}/resnet-cli-lowest}
[ -x "$venv/bin/python" ] || ${PYTHON:-python3} -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check uv
extras=dev,all
extra_reqs=()
if [ "${TRACKERS:-0}" = 1 ]; then extras=dev,all,mlflow,wandb; extra_reqs=("sqlalchemy<2.1"); fi
"$venv/bin/python" -m uv pip install -q --python "$venv/bin/python" --resolution lowest-direct "torch==2.4.0" \
    -e ".[$extras]" ${extra_reqs[@]+"${extra_reqs[@]}"}
"$venv/bin/python" -m uv pip list --python "$venv/bin/python" 2>/dev/null \
    | grep -i -E "^(torch|typer|rich|fvcore|pyyaml|matplotlib|pillow|onnx|onnxscript|onnxruntime|tensorboard|webdataset|safetensors|huggingface-hub|pytest|pytest-xdist|numpy|mlflow|wandb|sqlalchemy) " || true
[ $# -gt 0 ] || set -- -m "not slow"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning "$@"
