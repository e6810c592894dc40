#!/usr/bin/env bash
# Quickstart: WordPiece tokenizer -> prepared shards -> bert-mini MLM+NSP pre-training (~10 min on
# 2 CPU cores) -> HuggingFace export. Run from the repo root; DATA and OUT may be overridden.
set -euo pipefail
DATA=${DATA:-../shared/data/wikitext-2}
OUT=${OUT:-runs/quickstart-data}
RUN=${RUN:-runs/quickstart}
shift_args=("$@")  # extra key=value overrides for pretrain, e.g. schedule.time_budget_minutes=2

lmforge tokenizer train --kind wordpiece --family bert --vocab-size 8000 \
    --corpus "$DATA/wiki.train.tokens" --out "$OUT/tokenizer"
lmforge prepare --tokenizer "$OUT/tokenizer" --input "$DATA/wiki.train.tokens" \
    --valid "$DATA/wiki.valid.tokens" --out "$OUT/prepared" --format bert
lmforge pretrain --config configs/quickstart.yaml run_dir="$RUN" \
    data.prepared_dir="$OUT/prepared" data.tokenizer_dir="$OUT/tokenizer" "${shift_args[@]}"
lmforge convert --to-hf "$RUN/final" --out "$RUN/hf"
