"""The scripts' command line: tyro's parser, `--resume` with the flags a resumed run may change, and bad
input answered with one `error:` line.

    if __name__ == "__main__":
        run_script(main, Args, "mirl_gymnax.py")

A problem with the user's input (a flag, a file, a dataset, a checkpoint, the machine's memory) is raised
as a `UserError`, which the command line prints as `error: <message>` on stderr before exiting with
status 1; set KIT_TRACEBACK=1 to see where it was raised.
"""

import dataclasses
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import tyro

from common.checkpoint import read_header
from common.errors import Interrupted, UserError, flag, out_of_range

A = TypeVar("A")


@dataclass(frozen=True)
class RunFlags:
    """The flags of a run rather than of its algorithm, shared by the three scripts: each script's Args extends this
    class with its algorithm's flags (which must include `env_id`, the first part of the run's name)."""

    exp_name: str | None = None
    """the name of this experiment: runs go to runs/{env_id}__{exp_name}__{seed}__{time} (default: the algorithm)"""
    seed: int = 1
    """seed of the first run; seed k of --num-seeds uses seed + k"""
    num_seeds: int = 1
    """independent seeds trained at once (vmapped; sharded over devices when there are several), one TensorBoard
    sub-run each"""
    cpu_devices: int = 0
    """JAX devices to split this host's CPU into, the seeds sharded over them, each device running its seeds on its
    own thread (8 CartPole seeds ran 1.9x faster on 2 cores as 2 devices). 0: one per core, as many as divide the
    runs evenly, so one seed runs unsplit; 1: no split. The count used is recorded with the run (float32 rounding
    depends on it) and a resume keeps it. Accelerators stay the default devices"""
    num_processes: int = 1
    """processes that train the seeds together, each holding the seeds of its own devices (jax.distributed; see
    docs/runs.md): start the same command in each, with its --process-id"""
    process_id: int | None = None
    """this process's index, 0 to --num-processes − 1 (default: from SLURM or Open MPI, where JAX detects them)"""
    coordinator_address: str | None = None
    """host:port of process 0, which the others connect to (default: from SLURM or Open MPI)"""
    track: bool = False
    """mirror the TensorBoard logs to Weights & Biases"""
    wandb_project_name: str = "mirl-jax"
    """the Weights & Biases project"""
    wandb_entity: str | None = None
    """the Weights & Biases entity (team)"""
    save_model: bool = False
    """write checkpoints of the whole training state (parameters, optimisers, RNG, step, flags, and the algorithm's
    own state), from which --resume continues the run"""
    keep_checkpoints: int = 1
    """how many of the newest checkpoints to keep (0 keeps all)"""
    resume: str | None = None
    """continue the run saved in this checkpoint file with its flags; only the budget and the logging, checkpoint and
    evaluation flags may be changed (docs/runs.md, Resuming)"""
    log_interval: int = 10_000
    """steps (per seed) between TensorBoard writes"""

    BUDGET: ClassVar[str] = "total_timesteps"  # the flag that sets the run's length
    RESUMABLE: ClassVar[tuple[str, ...]] = ()  # what a resumed run may change besides its logging and checkpoints
    EXTENSION_NOTE: ClassVar[str] = ""  # said when a resumed run's budget grows

    def steps_per_iteration(self) -> int:
        """Steps of the budget's unit that one iteration of the training loop makes (per seed)."""
        return 1

    def total_iterations(self) -> int:
        """Iterations of the training loop in the whole run."""
        return getattr(self, self.BUDGET) // self.steps_per_iteration()

    def log_every(self) -> int:
        """Iterations between TensorBoard writes."""
        return max(1, self.log_interval // self.steps_per_iteration())

    def seeds(self) -> list[int]:
        """The seeds of the run: --seed, --seed + 1, …, --seed + --num-seeds − 1."""
        return list(range(self.seed, self.seed + self.num_seeds))

    def num_runs(self) -> int:
        """Agents the program trains: the seeds (times the configurations of a sweep)."""
        return self.num_seeds

    def problems(self) -> list[str]:
        """What is wrong with the run flags; each script's Args adds its own rules (refused before any work)."""
        problems = out_of_range(self, "num_seeds num_processes log_interval", "seed cpu_devices keep_checkpoints")
        if not problems and self.seed + self.num_seeds > 2**31:
            last = self.seed + self.num_seeds - 1
            problems.append(f"the seeds (--seed {self.seed} to {last}) must be below 2³¹: the kit keeps them as int32")
        budget = getattr(self, self.BUDGET)
        if isinstance(budget, int) and budget >= 2**31:
            problems.append(f"{flag(self.BUDGET)} ({budget:,}) must be below 2³¹: the loop counts steps in int32")
        if self.process_id is not None and not 0 <= self.process_id < self.num_processes:
            problems.append(
                f"--process-id ({self.process_id}) must lie in 0 … --num-processes − 1 ({self.num_processes - 1})"
            )
        return problems


def experiment_flags(args: RunFlags) -> dict:
    """The flags that make a run's experiment: all but the run flags (RunFlags') and those a resumed run may change
    (the class's RESUMABLE: checkpoints, evaluations), none of which changes what the run learns."""
    run_flags = {field.name for field in dataclasses.fields(RunFlags)} | set(type(args).RESUMABLE)
    return {name: value for name, value in dataclasses.asdict(args).items() if name not in run_flags}


def check_flags(args: RunFlags) -> None:
    """Refuse, before any work, flags that cannot make a run: one UserError naming every problem."""
    problems = args.problems()
    if problems:
        raise UserError("; ".join(problems))


# run flags added after some checkpoints were written, with the value that reproduces those runs
RUN_FLAGS_ADDED = {"num_processes": 1, "process_id": None, "coordinator_address": None}

# the flags every script lets a resumed run change: where and how often it logs and checkpoints, and how many processes
# share its seeds
RESUMABLE_EVERYWHERE = (
    *("save_model", "keep_checkpoints", "log_interval", "track", "wandb_project_name", "wandb_entity"),
    *("num_processes", "process_id", "coordinator_address"),
)


def with_saved_flags(saved: A, resume: str) -> A:
    """The checkpoint's flags as the defaults of the resumed run, except a process's own index (the header read is
    process 0's): each process passes its --process-id again, or the cluster sets it."""
    if hasattr(saved, "process_id"):
        saved = dataclasses.replace(saved, process_id=None)
    return dataclasses.replace(saved, resume=resume)


def saved_args(args_class: type[A], header: dict, path: str | Path, script: str) -> A:
    """The Args a checkpoint was written with, refusing checkpoints of another script or another version. JSON
    has no tuples: a list in the header is a tuple flag's value (the swept flags)."""
    written_by = header.get("script")
    if written_by is not None and written_by != script:
        raise UserError(f"{path} was written by {written_by}, not {script}: resume it with {written_by}")
    saved = header.get("args")
    names = {field.name for field in dataclasses.fields(args_class)}
    if not isinstance(saved, dict) or (written_by is None and not names & set(saved)):
        raise UserError(f"{path} is not a checkpoint of {script} (its header holds no {script} flags)")
    saved = {**{name: value for name, value in RUN_FLAGS_ADDED.items() if name in names}, **saved}
    unknown, missing = sorted(set(saved) - names), sorted(names - set(saved))
    if unknown or missing:
        differences = ", ".join(
            [f"unknown {', '.join(map(flag, unknown))}"] * bool(unknown)
            + [f"without {', '.join(map(flag, missing))}"] * bool(missing)
        )
        raise UserError(
            f"{path} was written by another script or another version of {script} ({differences}): resuming it "
            "could change the run's objective mid-run; start a new run"
        )
    return args_class(**{name: tuple(value) if isinstance(value, list) else value for name, value in saved.items()})


def check_resume_changes(saved: Any, args: Any, resumable: Iterable[str], step: int, total_field: str) -> dict:
    """The flags `args` changes from the checkpoint's `saved` Args, refusing those a resumed run may not change
    and a total below the checkpoint's step. Returns {field: (saved value, new value)}."""
    changes = {
        field.name: (getattr(saved, field.name), getattr(args, field.name))
        for field in dataclasses.fields(saved)
        if field.name != "resume" and getattr(saved, field.name) != getattr(args, field.name)
    }
    refused = sorted(set(changes) - set(RESUMABLE_EVERYWHERE) - set(resumable) - {total_field})
    if refused:
        allowed = ", ".join(map(flag, sorted({total_field, *RESUMABLE_EVERYWHERE, *resumable})))
        raise UserError(
            f"a resumed run keeps the flags it was started with; {', '.join(map(flag, refused))} cannot change on "
            f"--resume (these can: {allowed}). Start a new run to change them"
        )
    if getattr(args, total_field) < step:
        raise UserError(f"{flag(total_field)} ({getattr(args, total_field)}) is below the checkpoint's step ({step})")
    return changes


def start_resume(args: A, script: str, step_of: Callable[[dict, A], int]) -> tuple[A, dict, int]:
    """The Args, header and step (`step_of(header, saved Args)`) of the run `args.resume` continues. `args` holds
    every flag of the continued run (`parse` merges the command line into the checkpoint's); those that differ
    from the checkpoint's are checked against the class's RESUMABLE and BUDGET, and an extended budget is announced
    with its EXTENSION_NOTE. For library callers, `Args(resume=path)` with every other field at its default stands
    for the checkpoint's flags."""
    args_class = type(args)
    resumable, total_field, extension_note = args_class.RESUMABLE, args_class.BUDGET, args_class.EXTENSION_NOTE
    header = read_header(args.resume)
    saved = saved_args(args_class, header, args.resume, script)
    if args == dataclasses.replace(args_class(), resume=args.resume):
        args = with_saved_flags(saved, args.resume)
    if getattr(args, "cpu_devices", None) == 0:  # left to choose: the run's own choice, which its numbers depend on
        args = dataclasses.replace(args, cpu_devices=saved.cpu_devices)
    try:
        step, _ = step_of(header, saved), header["run_name"]  # what every run's header holds
    except (KeyError, TypeError) as error:
        raise UserError(f"{args.resume} is not a checkpoint of {script} (its header lacks {error})") from error
    changes = check_resume_changes(saved, args, resumable, step, total_field)
    if total_field in changes:
        old, new = changes[total_field]
        print(f"resuming at step {step:,} with {flag(total_field)} {new:,} (was {old:,}){extension_note}")
    return args, header, step


def parse(args_class: type[A], script: str, argv: list[str] | None = None) -> A:
    """tyro's parse of `argv`; with --resume, the flags not given are the checkpoint's."""
    args = tyro.cli(args_class, args=argv)
    if getattr(args, "resume", None) is None:
        return args
    saved = saved_args(args_class, read_header(args.resume), args.resume, script)
    return tyro.cli(args_class, args=argv, default=with_saved_flags(saved, args.resume))


def run_script(main: Callable[[Any], Any], args_class: type, script: str) -> None:
    """Parse the command line and run `main`; a UserError exits with its one-line message, Ctrl-C with one line
    (what the run kept and how to continue it, where the harness says) and status 130."""
    try:
        main(parse(args_class, script))
    except UserError as error:
        if os.environ.get("KIT_TRACEBACK"):
            raise
        sys.exit(f"error: {error}")
    except (Interrupted, KeyboardInterrupt) as error:  # Ctrl-C: no traceback, the shell's status for SIGINT
        print(f"interrupted: {error}" if str(error) else "interrupted", file=sys.stderr)
        sys.exit(130)
