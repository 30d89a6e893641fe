#!/usr/bin/env bash
# Atari learning runs for docs/results.md (a GPU job): mirl and dqn on Breakout and Pong, seeds vmapped in
# one envpool each, then the curves and the final-score table with common.plot.
#   bash benchmarks/atari_learning.sh [STEPS] [SEEDS]     # defaults: 10M steps (CleanRL's budget), 4 seeds
# 4 seeds × 1M-transition replay need 28 GB of device memory.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-10000000}
seeds=${2:-4}
for env_id in Breakout-v5 Pong-v5; do
  for algo in dqn mirl; do
    python mirl_atari.py --env-id "$env_id" --algo "$algo" --exp-name "$algo" --num-seeds "$seeds" --total-timesteps "$steps"
  done
  python -m common.plot "$(ls -d runs/"$env_id"__dqn__* | tail -n 1)" "$(ls -d runs/"$env_id"__mirl__* | tail -n 1)" \
    --out "docs/${env_id}.png" --title "$env_id, $steps steps per seed"
done
