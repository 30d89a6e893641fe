"""The run around a training loop, the same for the three scripts: each `main` is one call,

    run_experiment(args, SCRIPT, build)

which resumes a run from its checkpoint (or names a new one), refuses bad flags, splits the CPU into devices and joins
the other processes, and then asks the script to `build` its Experiment: how to make the states of its runs (seeds, or
configurations × seeds), advance them by a chunk of iterations and evaluate them. The harness then checks that the
states fit in memory, builds or restores them on their devices, runs the chunks (compiling each chunk shape once),
writes their records, stops on a non-finite loss, saves checkpoints, evaluates, and ends with one line per
configuration.
"""

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from common.checkpoint import init_or_restore, non_finite_stop
from common.cli import RunFlags, check_flags, experiment_flags, start_resume
from common.devices import (
    announce_placement,
    check_fits,
    host_value,
    is_lead_process,
    join_processes,
    seed_mesh,
    seed_sharding,
    split_host_cpu,
)
from common.errors import Interrupted, UserError, check_writable, plural
from common.logger import RunLogger, make_run_name, seed_sub_runs, start_tracking
from common.loop import chunks


class Start(NamedTuple):
    """What `build` is given: the run's final flags, its checkpoint's header when it resumes, and the devices."""

    args: RunFlags
    header: dict | None  # None for a new run
    mesh: jax.sharding.Mesh  # one axis over the devices the runs are split over


class Evaluation(NamedTuple):
    """One evaluation of every run: `scores[tag]` holds one value per run and is written to TensorBoard; `headline`
    names the tag the progress shows and the final line reports; `details` go into main's result."""

    scores: dict[str, np.ndarray]
    headline: str
    details: dict[str, Any] | None = None

    def headline_scores(self) -> tuple[str, np.ndarray]:
        return self.headline, self.scores[self.headline]


class MemoryNeed(NamedTuple):
    """Arrays the run will allocate, checked against the devices' free memory before anything is allocated."""

    what: str  # e.g. "the replay buffers (2 seeds × 10000 transitions × 45 bytes)"
    bytes: int  # over all devices
    hint: str  # what to change when it does not fit

    @staticmethod
    def replays(configurations: int, seeds: int, capacity: int, transition_bytes: int) -> "MemoryNeed":
        """A replay buffer of `capacity` transitions for each seed of each configuration (of a sweep)."""
        configs = f"{plural(configurations, 'configuration')} × " if configurations > 1 else ""
        return MemoryNeed(
            f"the replay buffers ({configs}{plural(seeds, 'seed')} × {capacity} transitions × {transition_bytes} "
            "bytes)",
            configurations * seeds * capacity * transition_bytes,
            "lower --buffer-size or --num-seeds" + (", or sweep fewer values" if configurations > 1 else ""),
        )


@dataclasses.dataclass
class Experiment:
    """What a script's `build` hands the harness. Iterations are the loop's steps (an iteration steps all of a seed's
    environments once, or makes one gradient step: Args.steps_per_iteration); states hold every run on their leading
    axis."""

    name: str  # the default --exp-name: the algorithm or variant
    init: Callable  # (*init_inputs) -> states
    init_inputs: tuple  # host arrays, one row per agent
    advance: Callable  # (states, *run_inputs, first_iteration, Chunk) -> (states, Records): jitted here
    evaluate: Callable[[Any, int], Evaluation | None]  # (states, iteration) -> scores, in every process
    sub_runs: list[str] | None = (
        None  # a TensorBoard sub-run per agent, in the states' order: config/seed_1; None: seed_1
    )
    evaluate_every: int | None = None  # iterations between evaluations; there is always one at the end
    checkpoint_every: int | None = None  # iterations between checkpoints; None: with every evaluation
    intervals_per_chunk: int = 1  # logging intervals a chunk may hold before the host writes their records
    run_inputs: tuple = ()  # what `advance` reads besides the states: host arrays go to every device once
    memory: tuple[MemoryNeed, ...] = ()
    restored: Callable[[Any], Any] = lambda states: states  # applied to states read from a checkpoint
    header: dict = dataclasses.field(default_factory=dict)  # what the checkpoints record besides the state
    loss: str = "the TD loss"  # what `states.nan_step` watches, in the stop message
    step_unit: str = "environment step"
    score_label: str = ""  # how the final line names the headline score; "": by its tag (the last evaluation's)
    keep_best: bool = False  # also log and report each run's best headline score so far
    whole_intervals: bool = False  # records are means over whole logging intervals: a resume must start one
    same_on_resume: tuple[str, ...] = ()  # keys of `header` whose values a resumed run must share with its checkpoint


