#!/usr/bin/env bash
# One-command setup for a fresh machine: a virtual environment with lmforge and its test extras.
#   bash scripts/setup.sh            -> .venv
#   bash scripts/setup.sh DIR        -> DIR
# torch is pinned to 2.13.0 first: on these machines that is a local CPU build (any other version
# downloads gigabytes of CUDA wheels). lmforge itself accepts torch >= 2.5.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "torch==2.13.0"
"$venv/bin/python" -m pip install -q -e ".[test]"
echo "lmforge installed in $venv: activate with '. $venv/bin/activate'"
