# Sourced by the Multi30k pipelines (multi30k.sh, t5_multi30k.sh), not run: the repository, the data
# folder, the Python and `lmforge` they call, and a check that the corpus files they read are there.
# Environment: DATA (multi30k folder; default ../shared/data/multi30k), PYTHON (default the venv's).
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${DATA:-$REPO/../shared/data/multi30k}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
lmforge() { "$PYTHON" -m lmforge "$@"; }

# need_multi30k SCRIPT LANG...: train, val and test_2016_flickr of each language, or exit 2 naming the file
need_multi30k() {
    local script=$1 lang split
    shift
    for lang in "$@"; do
        for split in train val test_2016_flickr; do
            [ -f "$DATA/$split.$lang.gz" ] || { echo "$script: $DATA/$split.$lang.gz not found (set DATA)" >&2; exit 2; }
        done
    done
}