def run_experiment(args: RunFlags, script: str, build: Callable[[Start], Experiment]) -> dict:
    """Train (or resume) the runs that `build` describes, evaluating as it asks; returns the final states, the last
    evaluation's scores per run ('scores', and 'best_scores' with keep_best) and details, the run directory and the
    last checkpoint."""
    start = start_run(args, script)
    args, header = start.args, start.header
    check_writable(Path("runs") / header["run_name"] if header else Path("runs"), "the run folder")
    experiment = build(start)
    if experiment.sub_runs is None:
        experiment.sub_runs = seed_sub_runs(args.seeds())
    first_iteration = resumed_iteration(header) if header else 0
    if header:
        check_resumable(experiment, header, args, first_iteration)
    devices = list(start.mesh.devices.flat)
    for need in experiment.memory:
        check_fits(need.what, need.bytes, devices, need.hint)
    replicated = NamedSharding(start.mesh, PartitionSpec())
    run_inputs = [x if isinstance(x, jax.Array) else jax.device_put(x, replicated) for x in experiment.run_inputs]
    states = init_or_restore(experiment.init, args.resume, *experiment.init_inputs, sharding=seed_sharding(start.mesh))
    if args.resume:
        states = experiment.restored(states)
    # named once everything above has been accepted: a new run's name claims its folder
    run_name = header["run_name"] if header else make_run_name(args.env_id, args.exp_name or experiment.name, args.seed)

    if args.track and is_lead_process():
        start_tracking(args, run_name, args.wandb_project_name, args.wandb_entity)
    steps, total = args.steps_per_iteration(), args.total_iterations()
    logger = RunLogger(
        Path("runs") / run_name, args, experiment.sub_runs, total * steps, first_iteration * steps,
        experiment=experiment_flags(args),
    )  # fmt: skip
    runner = ChunkRunner(
        jax.jit(experiment.advance, static_argnums=len(run_inputs) + 2, donate_argnums=0), logger.announces_compiles
    )
    evaluate_every = experiment.evaluate_every or total
    checkpoint_every = experiment.checkpoint_every or evaluate_every
    best = None  # each run's best headline score so far, where the experiment keeps them ([] before the first)
    if experiment.keep_best:
        best = (header.get("best_scores") if header else None) or []
    last_checkpoint, evaluation = args.resume, None
    swept = len(experiment.sub_runs) > args.num_seeds  # the agents are configurations × seeds, configuration-major
    labels = experiment.sub_runs if swept else args.seeds()
    ends = (evaluate_every, checkpoint_every)

    def evaluate(states, iteration: int) -> Evaluation | None:
        nonlocal best
        evaluation = experiment.evaluate(states, iteration)
        if evaluation is not None and is_lead_process():
            best = log_evaluation(logger, evaluation, iteration * steps, best)
        return evaluation

    def save(states, iteration: int) -> Path:
        record = {"script": script, "args": dataclasses.asdict(args), "run_name": run_name}
        record |= {"iteration": iteration, "step": iteration * steps, **experiment.header}
        record |= {"best_scores": best or None} if experiment.keep_best else {}
        return logger.save_checkpoint(iteration * steps, states, record, args.keep_checkpoints)

    iteration = first_iteration
    try:
        for first, chunk in chunks(first_iteration, total, args.log_every(), experiment.intervals_per_chunk, ends):
            states, records, seconds = runner(states, *run_inputs, np.int32(first), chunk)
            iteration = first + chunk.length
            logger.write_chunk(records, (first * steps, iteration * steps), seconds)
            stop = non_finite_stop(
                host_value(states.nan_step), labels, experiment.loss, experiment.step_unit, last_checkpoint,
                args.save_model,
            )  # fmt: skip
            if stop is not None:
                logger.close()
                raise stop
            evaluating = iteration % evaluate_every == 0 or iteration == total
            saving = args.save_model and (iteration % checkpoint_every == 0 or iteration == total)
            # a checkpoint comes before a long evaluation (Atari's games), which a kill then does not cost; one that
            # records the best scores so far comes after the evaluation it includes
            if evaluating and experiment.keep_best:
                evaluation = evaluate(states, iteration)
            if saving:
                last_checkpoint = save(states, iteration)
            if evaluating and not experiment.keep_best:
                evaluation = evaluate(states, iteration)
            logger.status(iteration * steps)
        if first_iteration == total and not experiment.keep_best:  # its final evaluation came after its checkpoint
            if is_lead_process():
                print(f"{run_name} has finished its {total * steps:,} steps: evaluating it again", flush=True)
            evaluation = evaluate(states, total)
    except KeyboardInterrupt:
        logger.close()  # what was logged reaches the disk
        # the newest on disk: an interrupted save may have written a new one and pruned the one it replaced
        saved = sorted(p for p in (logger.run_dir / "checkpoints").glob("step_*.eqx") if p.stem[5:].isdigit())
        last = str(saved[-1]) if saved else last_checkpoint
        kept = f"the last checkpoint is {last}" if last else "no checkpoint was saved"
        how = f"; continue with: python {script} --resume {last}" if last else ""
        raise Interrupted(f"{run_name} stopped after step {iteration * steps:,}: {kept}{how}") from None
    logger.close()
    result = {"states": states, "run_dir": logger.run_dir, "last_checkpoint": last_checkpoint, "scores": None}
    if evaluation is not None:
        _, scores = evaluation.headline_scores()
        result |= {"scores": scores, **(evaluation.details or {})}
        if is_lead_process():
            report(run_name, experiment, args, evaluation, best)
    elif is_lead_process() and first_iteration == total:
        print(f"{run_name} has finished its {total * steps:,} {experiment.step_unit}s: its scores are in its logs")
    elif is_lead_process():
        print(f"{run_name}: trained {total * steps:,} {experiment.step_unit}s per seed; nothing evaluated")
    return result | ({"best_scores": best or None} if experiment.keep_best else {})


