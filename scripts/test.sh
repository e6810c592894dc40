#!/usr/bin/env bash
# The tests, from a fresh clone: sets up .venv if it is missing (scripts/setup.sh), then runs
# pytest. Extra arguments go to pytest (e.g. `bash scripts/test.sh -x tests/test_prepare.py`).
# The shared data is read from $LMFORGE_DATA (default: ../shared/data beside the clone); without
# it the data tests skip (under CI=true they fail).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export LMFORGE_DATA="${LMFORGE_DATA:-$(cd .. && pwd)/shared/data}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# a venv of this very checkout with the test extras; anything else is (re)built
if ! "$VENV/bin/python" -c "import lmforge, pytest, transformers, sys; from pathlib import Path; \
sys.exit(Path(lmforge.__file__).resolve().parents[1] != Path.cwd().resolve())" >/dev/null 2>&1; then
    bash scripts/setup.sh "$VENV"
fi
exec "$VENV/bin/python" -m pytest -q "$@"
