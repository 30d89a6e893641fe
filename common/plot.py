"""Learning curves and result tables from the kit's TensorBoard logs.

    python -m common.plot runs/CartPole-v1__dqn__* runs/CartPole-v1__mirl__*     # writes runs/plots/curves.png

Each run directory holds one sub-run per seed (`seed_*`), or, for a sweep, one folder per configuration with
one sub-run per seed in each; a curve is the mean over seeds with a band of ± one standard deviation, one curve
per label. Runs sharing a label (the experiment name in the run name by default, followed by the configuration
in a sweep) are pooled, as one experiment: their seeds must differ (a seed trained twice is refused, naming both
runs, unless --latest keeps its latest run), and nothing else they recorded may (the flags that make the
experiment: all but the run flags of common.cli.RunFlags, seeds, devices, logging, checkpoints, and the
evaluation flags a resumed run may change). The table gives, per label,
the mean ± std over seeds of the last value of --final-tag (or of the mean of its last --final-last values, which
evens out evaluation noise).
"""

import ast
import dataclasses
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from common.errors import UserError, check_writable, flag, plural


@dataclass
class Args:
    runs: tyro.conf.Positional[list[Path]]
    """run directories (runs/{run_name}), each with seed_* sub-runs"""
    out: Path = Path("runs/plots/curves.png")
    """where to write the figure (by default beside the runs, which git ignores)"""
    tag: str = "charts/episodic_return"
    """the scalar to plot"""
    final_tag: str = "eval/episodic_return"
    """the scalar whose last value(s) per seed go into the table"""
    final_last: int = 1
    """average this many of --final-tag's last values per seed for the table (1: the last value)"""
    labels: list[str] | None = None
    """one label per run directory (default: the experiment name in the run name)"""
    latest: bool = False
    """where runs under one label trained the same seed, keep the latest (by the time in the run name)"""
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
    """(steps, values) of `tag` in one sub-run's logs, empty where it was not logged."""
    return read_tags(sub_run, (tag,))[0]


