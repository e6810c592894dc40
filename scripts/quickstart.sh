#!/usr/bin/env bash
# The main job, from a fresh clone: sets up .venv if it is missing (scripts/setup.sh), then
# WordPiece tokenizer -> prepared shards -> bert-mini MLM+NSP pre-training for an 8-minute
# wall-clock budget -> HuggingFace export. Runs from any directory; DATA, OUT, RUN and VENV may be
# overridden (relative paths are taken from the repository root). Extra arguments are key=value
# overrides for pretrain, e.g. `bash scripts/quickstart.sh schedule.time_budget_minutes=2`.
# Re-running it replaces the previous quickstart run (--overwrite).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/wikitext-2}
OUT=${OUT:-runs/quickstart-data}
RUN=${RUN:-runs/quickstart}
VENV=${VENV:-.venv}

if ! "$VENV/bin/python" -c "import lmforge" >/dev/null 2>&1; then
    bash scripts/setup.sh "$VENV"
fi
lmforge="$VENV/bin/lmforge"

"$lmforge" tokenizer train --kind wordpiece --family bert --vocab-size 8000 \
    --corpus "$DATA/wiki.train.tokens" --out "$OUT/tokenizer"
"$lmforge" prepare --tokenizer "$OUT/tokenizer" --input "$DATA/wiki.train.tokens" \
    --valid "$DATA/wiki.valid.tokens" --out "$OUT/prepared" --format bert
"$lmforge" pretrain --config quickstart --overwrite run_dir="$RUN" \
    data.prepared_dir="$OUT/prepared" "$@"
"$lmforge" convert --to-hf "$RUN/final" --out "$RUN/hf"
