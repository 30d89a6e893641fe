"""Bad input, and how error messages name things."""


class UserError(Exception):
    """A problem with the user's input (a flag, a file, a dataset, a checkpoint, the machine's memory). The
    scripts' command line (common.cli) shows it as one `error:` line without a traceback."""


def flag(field: str) -> str:
    """A dataclass field as the user types it: `dataset_path` → `--dataset-path`."""
    return "--" + field.replace("_", "-")


def plural(count: int, noun: str) -> str:
    """`1 seed`, `2 seeds`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def out_of_range(args, positive=(), non_negative=(), unit_interval=()) -> list[str]:
    """What is wrong with the flags of `args` that must be > 0, ≥ 0, or within [0, 1]."""
    problems = [
        f"{flag(name)} ({getattr(args, name)}) must be positive" for name in positive if getattr(args, name) <= 0
    ]
    problems += [
        f"{flag(name)} ({getattr(args, name)}) must be non-negative" for name in non_negative if getattr(args, name) < 0
    ]
    problems += [
        f"{flag(name)} ({getattr(args, name)}) must lie in [0, 1]"
        for name in unit_interval
        if not 0 <= getattr(args, name) <= 1
    ]
    return problems