def read_tags(sub_run: Path, tags: tuple[str, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """read_scalars of each of `tags`, the logs read once."""
    accumulator = EventAccumulator(str(sub_run), size_guidance={"scalars": 0})
    accumulator.Reload()
    logged = accumulator.Tags()["scalars"]
    events = [accumulator.Scalars(tag) if tag in logged else [] for tag in tags]
    return [(np.array([e.step for e in tag_events]), np.array([e.value for e in tag_events])) for tag_events in events]


def curves_and_finals(groups: dict, tag: str, final_tag: str, final_last: int) -> tuple[dict, dict]:
    """Per group of seeds (seed_runs'): each seed's curve of `tag` as (steps, values), and its final score, the
    mean of `final_tag`'s last `final_last` values; seeds that logged neither are left out of that one."""
    curves, finals = defaultdict(list), defaultdict(list)
    for key, seeds in groups.items():
        for seed in seeds:
            (steps, values), (_, final) = read_tags(seed.sub_run, (tag, final_tag))
            if len(steps):
                curves[key].append((steps, values))
            if len(final):
                finals[key].append(float(final[-final_last:].mean()))
    return dict(curves), dict(finals)


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
            raise UserError(
                f"{run} matched no run directory{pattern}; "
                + (f"{run.parent} holds: {', '.join(siblings[:12])}" if siblings else f"{run.parent} holds no runs")
            )
        if "=" in run.name and len(run.parent.name.split("__")) >= 4:
            # a sweep's configuration folder: its run's name, which says the environment, is its parent's
            raise UserError(
                f"{run} is one configuration of the sweep {run.parent}: pass {run.parent}, whose every "
                "configuration is then an experiment of its own"
            )


def step_ticks(axis) -> None:
    """Steps as 100k or 5M: six-digit tick labels run into each other on a narrow panel."""
    from matplotlib.ticker import EngFormatter

    axis.xaxis.set_major_formatter(EngFormatter(sep=""))


def seed_dirs(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("seed_*"), key=lambda p: int(re.sub(r"\D", "", p.name) or 0))


def experiments(run_dir: Path, label: str) -> dict[str, list[Path]]:
    """The seeds' sub-runs of a run directory: {label: its seed_* sub-runs}, or for a sweep (a folder per
    configuration, named `flag=value,...` by the swept flags) {"{label} {configuration}": its seed_* sub-runs}."""
    if seed_dirs(run_dir):
        return {label: seed_dirs(run_dir)}
    configurations = sorted(path for path in run_dir.glob("*=*") if path.is_dir() and seed_dirs(path))
    if not configurations:
        raise UserError(f"{run_dir} has no seed_* sub-runs; is it a run directory of this kit?")
    return {f"{label} {path.name}": seed_dirs(path) for path in configurations}


@dataclass(frozen=True)
class SeedRun:
    """One trained seed: its sub-run's logs, and the run that trained it."""

    env: str
    experiment: str  # its label, followed by the configuration in a sweep
    seed: int
    sub_run: Path
    run_dir: Path
    flags: dict[str, Any] | None  # the run's recorded flags but the run flags; a sweep's values in place of its lists


def recorded_flags(run_dir: Path) -> dict[str, Any] | None:
    """The flags that make a run's experiment, as it recorded them in each sub-run's first event file: the table
    "experiment" (common.cli.experiment_flags), or for runs from before it, "hyperparameters" without the run flags
    (common.cli.RunFlags: seeds, devices, logging, checkpoints). None where neither is recorded."""
    from common.cli import RunFlags  # imported here: it brings JAX, which the plots need only for this

    sub_runs = sorted(run_dir.rglob("seed_*"))
    if not sub_runs:
        return None
    accumulator = EventAccumulator(str(sub_runs[0]), size_guidance={"tensors": 0, "scalars": 1})
    accumulator.Reload()
    tables = accumulator.Tags()["tensors"]
    tag = next((t for t in ("experiment/text_summary", "hyperparameters/text_summary") if t in tables), None)
    if tag is None:
        return None
    table = accumulator.Tensors(tag)[0].tensor_proto.string_val[0].decode()
    skipped = set() if tag.startswith("experiment") else {field.name for field in dataclasses.fields(RunFlags)}
    rows = (line[1:-1].partition("|") for line in table.splitlines()[2:] if line.startswith("|") and line.endswith("|"))
    return {name: parsed(value) for name, separator, value in rows if separator and name not in skipped}


def parsed(value: str) -> Any:
    """A recorded flag's value as Python reads it, a one-value tuple (an unswept sweepable flag) as its value."""
    try:
        value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value
    return value[0] if isinstance(value, tuple) and len(value) == 1 else value


def curve_label(experiment: str, seeds: int) -> str:
    return f"{experiment} ({plural(seeds, 'seed')})"


def run_time(run_dir: Path) -> float:
    """When a run started: the time in its name (`{env_id}__{exp_name}__{seed}__{time}`), else its folder's."""
    parts = run_dir.name.split("__")
    return float(parts[-1]) if len(parts) >= 4 and parts[-1].isdigit() else run_dir.stat().st_mtime


def seed_runs(
    runs: list[Path], labels: list[str], latest: bool, by_env: bool = True
) -> dict[tuple[str, str], list[SeedRun]]:
    """Each experiment's seeds, keyed by (environment, experiment), or ("", experiment) when not `by_env`. Each seed
    is counted once: a seed trained by two runs under one label is refused, naming both, unless `latest` keeps the
    later run's; and the runs kept must have recorded the same flags (check_same_flags)."""
    groups: dict[tuple[str, str], list[SeedRun]] = defaultdict(list)
    for run_dir, label in sorted(zip(runs, labels, strict=True), key=lambda pair: run_time(pair[0])):
        flags = recorded_flags(run_dir)
        if flags is None:
            print(f"note: {run_dir} recorded no flags: they are not compared with its label's other runs")
        env = run_dir.name.split("__")[0]
        for experiment, sub_runs in experiments(run_dir, label).items():
            configuration = dict(item.split("=", 1) for item in experiment[len(label) :].strip().split(",") if item)
            run_flags = None if flags is None else flags | {name: parsed(v) for name, v in configuration.items()}
            for sub_run in sub_runs:
                seed = int(re.sub(r"\D", "", sub_run.name) or 0)
                groups[env if by_env else "", experiment].append(
                    SeedRun(env, experiment, seed, sub_run, run_dir, run_flags)
                )
    result = {}
    for key, seeds in groups.items():
        once: dict[int, SeedRun] = {}
        for seed in seeds:  # in the order the runs started
            if seed.seed in once and not latest:
                raise UserError(
                    f"seed {seed.seed} of {seed.experiment} ({seed.env}) was trained by {once[seed.seed].run_dir} and "
                    f"by {seed.run_dir}: counted twice, one seed would look like two; leave one out, or pass --latest "
                    "to keep the later"
                )
            once[seed.seed] = seed
        check_same_flags(key[1], list(once.values()))  # after --latest: a rerun of other flags may replace a seed
        result[key] = sorted(once.values(), key=lambda s: s.seed)
    return result


def check_same_flags(experiment: str, seeds: list[SeedRun]) -> None:
    """Refuse to pool runs whose recorded flags differ, naming each flag that differs and two runs it differs in."""
    recorded = [seed for seed in seeds if seed.flags is not None]
    differ: dict[str, str] = {}
    for other in recorded[1:]:
        first = recorded[0]
        for name in sorted(set(first.flags) | set(other.flags)):
            mine, theirs = first.flags.get(name), other.flags.get(name)
            if mine != theirs and name not in differ:
                differ[name] = f"{flag(name)} is {mine} in {first.run_dir} and {theirs} in {other.run_dir}"
    if differ:
        raise UserError(
            f"{experiment} pools runs whose flags differ: {'; '.join(differ.values())}; give them different --labels, "
            "or leave some out"
        )


def main(args: Args) -> dict[str, np.ndarray]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if args.final_last < 1:
        raise UserError("--final-last must be at least 1")
    check_run_dirs(args.runs)
    check_writable(args.out.parent, "--out's folder")
    labels = args.labels or [run_label(run) for run in args.runs]
    if len(labels) != len(args.runs):
        raise UserError(f"{len(labels)} labels for {len(args.runs)} runs")
    groups = {experiment: seeds for (_, experiment), seeds in seed_runs(args.runs, labels, args.latest, False).items()}
    curves, finals = curves_and_finals(groups, args.tag, args.final_tag, args.final_last)

    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    for label, seeds in curves.items():
        grid = np.linspace(max(s[0] for s, _ in seeds), min(s[-1] for s, _ in seeds), args.points)
        values = np.stack([np.interp(grid, steps, vals) for steps, vals in seeds])
        mean, std = values.mean(0), values.std(0)
        axis.plot(grid, mean, label=curve_label(label, len(seeds)))
        axis.fill_between(grid, mean - std, mean + std, alpha=0.2)
    if args.baseline is not None:
        axis.axhline(args.baseline, color="gray", linestyle="--", label=args.baseline_label)
    axis.set_xlabel(args.xlabel)
    step_ticks(axis)
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
    from common.cli import run_script

    run_script(main, Args, "common.plot")
