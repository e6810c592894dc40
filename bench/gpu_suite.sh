#!/usr/bin/env bash
# The GPU benchmark suite in one run, sized for a short lease of one GPU (an H200: ~5 minutes of
# running). bf16 training tokens/s and MFU, lmforge vs transformers (bench/bench_gpu.py):
#   1. BERT-base MLM seq 128 batch 128, eager        2. GPT-2 124M CLM seq 1024 batch 16, eager
#   3. GPT-2 124M CLM, torch.compile on both sides   4. BERT-base MLM compiled, if the time left allows
# Each part runs under a hard `timeout` cut from one total budget, so a slow compile costs its own
# row only; every line printed also goes to LOG, and the table at the end is bench/gpu_table.py's.
#
#   bash bench/gpu_suite.sh LOG                         # from anywhere; sets PYTHONPATH to this checkout
#   SUITE_SMOKE=1 SUITE_BUDGET=1500 bash bench/gpu_suite.sh /tmp/log   # the same script on CPU, tiny models
# On the lent GPU machine (the device tool's run, from the repository root, wheels in .whl/):
#   command "bash bench/gpu_suite.sh $OUT/gpu_suite.log", carry [".whl"], timeout_s 420
# Environment: PYTHON (default python3), SUITE_BUDGET (seconds for all parts, default 300),
# SUITE_SMOKE=1 (CPU, bert-tiny / gpt2-mini, 2 timed steps, 4x longer part timeouts: give it
# SUITE_BUDGET=1500). Missing Python packages (omegaconf on
# the lent GPU machine) are installed from wheels in .whl/ when that folder is there.
set -u -o pipefail
LOG=${1:?usage: bash bench/gpu_suite.sh LOG}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
PY=${PYTHON:-python3}
BUDGET=${SUITE_BUDGET:-300}
SMOKE=${SUITE_SMOKE:-0}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$(dirname "$LOG")" && : > "$LOG" || exit 1

say() { echo "$*" | tee -a "$LOG"; }

# what lmforge and the peer import; install only what is missing, from the carried wheels
missing() {
    "$PY" -c 'import importlib.util as u, sys
need = ("torch", "transformers", "safetensors", "tokenizers", "numpy", "tqdm", "yaml", "omegaconf")
print(" ".join(n for n in need if u.find_spec(n) is None))'
}
lacking=$(missing) || { say "suite: $PY does not run"; exit 1; }
if [ -n "$lacking" ] && compgen -G ".whl/*.whl" > /dev/null; then
    say "suite: missing [$lacking]: installing .whl/*.whl into /tmp/lmforge-site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/lmforge-site .whl/*.whl 2>&1 | tee -a "$LOG"
    export PYTHONPATH="$ROOT:/tmp/lmforge-site${PYTHONPATH#"$ROOT"}"
    lacking=$(missing)
fi
if [ -n "$lacking" ]; then
    say "suite: missing Python packages [$lacking] and no wheels for them in $ROOT/.whl"
    exit 1
fi
"$PY" -c 'import sys, torch, transformers
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA"
print(f"suite: python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, {gpu}")' \
    2>&1 | tee -a "$LOG"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader \
    2>&1 | tee -a "$LOG"

SCALE=1  # CPU smoke runs compile on a few cores: their caps are SCALE times longer
if [ "$SMOKE" = 1 ]; then
    SCALE=4
    COMMON=(--device cpu --dtype bfloat16 --steps 2 --warmup 1)
    MLM=(--objective mlm --preset bert-tiny --seq 32 --batch 2)
    CLM=(--objective clm --preset gpt2-mini --seq 64 --batch 2)
else
    COMMON=(--dtype bfloat16)
    MLM=(--objective mlm --steps 50)  # bert-base-uncased, seq 128, batch 128
    CLM=(--objective clm --steps 30)  # gpt2 (124M), seq 1024, batch 16
fi

START=$SECONDS
FAILED=0
# part NAME CAP_SECONDS MIN_SECONDS ARGS...: runs when at least MIN_SECONDS of the budget are left
part() {
    local name=$1 cap=$2 least=$3
    shift 3
    local left=$((BUDGET - (SECONDS - START)))
    if [ "$left" -lt "$least" ]; then
        say "== $name: skipped, ${left}s of the ${BUDGET}s budget left"
        return
    fi
    cap=$((cap * SCALE))
    local limit=$((cap < left ? cap : left))
    say "== $name (timeout ${limit}s): bench/bench_gpu.py $*"
    timeout -k 10 "$limit" "$PY" bench/bench_gpu.py "$@" 2>&1 | grep -v -E '^\s*$' | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        FAILED=1
        say "== $name: stopped at its ${limit}s timeout"
    elif [ "$rc" -ne 0 ]; then
        FAILED=1
        say "== $name: exit status $rc"
    fi
    say "== $name: $((SECONDS - START))s into the suite"
}

part "BERT-base MLM eager" 90 30 "${COMMON[@]}" "${MLM[@]}"
part "GPT-2 CLM eager" 90 30 "${COMMON[@]}" "${CLM[@]}"
part "GPT-2 CLM compiled" 160 60 "${COMMON[@]}" "${CLM[@]}" --compile
part "BERT-base MLM compiled" 150 60 "${COMMON[@]}" "${MLM[@]}" --compile

say ""
say "suite: $((SECONDS - START))s of running; table (bench/gpu_table.py $LOG):"
table=$("$PY" bench/gpu_table.py "$LOG" 2>&1)
say "$table"
exit $FAILED
