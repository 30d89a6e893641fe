"""What MISA's HMC chains do during training, at several initial step sizes: acceptance, the adapted step size,
how far the samples move from the data actions they start at, the fraction that moved at all, and the HMC
term's share of the actor gradient (--hmc-diagnostics). Same reduced flags as benchmarks/misa_pendulum.sh, on
its mixed Pendulum dataset (made here if missing), without evaluation.

    python benchmarks/misa_hmc.py --step-sizes 1.0 0.3 0.1 --total-steps 8000 --num-seeds 5

Prints, per step size and logged tag, the mean ± std over seeds at the first, middle and last log point.
"""

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import misa_d4rl  # noqa: E402
from common import make_dataset  # noqa: E402
from common.plot import read_scalars  # noqa: E402

TAGS = (
    "misa/hmc_acceptance",
    "misa/hmc_step_size",
    "misa/hmc_moved_fraction",
    "misa/hmc_distance_to_data",
    "misa/hmc_grad_ratio",
)


@dataclass
class Args:
    step_sizes: tuple[float, ...] = (1.0, 0.3, 0.1)
    """initial HMC step sizes to compare (1.0 is the official one)"""
    total_steps: int = 8_000
    """gradient steps per run"""
    num_seeds: int = 5
    """vmapped seeds per step size"""
    dataset_path: str = "data/pendulum-mixed.hdf5"
    """the mixed Pendulum dataset of benchmarks/misa_pendulum.sh (made with its flags if missing)"""


def main(args: Args) -> dict:
    if not Path(args.dataset_path).exists():
        make_dataset.main(
            make_dataset.Args(
                env_id="Pendulum-v1",
                policy="benchmarks.pendulum_controller:act",
                noise_std=0.5,
                random_fraction=0.4,
                num_steps=50_000,
                output=args.dataset_path,
                seed=0,
            )
        )
    table = {}
    for step_size in args.step_sizes:
        run = misa_d4rl.Args(
            env_id="Pendulum-v1",
            dataset_path=args.dataset_path,
            hidden_size=64,
            batch_size=128,
            num_action_samples=10,
            hmc_samples=10,
            hmc_burn_in=5,
            total_steps=args.total_steps,
            eval_interval=args.total_steps,
            log_interval=min(1_000, args.total_steps),
            eval_episodes=0,
            num_seeds=args.num_seeds,
            hmc_step_size=step_size,
            hmc_diagnostics=True,
            exp_name=f"hmc_step_{step_size}",
        )
        run_dir = misa_d4rl.main(run)["run_dir"]
        for tag in TAGS:
            per_seed = [read_scalars(run_dir / f"seed_{seed}", tag) for seed in range(1, args.num_seeds + 1)]
            steps = per_seed[0][0]
            values = np.stack([v for _, v in per_seed])  # [seeds, log points]
            table[step_size, tag] = {int(steps[i]): values[:, i] for i in (0, len(steps) // 2, len(steps) - 1)}
    print(f"\nmean ± std over {args.num_seeds} seeds, {args.total_steps} gradient steps:\n")
    points = sorted(next(iter(table.values())))
    print(f"| step size | tag | {' | '.join(f'step {p}' for p in points)} |\n|-|-|{'-|' * len(points)}")
    for (step_size, tag), at in table.items():
        cells = " | ".join(f"{at[p].mean():.3g} ± {at[p].std():.2g}" for p in points)
        print(f"| {step_size} | {tag.removeprefix('misa/')} | {cells} |")
    return table


if __name__ == "__main__":
    main(tyro.cli(Args))
