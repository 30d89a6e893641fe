"""Results over seeds and environments as Agarwal et al. recommend ("Deep RL at the edge of the statistical
precipice", NeurIPS 2021), through their library rliable: interquartile means (IQM) with 95% stratified-bootstrap
confidence intervals, and performance profiles.

    pip install -e ".[stats]"
    python -m common.aggregate runs/*-MinAtar__*        # writes runs/plots/aggregate_*.png

Run directories are grouped by their name, `{env_id}__{exp_name}__{seed}__{time}`: each experiment (exp_name,
by default the --algo) is compared with the others over the environments; an experiment's seeds are pooled
over its run directories (each with seed_* sub-runs) and must be as many in every environment. In a sweep's run
directory each configuration is an experiment of its own, `{exp_name} {configuration}`. As in common.plot, the
runs pooled in one environment must have recorded the same flags, and a seed trained twice is refused (or, with
--latest, its latest run kept).

A seed's score is the mean of the last --final-last values of --final-tag. Scores are normalised per
environment, (score − low) / (high − low): low and high are given by --reference, or else are the lowest and
highest final scores of any seed of any experiment in that environment (the table says which). Writes
{out}_curves.png (the IQM of the normalised --tag over seeds, per environment, with its 95% CI),
{out}_aggregates.png (IQM, mean, median and optimality gap over environments and seeds, with 95% CIs) and
{out}_profiles.png (the fraction of runs above each normalised score, with 95% CIs), and prints the table.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro
from scipy.stats import trim_mean

from common.cli import run_script
from common.errors import UserError, check_writable
from common.plot import check_run_dirs, curve_label, curves_and_finals, run_label, seed_runs, step_ticks


@dataclass
class Args:
    runs: tyro.conf.Positional[list[Path]]
    """run directories (runs/{run_name}), each with seed_* sub-runs"""
    out: Path = Path("runs/plots/aggregate")
    """prefix of the three figures ({out}_curves.png, {out}_aggregates.png, {out}_profiles.png), by default beside
    the runs (which git ignores)"""
    tag: str = "charts/episodic_return"
    """the scalar whose curves are drawn"""
    final_tag: str = "eval/episodic_return"
    """the scalar that scores a seed"""
    final_last: int = 1
    """a seed's score is the mean of this many of --final-tag's last values"""
    reference: list[str] | None = None
    """per environment `ENV_ID=LOW:HIGH`, the scores that normalise to 0 and 1 (default: the lowest and highest
    final score seen in that environment)"""
    reps: int = 2000
    """bootstrap resamples for every confidence interval"""
    points: int = 100
    """curve resolution: seeds are interpolated onto this many common steps"""
    seed: int = 0
    """seed of the bootstrap"""
    latest: bool = False
    """where runs of one experiment and environment trained the same seed, keep the latest (by its run name's time)"""


@dataclass(frozen=True)
class Runs:
    """The seeds of every (environment, experiment): curves on each seed's own steps, and final scores."""

    curves: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]]
    finals: dict[tuple[str, str], list[float]]

    @property
    def environments(self) -> list[str]:
        return sorted({env for env, _ in self.finals})

    @property
    def experiments(self) -> list[str]:
        return sorted({experiment for _, experiment in self.finals})


def read_runs(run_dirs: list[Path], tag: str, final_tag: str, final_last: int, latest: bool = False) -> Runs:
    check_run_dirs(run_dirs)
    groups = seed_runs(run_dirs, [run_label(run) for run in run_dirs], latest)
    curves, finals = curves_and_finals(groups, tag, final_tag, final_last)
    if not finals:
        raise UserError(f"no seed of these runs logged {final_tag}")
    return Runs(curves, finals)


def normalisers(runs: Runs, reference: list[str] | None) -> dict[str, tuple[float, float, str]]:
    """Per environment (low, high, where they come from)."""
    given = {}
    for item in reference or []:
        env, _, bounds = item.partition("=")
        low, _, high = bounds.partition(":")
        try:
            given[env] = (float(low), float(high), "--reference")
        except ValueError as error:
            raise UserError(f"--reference {item!r}: expected ENV_ID=LOW:HIGH") from error
    result = {}
    for env in runs.environments:
        seen = [score for (e, _), scores in runs.finals.items() if e == env for score in scores]
        low, high, source = given.get(env, (min(seen), max(seen), "lowest and highest seen"))
        if not high > low and source == "--reference":
            raise UserError(f"--reference {env}: cannot normalise by low {low} and high {high} (they must differ)")
        if not high > low:
            raise UserError(
                f"{env}: every final score is {low:g}, so the lowest and highest seen cannot normalise them (a solved "
                f"task, or one never learned); give the scores that mean 0 and 1, e.g. --reference {env}=LOW:HIGH "
                "with a random policy's score and the best possible"
            )
        result[env] = (low, high, source)
    return result


