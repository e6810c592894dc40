#!/usr/bin/env bash
# Multi30k translation with the original Transformer, end to end, in one command:
#   bash scripts/multi30k.sh SRC TGT OUT_DIR [key=value ...]      e.g.  de en runs/m30k
# joint byte-level BPE on both training sides (Vaswani et al. §5.1) -> parallel shards -> training with
# configs/transformer.yaml for MINUTES of wall clock -> the average of the last AVERAGE checkpoints
# (§6.1) in OUT_DIR/final -> beam-4 (alpha 0.6) test_2016_flickr sacreBLEU/chrF, printed and written to
# OUT_DIR/test.json. Extra arguments are `lmforge pretrain` overrides (e.g. model.preset=transformer-base).
# Environment: DATA (multi30k folder), MINUTES (55), VOCAB (8000), AVERAGE (5), PYTHON (the venv's).
# Re-running replaces OUT_DIR's run (--overwrite).
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: bash scripts/multi30k.sh SRC TGT OUT_DIR [key=value ...]   (SRC/TGT: de, en, fr, cs)" >&2
    exit 2
fi
SRC=$1 TGT=$2 OUT=$3
shift 3
MINUTES=${MINUTES:-55}
VOCAB=${VOCAB:-8000}
AVERAGE=${AVERAGE:-5}
. "$(dirname "$0")/multi30k_env.sh"
need_multi30k multi30k.sh "$SRC" "$TGT"
began=$(date +%s)

lmforge tokenizer train --kind bpe --family marian --vocab-size "$VOCAB" \
    --corpus "$DATA/train.$SRC.gz" "$DATA/train.$TGT.gz" --out "$OUT/tokenizer"
lmforge prepare --format parallel --tokenizer "$OUT/tokenizer" --quiet \
    --input "$DATA/train.$SRC.gz" "$DATA/train.$TGT.gz" --valid "$DATA/val.$SRC.gz" "$DATA/val.$TGT.gz" \
    --out "$OUT/prepared"
lmforge pretrain --config transformer --overwrite run_dir="$OUT/run" data.prepared_dir="$OUT/prepared" \
    schedule.time_budget_minutes="$MINUTES" system.progress_bar=false "$@"
trained=$(date +%s)

kept=$(find "$OUT/run/checkpoints" -maxdepth 1 -name 'step-*' | wc -l)
count=$(( kept < AVERAGE ? kept : AVERAGE ))
rm -rf "$OUT/final"
if [ "$count" -gt 1 ]; then
    lmforge average --run "$OUT/run" --last "$count" --out "$OUT/final"
else
    cp -r "$OUT/run/final" "$OUT/final"
fi
lmforge evaluate --task translation --model "$OUT/final" --no-progress \
    --source "$DATA/test_2016_flickr.$SRC.gz" --reference "$DATA/test_2016_flickr.$TGT.gz" \
    --hypotheses "$OUT/test.hyp.$TGT" --out "$OUT/test.json" >/dev/null
"$PYTHON" - "$OUT" "$SRC" "$TGT" "$count" $(( (trained - began) / 60 )) $(( ($(date +%s) - began) / 60 )) <<'PY'
import json, sys
from lmforge.models.task_model import load_model
out, src, tgt, averaged, train_min, total_min = sys.argv[1:]
r = json.load(open(f"{out}/test.json"))
params = sum(p.numel() for p in load_model(f"{out}/final").parameters()) / 1e6
print(f"multi30k {src}->{tgt} test_2016_flickr: BLEU {r['bleu']} chrF {r['chrf']} ({r['sentences']} sentences, "
      f"beam {r['num_beams']}, alpha {r['length_penalty']}); {params:.2f}M parameters, average of {averaged} "
      f"checkpoints; {train_min} min to train, {total_min} min in all\nBLEU signature {r['bleu_signature']}")
PY
