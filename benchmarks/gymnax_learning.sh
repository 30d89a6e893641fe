#!/usr/bin/env bash
# The learning results in docs/results.md: mirl, sql and dqn with vmapped seeds, then the plots and tables.
#   bash benchmarks/gymnax_learning.sh [CartPole-v1|Acrobot-v1|Breakout-MinAtar ...]
# On a 2-core CPU: about 8 minutes per algo on CartPole-v1 (30 seeds), 3 on Acrobot-v1 (10), 7 on Breakout-MinAtar (5).
set -euo pipefail
cd "$(dirname "$0")/.."
declare -A flags=(
  # defaults (tuned on nothing but CartPole-v1's budget): 1/α_ρ = 5% of the steps, 1/α_β = 10% of the updates
  [CartPole-v1]=""
  # Acrobot pays -1 per step. Its TD loss (~6-10) drives β = 1/L to ~0.15, where the soft value's bonus of up to
  # log(3)/β ≈ 7 per step for acting at random outweighs the cost of not finishing: β ≥ 10 caps it at 0.11.
  [Acrobot-v1]="--beta-min 10 --beta-init 10"
  # MinAtar: a replay of 100k and a target period of 1000 as in Young & Tian (2019); ε over the first 20%
  [Breakout-MinAtar]="--total-timesteps 300000 --buffer-size 100000 --target-network-frequency 1000 --exploration-fraction 0.2"
)
declare -A seeds=([CartPole-v1]=30 [Acrobot-v1]=10 [Breakout-MinAtar]=5)
envs=("$@")
[ ${#envs[@]} -gt 0 ] || envs=(CartPole-v1 Acrobot-v1 Breakout-MinAtar)
for env_id in "${envs[@]}"; do
  for algo in dqn sql mirl; do
    # shellcheck disable=SC2086
    python mirl_gymnax.py --env-id "$env_id" --algo "$algo" --exp-name "$algo" --num-seeds "${seeds[$env_id]}" ${flags[$env_id]}
  done
  latest=()
  for algo in dqn sql mirl; do latest+=("$(ls -d runs/"$env_id"__"$algo"__* | tail -n 1)"); done
  python -m common.plot "${latest[@]}" --out "docs/${env_id}.png"
done