def start_run(args: RunFlags, script: str) -> Start:
    """Everything before a device is touched: the resumed run's flags, the flag checks, the CPU split, the processes."""
    header = None
    if args.resume:
        args, header, _ = start_resume(
            args, script, lambda header, saved: resumed_iteration(header) * saved.steps_per_iteration()
        )
    check_flags(args)
    args = dataclasses.replace(args, cpu_devices=split_host_cpu(args.cpu_devices, args.num_runs(), args.num_processes))
    join_processes(args.num_processes, args.process_id, args.coordinator_address)
    mesh = seed_mesh(args.num_runs())
    announce_placement(mesh, args.num_runs())
    return Start(args, header, mesh)


def check_resumable(experiment: Experiment, header: dict, args: RunFlags, first_iteration: int) -> None:
    """What the checkpoint's run and this one must share beyond the flags (common.cli checks those)."""
    for key in experiment.same_on_resume:
        if key in header and header[key] != experiment.header[key]:
            now, then, name = experiment.header[key], header[key], key.replace("_", " ")
            raise UserError(f"{name}: {now} here, {then} in the run in {args.resume}; resume it on what it trained on")
    if experiment.whole_intervals and first_iteration % args.log_every():
        step = first_iteration * args.steps_per_iteration()
        raise UserError(f"--log-interval ({args.log_interval}) must divide the step this run resumes from ({step:,})")


