"""Sweeps in one program: flags that take several values train every combination of them with every seed. Each
combination's values are arrays in the runs' states (a script's Hypers), vmapped over like the seeds, so the grid
costs no extra compilation."""

import itertools
from typing import Any, NamedTuple

import numpy as np

from common.errors import flag


class Run(NamedTuple):
    """One agent trained by the program: a seed under one configuration of the swept flags."""

    seed: int
    config: dict[str, float]  # a value for each swept flag
    name: str  # its TensorBoard sub-run: seed_1, or in a sweep alpha_rho=0.0001,learning_rate=0.001/seed_1


def swept(args: Any, names: tuple[str, ...]) -> tuple[str, ...]:
    """The flags among `names` (each holding a tuple of values) given more than one value."""
    return tuple(name for name in names if len(getattr(args, name)) > 1)


def grid_runs(args: Any, names: tuple[str, ...]) -> list[Run]:
    """Configuration-major: all seeds of the first configuration, then of the next, the last of `names` varying
    fastest. Every configuration trains the seeds --seed … --seed + --num-seeds − 1."""
    runs = []
    for values in itertools.product(*(getattr(args, name) for name in names)):
        config = dict(zip(names, values, strict=True))
        directory = ",".join(f"{name}={config[name]!r}" for name in swept(args, names))
        for seed in args.seeds():
            runs.append(Run(seed, config, f"{directory}/seed_{seed}" if directory else f"seed_{seed}"))
    return runs


def stacked_values(runs: list[Run]) -> dict[str, np.ndarray]:
    """The runs' configurations as float32 arrays with the runs on their leading axis, one per flag."""
    return {name: np.asarray([run.config[name] for run in runs], np.float32) for name in runs[0].config}


def sweep_problems(args: Any, names: tuple[str, ...], unused: tuple[str, ...] = (), why: str = "") -> list[str]:
    """A value listed twice, and a sweep of a flag that has no effect (`unused`, `why`): either would train one agent
    several times."""
    problems = [
        f"{flag(name)} lists a value twice"
        for name in names
        if len(set(getattr(args, name))) < len(getattr(args, name))
    ]
    return problems + [
        f"{flag(name)} has no effect {why}: sweeping it would train the same agent several times"
        for name in swept(args, names)
        if name in unused
    ]
