#!/usr/bin/env bash
# Multi30k De->En as text to text with a T5 (issue 12), beside scripts/multi30k.sh's Transformer:
#   bash scripts/t5_multi30k.sh OUT_DIR [finetune flags ...]     e.g.  runs/t5-m30k --epochs 8
# a T5 Unigram tokenizer on both training sides (`</s>` appended, 100 sentinels) -> a randomly
# initialised t5-mini with that vocabulary (no released T5 weights are available offline, and the
# Transformer it is compared with starts from random weights too) -> `lmforge finetune --task multi30k`
# ("translate German to English: ..." -> English, dev = val scored by greedy sacreBLEU, best epoch kept)
# -> test_2016_flickr sacreBLEU/chrF, greedy (as finetune scores) and beam 4 / alpha 0.6 (as the
# Transformer is scored), written to OUT_DIR/test_{greedy,beam4}.json.
# Environment: DATA (multi30k folder), VOCAB (8000), PRESET (t5-mini), PYTHON (the venv's).
set -euo pipefail
if [ $# -lt 1 ]; then
    echo "usage: bash scripts/t5_multi30k.sh OUT_DIR [lmforge finetune flags ...]" >&2
    exit 2
fi
OUT=$1
shift
VOCAB=${VOCAB:-8000}
PRESET=${PRESET:-t5-mini}
. "$(dirname "$0")/multi30k_env.sh"
need_multi30k t5_multi30k.sh de en
began=$(date +%s)

lmforge tokenizer train --kind unigram --family t5 --vocab-size "$VOCAB" \
    --corpus "$DATA/train.de.gz" "$DATA/train.en.gz" --out "$OUT/tokenizer"
"$PYTHON" - "$OUT" "$PRESET" <<'PY'
import sys
import torch
from lmforge.config import ModelConfig
from lmforge.models import TaskModel, save_model
from lmforge.tasks.text import load_task_tokenizer
out, preset = sys.argv[1:]
tokenizer = load_task_tokenizer(f"{out}/tokenizer")
config = ModelConfig.from_name(preset, vocab_size=tokenizer.get_vocab_size(), pad_token_id=0)
torch.manual_seed(0)
save_model(TaskModel(config, {}), f"{out}/init", tokenizer)  # the preset's own init (T5: fan-in normal)
PY
lmforge finetune --task multi30k --model "$OUT/init" --data "$DATA" --out "$OUT/run" --overwrite --no-progress "$@"
trained=$(date +%s)

lmforge evaluate --model "$OUT/run" --data "$DATA" --split test --no-progress --out "$OUT/test_greedy.json" >/dev/null
"$PYTHON" - "$DATA/test_2016_flickr.de.gz" "$OUT/test.prefixed.de" <<'PY'
import gzip, sys
with gzip.open(sys.argv[1], "rt", encoding="utf-8") as src, open(sys.argv[2], "w", encoding="utf-8") as dst:
    dst.writelines(f"translate German to English: {line.strip()}\n" for line in src)  # the task's prefix
PY
lmforge evaluate --task translation --model "$OUT/run" --source "$OUT/test.prefixed.de" \
    --reference "$DATA/test_2016_flickr.en.gz" --hypotheses "$OUT/test.hyp.en" --no-progress \
    --out "$OUT/test_beam4.json" >/dev/null
"$PYTHON" - "$OUT" $(( (trained - began) / 60 )) $(( ($(date +%s) - began) / 60 )) <<'PY'
import json, sys
from lmforge.models.task_model import load_model
out, train_min, total_min = sys.argv[1:]
greedy, beam = (json.load(open(f"{out}/test_{name}.json")) for name in ("greedy", "beam4"))
params = sum(p.numel() for p in load_model(f"{out}/init").parameters()) / 1e6
print(f"t5 multi30k de->en test_2016_flickr: BLEU {beam['bleu']} chrF {beam['chrf']} (beam {beam['num_beams']}, "
      f"alpha {beam['length_penalty']}), greedy BLEU {greedy.get('bleu')}; {params:.2f}M parameters; "
      f"{train_min} min to fine-tune, {total_min} min in all\nBLEU signature {beam['bleu_signature']}")
PY
