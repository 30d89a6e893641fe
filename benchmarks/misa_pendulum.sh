#!/usr/bin/env bash
# Offline RL on a small CPU budget: MISA, MISA-biased, CQL and BC on a "mixed" Pendulum-v1 dataset made
# without network (60% episodes of the hand-written controller with Gaussian action noise 0.5 half-widths,
# 40% uniform-random episodes), $NUM_SEEDS vmapped seeds each, one variant after another, then the
# curves (docs/pendulum-mixed.png) and the tables of the last evaluation and of the mean of the last three.
#
#   bash benchmarks/misa_pendulum.sh 2>&1 | tee /tmp/misa_pendulum.log
#   VARIANTS="misa bc" bash benchmarks/misa_pendulum.sh    # some variants only (e.g. two at a time on two cores)
#   VARIANTS= bash benchmarks/misa_pendulum.sh             # only redraw the curves and tables of the latest runs
#
# Normalized score: the dataset's refs, 0 = uniform random policy, 100 = the noiseless controller.
# Budgets are far below the paper's (hidden 256, batch 256, 50 action / 50 HMC samples, 1.2M steps); every
# variant uses the same reduced flags below. Each run's full output goes to $LOG_DIR/misa_pendulum_<variant>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
DATASET=${DATASET:-data/pendulum-mixed.hdf5}
TOTAL_STEPS=${TOTAL_STEPS:-40000}
NUM_SEEDS=${NUM_SEEDS:-5}
EVAL_EPISODES=${EVAL_EPISODES:-20}
VARIANTS=${VARIANTS-misa misa-biased cql bc}
LOG_DIR=${LOG_DIR:-/tmp}

if [[ ! -f "$DATASET" ]]; then
    "$PYTHON" -m common.make_dataset --env-id Pendulum-v1 --policy benchmarks.pendulum_controller:act \
        --noise-std 0.5 --random-fraction 0.4 --num-steps 50000 --output "$DATASET" --seed 0
fi

# the behaviour data's own score: mean return of its whole episodes, normalized with the file's refs
DATA_SCORE=$("$PYTHON" - "$DATASET" <<'EOF'
import sys

import h5py
import numpy as np

with h5py.File(sys.argv[1], "r") as f:
    ends = np.flatnonzero(f["terminals"][:] | f["timeouts"][:])  # last step of each whole episode
    rewards = f["rewards"][: ends[-1] + 1]  # a partial final episode is left out
    lo, hi = float(f.attrs["ref_min_score"]), float(f.attrs["ref_max_score"])
returns = np.add.reduceat(rewards, np.r_[0, ends[:-1] + 1])
score = 100 * (returns.mean() - lo) / (hi - lo)
print(f"behaviour data {sys.argv[1]}: {len(ends)} episodes, mean return {returns.mean():.1f}, "
      f"normalized {score:.1f} (ref_min {lo:.1f}, ref_max {hi:.1f})", file=sys.stderr)
print(f"{score:.1f}")
EOF
)

FLAGS=(
    --env-id Pendulum-v1 --dataset-path "$DATASET"
    --hidden-size 64 --batch-size 128 --num-action-samples 10 --hmc-samples 10 --hmc-burn-in 5
    --total-steps "$TOTAL_STEPS" --eval-interval $((TOTAL_STEPS / 10)) --log-interval 1000
    --eval-episodes "$EVAL_EPISODES" --num-seeds "$NUM_SEEDS"
)
echo "flags: ${FLAGS[*]}"

for variant in $VARIANTS; do
    log="$LOG_DIR/misa_pendulum_$variant.log"
    start=$SECONDS
    "$PYTHON" misa_d4rl.py "${FLAGS[@]}" --variant "$variant" --exp-name "pendulum_$variant" >"$log" 2>&1 || {
        status=$?
        echo "$variant FAILED (exit $status) after $((SECONDS - start)) s; last lines of $log:"
        tail -n 20 "$log" | tr '\r' '\n' | tail -n 20
        exit "$status"
    }
    tr '\r' '\n' <"$log" | grep -E ": $variant last " || echo "$variant: no summary line in $log"
    echo "$variant wall time $((SECONDS - start)) s"
done

# every variant's latest run (this script's, or an earlier one's for variants not run now)
runs=()
labels=()
for variant in misa misa-biased cql bc; do
    latest=$(ls -d runs/Pendulum-v1__pendulum_"$variant"__* 2>/dev/null | tail -n 1 || true)
    if [[ -n "$latest" ]]; then
        runs+=("$latest")
        labels+=("$variant")
    fi
done
for last in 1 3; do
    "$PYTHON" -m common.plot "${runs[@]}" --labels "${labels[@]}" --final-last "$last" \
        --tag eval/normalized_score --final-tag eval/normalized_score --xlabel "gradient steps (per seed)" \
        --baseline "$DATA_SCORE" --baseline-label "behaviour data" \
        --title "Pendulum-v1, mixed dataset" --out docs/pendulum-mixed.png
done
