#!/bin/bash
# Every results table of the README, on the shipped default, into one folder (resumable: each
# step skips what its folder already holds):
#   t2_ours.csv, t2_literal.csv   Table 2 (our settings, sigma 0.3/1.0/2.0; the paper's as printed, sigma 0.3)
#   t2_u_<direction>.csv          the choice of u (auto, local, local+: LO + direction, 8 references, sigma 0.3)
#   aug/<disease>_s<sigma>        the augmentation sets (100 samples each: boxes varied per reference,
#                                 points spread, labels checked by the oracle; sigma 2.0 and 3.0; u "kind",
#                                 the class direction toward the disease, which the DRR default needs: no PC
#                                 of it grows the heart, README "On the DRR default")
#   cls/                          Tables 3 and 4 from those sets (the 20-per-class block, 8 seeds)
#
#   benchmarks/readme_results.sh OUT [DEVICE] [WORKERS]
#
# DEVICE (auto, cpu, cuda) runs the trajectories; WORKERS local Dask processes train the
# classifiers. On the 2-core CPU box this is a day of work; on one GPU with 16 cores, minutes.
# CXR (default: cxr-workbench) and PY (default: python) name the commands; SEEDS (20), SAMPLES
# (100), MAX_STEPS (the settings' cap), DIRECTIONS (auto local local+), SET_SIGMAS (2.0 3.0), SET_ARGS
# (the sets' augment options), SET_U (kind; the sets' u: auto for an unconditional generator) and
# CLS_ARGS (the classify options) shrink or change it.
set -euo pipefail
OUT=${1:?usage: benchmarks/readme_results.sh OUT [DEVICE] [WORKERS]}
DEVICE=${2:-auto}
WORKERS=${3:-2}
CXR=${CXR:-cxr-workbench}
PY=${PY:-python}
SEEDS=${SEEDS:-20}
SAMPLES=${SAMPLES:-100}
CAP=${MAX_STEPS:+--max-steps $MAX_STEPS}
HERE=$(dirname "$0")
mkdir -p "$OUT/aug"

table() {  # name, then method_table.py options
  local name=$1; shift
  $PY "$HERE/method_table.py" --device "$DEVICE" --csv "$OUT/$name.csv" $CAP "$@" > "$OUT/$name.log" 2>&1
}

# The trajectories: independent sweeps side by side (a 64 px generator leaves a GPU idle).
pids=()
table t2_ours --seeds "$SEEDS" --sigmas 0.3,1.0,2.0 & pids+=($!)
table t2_literal --seeds "$SEEDS" --settings literal --sigmas 0.3 & pids+=($!)
for d in ${DIRECTIONS:-auto local local+}; do  # u for the 8-reference comparison
  table "t2_u_${d/+/plus}" --direction "$d" --methods lo+dir --seeds $((SEEDS < 8 ? SEEDS : 8)) --sigmas 0.3 & pids+=($!)
done
SET_SIGMAS=${SET_SIGMAS:-2.0 3.0}
sets=()
for sigma in $SET_SIGMAS; do
  for disease in cardiomegaly opacity; do
    $CXR augment --disease $disease --direction "${SET_U:-kind}" --samples "$SAMPLES" --sigma $sigma --batch 25 --device "$DEVICE" $CAP --no-progress \
      ${SET_ARGS:---keep-last 2 --points spread --vary-box --verify} --out "$OUT/aug/${disease}_s$sigma" >> "$OUT/aug.log" 2>&1
    sets+=("$OUT/aug/${disease}_s$sigma")
  done
done
$CXR classify --sets "${sets[@]}" --sigmas $SET_SIGMAS --workers "$WORKERS" --no-progress \
  ${CLS_ARGS:---n-disease 20 --seeds 8} --out "$OUT/cls" > "$OUT/cls.log" 2>&1
for pid in "${pids[@]}"; do wait "$pid" || { echo "a Table 2 sweep failed; see $OUT/t2_*.log" >&2; exit 1; }; done
echo "done: $OUT"
