"""The β-scale study: with β moving towards c / L instead of 1 / L (mirl_gymnax.py --beta-scale c), do the soft
methods close their gap to dqn on Asterix-MinAtar?

In the MinAtar study (docs/results.md) both soft methods end far below dqn on Asterix while the logged β settles
near 40: the TD loss L and 1/β need not share a scale, and a larger c weakens the entropy regularisation (β → ∞ is
dqn's hard max). Each soft method trains every c in one program (the flag is swept), beside dqn, all with the
MinAtar study's flags and the game's minimal action set.

    python benchmarks/beta_scale_study.py                                 # this CPU's budget: 500k steps, 5 seeds
    python benchmarks/beta_scale_study.py --steps 5000000 --num-seeds 10  # the standard budget (GPU)

The same command continues an interrupted study (benchmarks/studies.py). It prints, per method and c, the final
greedy score's IQM over seeds with its 95% bootstrap interval and β at the end (mean ± std over seeds), and draws
the return curves into {out}_curves.png.
"""

from dataclasses import dataclass, field
from pathlib import Path

import minatar_study
import numpy as np
import studies
import tyro


@dataclass
class Args:
    game: str = "Asterix-MinAtar"
    """the MinAtar game (its minimal action set)"""
    scales: list[float] = field(default_factory=lambda: [1.0, 10.0, 100.0])
    """values of c, one program per soft method"""
    algos: list[str] = field(default_factory=lambda: ["mirl", "sql"])
    """the soft methods"""
    steps: int = 500_000
    """environment steps per seed"""
    num_seeds: int = 5
    """seeds per (method, c), vmapped"""
    checkpoint_interval: int = 100_000
    """environment steps between checkpoints (and so the most an interruption loses)"""
    flags: list[str] = field(default_factory=list)
    """mirl_gymnax.py flags added to every run (after the MinAtar study's)"""
    out: Path = Path("docs/beta_scale")
    """prefix of the figure"""
    reps: int = 2000
    """bootstrap resamples per interval"""


def run_flags(args: Args, algo: str) -> list[str]:
    """The mirl_gymnax.py flags of one method's program (dqn: no β, so no sweep)."""
    scales = [] if algo == "dqn" else ["--beta-scale", *map(str, args.scales)]
    return [
        *("--env-id", args.game, "--algo", algo, "--exp-name", f"{algo}-c" if scales else algo, *scales),
        *("--num-seeds", str(args.num_seeds), "--total-timesteps", str(args.steps)),
        *("--save-model", "--checkpoint-interval", str(args.checkpoint_interval)),
        *minatar_study.game_flags(minatar_study.Args(steps=args.steps)),
        *args.flags,
    ]  # fmt: skip


def main(args: Args) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.aggregate import iqm_curve, read_runs
    from common.plot import curve_label, experiments, read_scalars, run_label

    run_dirs = []
    for algo in [*args.algos, "dqn"]:
        flags = run_flags(args, algo)
        run_dirs.append(studies.run_or_continue(args.game, flags[flags.index("--exp-name") + 1], flags, args.steps))
    runs = read_runs(run_dirs, "charts/episodic_return", "eval/episodic_return", 1)
    betas = {name: seeds for run in run_dirs for name, seeds in experiments(run, run_label(run)).items()}
    results = {}
    print(f"\n{args.game}, {args.steps:,} steps per seed\n")
    print("| method, c | seeds | final greedy return: IQM [95% CI] | β at the end |")
    print("|-|-|-|-|")
    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    for experiment in runs.experiments:
        scores = runs.finals[(args.game, experiment)]
        point, low, high = studies.iqm_interval(scores, args.reps)
        beta_logs = [read_scalars(sub_run, "mirl/beta")[1] for sub_run in betas[experiment]]
        beta = np.asarray([values[-1] for values in beta_logs if len(values)])  # dqn logs none
        results[experiment] = {"iqm": (point, low, high), "seeds": len(scores), "beta": beta}
        beta_cell = f"{beta.mean():.1f} ± {beta.std():.1f}" if len(beta) else "- (hard max)"
        print(f"| {experiment} | {len(scores)} | {point:.2f} [{low:.2f}, {high:.2f}] | {beta_cell} |")
        grid, values = iqm_curve(runs.curves[(args.game, experiment)], 100)
        axis.plot(grid, values.mean(axis=0), label=curve_label(experiment, len(values)))
    axis.set(title=args.game, xlabel="environment steps", ylabel="episodic return (mean over seeds)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    studies.save_figure(figure, f"{args.out}_curves.png")
    return results


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main(tyro.cli(Args))