def resumed_iteration(header: dict) -> int:
    """The iteration a checkpoint was saved at (misa's checkpoints before the harness recorded only the step)."""
    return header["iteration"] if "iteration" in header else header["step"]


def log_evaluation(logger: RunLogger, evaluation: Evaluation, step: int, best: list | None) -> list | None:
    """Write every run's scores at `step`; where best scores are kept (`best`: those so far, [] before the first),
    also each run's best headline score as eval/best_{name}. Returns the new best scores."""
    tag, headline = evaluation.headline_scores()
    name = tag.rpartition("/")[2]
    if best is not None:
        best = headline.tolist() if not best else np.maximum(best, headline).tolist()
    for index, writer in enumerate(logger.writers):
        for scores_tag, values in evaluation.scores.items():
            writer.add_scalar(scores_tag, values[index], step)
        if best is not None:
            writer.add_scalar(f"eval/best_{name}", best[index], step)
    logger.set_headline(tag, float(np.mean(headline)))
    return best


def report(run_name: str, experiment: Experiment, args: RunFlags, evaluation: Evaluation, best: list | None) -> None:
    """One line per configuration: the headline score's mean and spread over the seeds, and each seed's."""
    tag, headline = evaluation.headline_scores()
    seeds = args.seeds()
    for first in range(0, len(experiment.sub_runs), args.num_seeds):
        config = experiment.sub_runs[first].rpartition("/")[0]
        scores = np.asarray(headline[first : first + args.num_seeds], np.float64)
        label = experiment.score_label or f"last {tag.rpartition('/')[2]}"
        line = f"{run_name}{'/' + config if config else ''}: {label}: {scores.mean():.1f} ± "
        line += f"{scores.std():.1f} (seeds {seeds}: {np.round(scores, 1).tolist()})"
        if best is not None:
            line += f", best {np.mean(best[first : first + args.num_seeds]):.1f}"
        print(line)


class ChunkRunner:
    """Runs a jitted chunk function, compiled ahead of time once per chunk shape and input types: `runner(*args)`
    returns its (states, records) and the seconds the chunk ran, compilation excluded. `announce`: print a line when
    a chunk is compiled, and how long it took (off a terminal, where no progress bar shows the wait)."""

    def __init__(self, jitted: Callable, announce: bool = False):
        self.jitted, self.announce = jitted, announce
        self.compiled: dict = {}

    def compile(self, *args) -> Callable:
        """`jitted` compiled for `args`, whose last is static (a common.loop.Chunk, or a length)."""
        leaves, structure = jax.tree.flatten(args[:-1])
        # what the compiled program depends on: shapes, dtypes and each device's part (two shardings that split an
        # array the same way, such as replicated and seed-split on one device, share a program)
        avals = tuple(
            (
                x.shape,
                x.dtype,
                getattr(x, "weak_type", False),
                x.sharding.shard_shape(x.shape),
                frozenset(x.sharding.device_set),
            )
            if isinstance(x, jax.Array)
            else (np.shape(x), np.result_type(x))  # a host value (the same in every process)
            for x in leaves
        )
        key = (args[-1], structure, avals)
        if key not in self.compiled:
            began = time.perf_counter()
            if self.announce:
                print(f"compiling a chunk of {getattr(args[-1], 'length', args[-1]):,} iterations", flush=True)
            self.compiled[key] = self.jitted.lower(*args).compile()
            if self.announce:
                print(f"compiled in {time.perf_counter() - began:.1f} s", flush=True)
        return self.compiled[key]

    def __call__(self, *args) -> tuple[Any, Any, float]:
        compiled = self.compile(*args)
        began = time.perf_counter()
        result, records = compiled(*args[:-1])
        records = jax.tree.map(host_value, records)  # waits for the chunk; a gather every process takes part in
        return result, records, time.perf_counter() - began
