"""Learning curves and result tables from the kit's TensorBoard logs.

    python -m common.plot runs/CartPole-v1__dqn__* runs/CartPole-v1__mirl__* --out curves.png

Each run directory holds one sub-run per seed (`seed_*`), or, for a sweep, one folder per configuration with
one sub-run per seed in each; a curve is the mean over seeds with a band of ± one standard deviation, one curve
per label. Runs sharing a label (the experiment name in the run name by default, followed by the configuration
in a sweep) are pooled. The table gives, per label, the mean ± std over seeds of the last value of
--final-tag (or of the mean of its last --final-last values, which evens out evaluation noise).
"""

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


@dataclass
class Args:
    runs: tyro.conf.Positional[list[Path]]
    """run directories (runs/{run_name}), each with seed_* sub-runs"""
    out: Path = Path("curves.png")
    """where to write the figure"""
    tag: str = "charts/episodic_return"
    """the scalar to plot"""
    final_tag: str = "eval/episodic_return"
    """the scalar whose last value(s) per seed go into the table"""
    final_last: int = 1
    """average this many of --final-tag's last values per seed for the table (1: the last value)"""
    labels: list[str] | None = None
    """one label per run directory (default: the experiment name in the run name)"""
    title: str | None = None
    """figure title (default: the environment id)"""
    xlabel: str = "environment steps (per seed)"
    """the x axis's label (misa_d4rl.py counts gradient steps)"""
    baseline: float | None = None
    """draw a horizontal reference line at this value (e.g. the behaviour data's score)"""
    baseline_label: str = "baseline"
    """the reference line's legend entry"""
    points: int = 200
    """curve resolution: seeds are interpolated onto this many common steps"""


def read_scalars(sub_run: Path, tag: str) -> tuple[np.ndarray, np.ndarray]:
    accumulator = EventAccumulator(str(sub_run), size_guidance={"scalars": 0})
    accumulator.Reload()
    if tag not in accumulator.Tags()["scalars"]:
        return np.empty(0), np.empty(0)
    events = accumulator.Scalars(tag)
    return np.array([e.step for e in events]), np.array([e.value for e in events])


def run_label(run_dir: Path) -> str:
    """`{env_id}__{exp_name}__{seed}__{time}` → exp_name."""
    parts = run_dir.name.split("__")
    return parts[1] if len(parts) >= 4 else run_dir.name


def check_run_dirs(runs: list[Path]) -> None:
    """Refuse paths that are not directories, saying what their parent holds instead."""
    for run in runs:
        if not run.is_dir():
            pattern = " (the shell found nothing to expand the pattern to)" if set("*?[") & set(str(run)) else ""
            siblings = sorted(p.name for p in run.parent.glob("*") if p.is_dir()) if run.parent.is_dir() else []
            raise SystemExit(
                f"error: {run} matched no run directory{pattern}; "
                + (f"{run.parent} holds: {', '.join(siblings[:12])}" if siblings else f"{run.parent} holds no runs")
            )


def seed_dirs(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("seed_*"), key=lambda p: int(re.sub(r"\D", "", p.name) or 0))


def experiments(run_dir: Path, label: str) -> dict[str, list[Path]]:
    """The seeds' sub-runs of a run directory: {label: its seed_* sub-runs}, or for a sweep (a folder per
    configuration, named `flag=value,...` by the swept flags) {"{label} {configuration}": its seed_* sub-runs}."""
    if seed_dirs(run_dir):
        return {label: seed_dirs(run_dir)}
    configurations = sorted(path for path in run_dir.glob("*=*") if path.is_dir() and seed_dirs(path))
    if not configurations:
        raise SystemExit(f"error: {run_dir} has no seed_* sub-runs; is it a run directory of this kit?")
    return {f"{label} {path.name}": seed_dirs(path) for path in configurations}


def main(args: Args) -> dict[str, np.ndarray]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if args.final_last < 1:
        raise SystemExit("error: --final-last must be at least 1")
    check_run_dirs(args.runs)
    labels = args.labels or [run_label(run) for run in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit(f"error: {len(labels)} labels for {len(args.runs)} runs")
    curves, finals = defaultdict(list), defaultdict(list)
    for run, label in zip(args.runs, labels, strict=True):
        for experiment, sub_runs in experiments(run, label).items():
            for sub_run in sub_runs:
                steps, values = read_scalars(sub_run, args.tag)
                if len(steps):
                    curves[experiment].append((steps, values))
                _, final = read_scalars(sub_run, args.final_tag)
                if len(final):
                    finals[experiment].append(final[-args.final_last :].mean())

    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    for label, seeds in curves.items():
        grid = np.linspace(max(s[0] for s, _ in seeds), min(s[-1] for s, _ in seeds), args.points)
        values = np.stack([np.interp(grid, steps, vals) for steps, vals in seeds])
        mean, std = values.mean(0), values.std(0)
        axis.plot(grid, mean, label=f"{label} ({len(seeds)} seeds)")
        axis.fill_between(grid, mean - std, mean + std, alpha=0.2)
    if args.baseline is not None:
        axis.axhline(args.baseline, color="gray", linestyle="--", label=args.baseline_label)
    axis.set_xlabel(args.xlabel)
    axis.set_ylabel(args.tag)
    axis.set_title(args.title or args.runs[0].name.split("__")[0])
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")

    table = {label: np.array(values) for label, values in finals.items()}
    if table:
        final = args.final_tag if args.final_last == 1 else f"{args.final_tag}, mean of the last {args.final_last}"
        print(f"\n| run | {final} (mean ± std over seeds) | seeds |\n|-|-|-|")
        for label, values in table.items():
            print(f"| {label} | {values.mean():.1f} ± {values.std():.1f} | {len(values)} |")
    return table


if __name__ == "__main__":
    main(tyro.cli(Args))