def score_matrices(runs: Runs, norm: dict[str, tuple[float, float, str]]) -> dict[str, np.ndarray]:
    """Per experiment, the normalised final scores as [seeds, environments] (rliable's layout)."""
    matrices = {}
    for experiment in runs.experiments:
        columns = [runs.finals.get((env, experiment), []) for env in runs.environments]
        counts = {env: len(column) for env, column in zip(runs.environments, columns, strict=True)}
        if len(set(counts.values())) != 1:
            raise UserError(
                f"{experiment} has different numbers of seeds per environment {counts}: rerun so they match"
            )
        matrices[experiment] = np.stack(
            [
                (np.asarray(column) - norm[env][0]) / (norm[env][1] - norm[env][0])
                for env, column in zip(runs.environments, columns, strict=True)
            ],
            axis=1,
        )
    return matrices


def iqm_curve(steps_and_values: list[tuple[np.ndarray, np.ndarray]], points: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeds interpolated onto the steps they all cover: (grid, [seeds, points])."""
    grid = np.linspace(max(s[0] for s, _ in steps_and_values), min(s[-1] for s, _ in steps_and_values), points)
    return grid, np.stack([np.interp(grid, steps, values) for steps, values in steps_and_values])


def main(args: Args) -> dict:
    """Draw the three figures and print the table; returns the point estimates and intervals per experiment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import library as rly
    from rliable import metrics, plot_utils

    if args.final_last < 1 or args.reps < 1 or args.points < 2:
        raise UserError("--final-last and --reps must be at least 1, --points at least 2")
    check_writable(args.out.parent, "--out's folder")
    runs = read_runs(args.runs, args.tag, args.final_tag, args.final_last, args.latest)
    norm = normalisers(runs, args.reference)
    scores = score_matrices(runs, norm)

    def aggregates(matrix: np.ndarray) -> np.ndarray:
        return np.array(
            [
                metrics.aggregate_iqm(matrix),
                metrics.aggregate_mean(matrix),
                metrics.aggregate_median(matrix),
                metrics.aggregate_optimality_gap(matrix),
            ]
        )

    names = ["IQM", "Mean", "Median", "Optimality gap"]
    # rliable's bootstrap draws from NumPy's global generator (its random_state is not used for the draws): seed it
    np.random.seed(args.seed)
    point, interval = rly.get_interval_estimates(scores, aggregates, reps=args.reps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure, _ = plot_utils.plot_interval_estimates(
        point, interval, metric_names=names, algorithms=runs.experiments, row_height=0.6, xlabel_y_coordinate=-0.5
    )
    figure.savefig(f"{args.out}_aggregates.png", dpi=120, bbox_inches="tight")

    taus = np.linspace(-0.05, 1.05, 56)
    np.random.seed(args.seed)
    profiles, profile_cis = rly.create_performance_profile(scores, taus, reps=args.reps)
    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=profile_cis, ax=axis)
    axis.legend()
    figure.savefig(f"{args.out}_profiles.png", dpi=120, bbox_inches="tight")

    environments = runs.environments
    figure, axes = plt.subplots(1, len(environments), figsize=(4.2 * len(environments), 3.6), squeeze=False)
    for axis, env in zip(axes[0], environments, strict=True):
        low, high, _ = norm[env]
        for experiment in runs.experiments:
            seeds = runs.curves.get((env, experiment))
            if not seeds:
                continue
            grid, values = iqm_curve(seeds, args.points)
            curve = {experiment: (values[:, None, :] - low) / (high - low)}  # [seeds, 1 environment, points]
            np.random.seed(args.seed)
            iqm, ci = rly.get_interval_estimates(curve, lambda m: trim_mean(m[:, 0], 0.25, axis=0), reps=args.reps)
            axis.plot(grid, iqm[experiment], label=curve_label(experiment, len(seeds)))
            axis.fill_between(grid, ci[experiment][0], ci[experiment][1], alpha=0.2)
        axis.set_title(env)
        axis.set_xlabel("steps")
        step_ticks(axis)
        axis.set_ylabel(f"normalised {args.tag} (IQM)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(f"{args.out}_curves.png", dpi=120)
    plt.close("all")

    print(f"wrote {args.out}_aggregates.png, {args.out}_profiles.png, {args.out}_curves.png")
    print("\nNormalisation, (score − low) / (high − low):")
    for env, (low, high, source) in norm.items():
        print(f"- {env}: low {low:.4g}, high {high:.4g} ({source})")
    seeds = {experiment: matrix.shape[0] for experiment, matrix in scores.items()}
    print(f"\n| experiment | seeds × envs | {' | '.join(f'{name} [95% CI]' for name in names)} |")
    print("|-" * (len(names) + 2) + "|")
    for experiment in runs.experiments:
        cells = [
            f"{point[experiment][k]:.3f} [{interval[experiment][0][k]:.3f}, {interval[experiment][1][k]:.3f}]"
            for k in range(len(names))
        ]
        print(f"| {experiment} | {seeds[experiment]} × {len(environments)} | {' | '.join(cells)} |")
    return {"names": names, "point": point, "interval": interval, "scores": scores, "normalisers": norm}


if __name__ == "__main__":
    run_script(main, Args, "common.aggregate")
