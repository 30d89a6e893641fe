"""Bad input, and how error messages name things."""

import math
import os
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input (a flag, a file, a dataset, a checkpoint, the machine's memory). The
    scripts' command line (common.cli) shows it as one `error:` line without a traceback."""


def flag(field: str) -> str:
    """A dataclass field as the user types it: `dataset_path` → `--dataset-path`."""
    return "--" + field.replace("_", "-")


def plural(count: int, noun: str) -> str:
    """`1 seed`, `2 seeds`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def out_of_range(args, positive=(), non_negative=(), unit_interval=(), fraction=(), finite=()) -> list[str]:
    """What is wrong with the flags of `args` that must be > 0, ≥ 0, within [0, 1], within (0, 1], or only
    finite; all of them must be finite (a NaN fails every comparison, so each test is written to fail on it).
    Each group names its flags in a tuple or a space-separated string. A flag holding a tuple of values (a swept
    flag) must have at least one, and each must hold."""
    rules = (
        (finite, lambda x: True, "must be finite"),
        (positive, lambda x: x > 0, "must be positive"),
        (non_negative, lambda x: x >= 0, "must be non-negative"),
        (unit_interval, lambda x: 0 <= x <= 1, "must lie in [0, 1]"),
        (fraction, lambda x: 0 < x <= 1, "must lie in (0, 1]"),
    )
    problems = []
    for names, holds, rule in rules:
        for name in names.split() if isinstance(names, str) else names:
            value = getattr(args, name)
            if value == ():
                problems.append(f"{flag(name)} needs a value")
            for x in value if isinstance(value, tuple) else (value,):
                if not (holds(x) and math.isfinite(x)):
                    problems.append(f"{flag(name)} ({x}) {rule}")
    return problems


def not_multiples(args, names: tuple[str, ...], of: str) -> list[str]:
    """The flags among `names` whose value is not a multiple of flag `of`'s."""
    base = getattr(args, of)
    return [
        f"{flag(n)} ({getattr(args, n)}) must be a multiple of {flag(of)} ({base})"
        for n in names
        if getattr(args, n) % base
    ]


class Interrupted(Exception):
    """Ctrl-C stopped a run: the message says where, what is kept and how to continue (exit status 130)."""


def check_writable(path: Path, what: str) -> None:
    """Refuse, before any work, a folder (or a file's folder) that cannot be made or written: its nearest existing
    ancestor must be a writable folder."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{what} {path} cannot be made: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path} cannot be written: {existing} is not writable")
