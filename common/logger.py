"""TensorBoard logging for vmapped seeds, fed with the records a jitted training chunk returns (common.experiment
compiles and runs the chunks; this module only writes).

One sub-run per seed under `runs/{run_name}/seed_{seed}` (in a sweep, `runs/{run_name}/{configuration}/seed_{seed}`),
so that TensorBoard overlays the seeds and `common.plot` can aggregate them. Values are reduced on the device over a
fixed interval into one Record per interval, and a chunk returns its Records stacked (common.loop.scan_logged); a NaN
value means "nothing to report" (for example no episode ended during the interval) and is not written.
"""

import dataclasses
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tensorboardX import SummaryWriter
from tqdm import tqdm

from common.checkpoint import save_run_checkpoint
from common.devices import agreed_time, is_lead_process


class Record(NamedTuple):
    """What one logging interval reports: the environment (or gradient) step it ends at, `scalars[tag]` with one
    value per run and `bar_charts[tag]` with one row of non-negative weights per run. A chunk's records come
    stacked on a leading axis of intervals."""

    step: jax.Array
    scalars: dict[str, jax.Array]
    bar_charts: dict[str, jax.Array]


def make_run_name(env_id: str, exp_name: str, seed: int, runs: Path = Path("runs")) -> str:
    """CleanRL's run name (the time is process 0's in every process); env ids with slashes (Minari) become one
    directory level. Process 0 claims the run's folder in `runs` by making it: a run started in the same second as
    another of the same name (a loop over flags) takes the next second whose folder it could make, rather than
    writing into that run's folder."""
    prefix = f"{env_id.replace('/', '-')}__{exp_name}__{seed}__"

    def claim(seconds: int) -> bool:
        try:
            (runs / f"{prefix}{seconds}").mkdir(parents=True)
        except FileExistsError:
            return False
        return True

    return prefix + str(agreed_time(claim))


def seed_sub_runs(seeds: list[int]) -> list[str]:
    """The sub-run of each seed: `seed_{seed}`."""
    return [f"seed_{seed}" for seed in seeds]


def hyperparameter_table(flags: Any) -> str:
    """A markdown table of `flags` (an object's attributes, or a dict), one row per flag."""
    rows = "\n".join(f"|{key}|{value}|" for key, value in (flags if isinstance(flags, dict) else vars(flags)).items())
    return f"|param|value|\n|-|-|\n{rows}"


def drain(writer: SummaryWriter) -> bool:
    """Write what `writer` has queued into its event file and flush that file to disk, keeping it open: the
    background thread that writes the queue is stopped once it has written all of it (tensorboardX's own stop),
    then a new one started. False, having done nothing, where tensorboardX's internals are not those known here."""
    from tensorboardX import event_file_writer

    events = getattr(getattr(writer, "file_writer", None), "event_writer", None)
    known = ("_worker", "_ev_writer", "_event_queue", "_flush_secs", "_closed")
    if not all(hasattr(events, name) for name in known) or not hasattr(event_file_writer, "_EventLoggerThread"):
        return False
    if events._closed or events._worker is None:
        return False
    events._worker.stop()
    events._ev_writer.flush()
    worker = event_file_writer._EventLoggerThread(events._event_queue, events._ev_writer, events._flush_secs)
    worker.start()  # started before the writer holds it: an interrupt between the two leaves no unstarted thread
    events._worker = worker
    return True


class RunLogger:
    """TensorBoard writers, one per sub-run (a path under the run directory: see seed_sub_runs), progress (a bar
    on a terminal, a status line every `status_every` seconds elsewhere: nohup, SLURM, CI; None: none), and
    steps-per-second bookkeeping."""

    def __init__(
        self,
        run_dir: Path,
        args: Any,
        sub_runs: list[str],
        total_steps: int,
        first_step: int,
        status_every: float | None = 30.0,
        experiment: dict | None = None,
    ):
        self.run_dir, self.sub_runs, self.table = run_dir, sub_runs, hyperparameter_table(args)
        # what makes the run's experiment: the flags that change what it learns (common.plot pools by them)
        self.experiment_table = hyperparameter_table(experiment) if experiment is not None else None
        self._writers: list[SummaryWriter] | None = None
        self._files = 0  # event files opened per sub-run so far (a new one after every flush)
        # progress and logs are process 0's to show and write (common.devices.is_lead_process)
        quiet = None if is_lead_process() else True
        self.progress = tqdm(total=total_steps, initial=first_step, unit="step", dynamic_ncols=True, disable=quiet)
        self.status_every = status_every if self.progress.disable and is_lead_process() else None
        self.total_steps = total_steps
        self.last_status = time.perf_counter()
        self.started: tuple[int, float] | None = None  # (step, time) when the first chunk started
        self.headline: tuple[str, float] | None = None  # the latest result to show: (name, value)
        self.sps: float | None = None  # the last chunk's training speed

    @property
    def writers(self) -> list[SummaryWriter]:
        """One writer per sub-run, opened on first use: a run that fails before it logs leaves no run folder."""
        if self._writers is None:
            # numbered, so that files opened within the same second (where flush could not drain) neither collide
            # nor sort out of order
            suffix = f".{self._files:05d}"
            self._writers = [
                SummaryWriter(str(self.run_dir / sub_run), filename_suffix=suffix) for sub_run in self.sub_runs
            ]
            if self._files == 0:
                for writer in self._writers:
                    writer.add_text("hyperparameters", self.table)
                    if self.experiment_table is not None:
                        writer.add_text("experiment", self.experiment_table)
            self._files += 1
        return self._writers

    def flush(self):
        """Put every logged value on disk, in the event files already open (one per sub-run for the whole run).
        tensorboardX's own flush does not wait for the events its background thread has not yet written, and its
        close opens a new file on the next write; `drain` does both. Where tensorboardX's internals differ from
        what drain knows, the writers are closed instead (which waits) and reopened, in new files, on the next
        write."""
        writers = self._writers or []
        if not all(drain(writer) for writer in writers):
            for writer in writers:
                writer.close()
            self._writers = None

    def save_checkpoint(self, step: int, tree: Any, header: dict, keep: int) -> Path:
        """Flush the logs, then write the run's checkpoint (common.checkpoint.save_run_checkpoint): the curves of
        a run killed at any moment reach at least the checkpoint it resumes from."""
        self.flush()
        return save_run_checkpoint(self.run_dir, step, tree, header, keep)

    def set_headline(self, name: str, value: float):
        """The latest result, shown beside the progress bar or in the status line."""
        self.headline = (name, value)
        self.progress.set_postfix({name: f"{value:.1f}"}, refresh=False)

    def status(self, step: int):
        """Off a terminal, one line with the step, the last chunk's SPS, the latest score and the ETA, at most every
        status_every seconds: after the chunk's evaluation, so that the score shown is the newest."""
        sps = self.sps
        now = time.perf_counter()
        if self.status_every is None or now - self.last_status < self.status_every:
            return
        self.last_status = now
        parts = [f"step {step:,}/{self.total_steps:,} ({100 * step / self.total_steps:.0f}%)"]
        if sps is not None:
            parts.append(f"{sps:,.0f} SPS")
        if self.headline is not None:
            parts.append(f"{self.headline[0]} {self.headline[1]:.1f}")
        if self.started is not None and step > self.started[0]:
            remaining = (now - self.started[1]) / (step - self.started[0]) * (self.total_steps - step)
            parts.append(f"ETA {format_duration(remaining)}")
        print(" | ".join(parts), flush=True)

    @property
    def announces_compiles(self) -> bool:
        """Whether compilations should be announced: off a terminal, where no progress bar shows the wait."""
        return self.status_every is not None

    def write_chunk(self, records: Record, steps: tuple[int, int], seconds: float):
        """Write a training chunk's records (stacked over its logging intervals, on the host) with the chunk's speed:
        it ran from step `steps[0]` to `steps[1]` in `seconds` (training only: not compilation, nor the evaluations
        and checkpoints between chunks), and advance the progress bar; the status line is the caller's, after the
        chunk's evaluation (`status`)."""
        if self.started is None:
            self.started = (steps[0], time.perf_counter() - seconds)
        sps = (steps[1] - steps[0]) / seconds
        if is_lead_process():
            for index, step in enumerate(records.step):
                scalars = {tag: values[index] for tag, values in records.scalars.items()}
                bar_charts = {tag: weights[index] for tag, weights in records.bar_charts.items()}
                self.write(int(step), scalars, bar_charts, sps=sps)
        self.progress.update(steps[1] - self.progress.n)
        self.sps = sps

    def write(
        self,
        step: int,
        scalars: dict[str, np.ndarray],
        bar_charts: dict[str, np.ndarray] | None = None,
        sps: float | None = None,
    ):
        """`scalars[tag]` has one value per run; `bar_charts[tag]` one row of non-negative weights per run.
        NaN (a scalar, or any weight of a row) means nothing to report for that run."""
        if sps is not None:
            scalars = {**scalars, "charts/SPS": np.full(len(self.writers), sps)}
        for index, writer in enumerate(self.writers):
            for tag, values in scalars.items():
                if np.isfinite(values[index]):
                    writer.add_scalar(tag, float(values[index]), step)
            for tag, weights in (bar_charts or {}).items():
                if np.isfinite(weights[index]).all():
                    add_bar_chart(writer, tag, weights[index], step)
        episodic = scalars.get("charts/episodic_return")
        if episodic is not None and np.isfinite(episodic).any():
            self.set_headline("episodic_return", float(np.nanmean(episodic)))

    def close(self):
        self.progress.close()
        for writer in self._writers or []:
            writer.close()


def format_duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h07m`."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def add_bar_chart(writer: SummaryWriter, tag: str, weights: np.ndarray, step: int):
    """A categorical distribution as a TensorBoard histogram with one unit-wide bucket per category."""
    categories = np.arange(len(weights))
    writer.add_histogram_raw(
        tag,
        min=-0.5,
        max=len(weights) - 0.5,
        num=float(weights.sum()),
        sum=float((categories * weights).sum()),
        sum_squares=float((categories**2 * weights).sum()),
        bucket_limits=(categories + 0.5).tolist(),
        bucket_counts=weights.tolist(),
        global_step=step,
    )


def live_seeds_only(nan_step: jax.Array, metrics: Any) -> Any:
    """`metrics` (arrays with the seeds on their leading axis) with NaN for the seeds whose loss has gone non-finite
    (`nan_step` ≥ 0; the logger writes nothing for NaN): their learner no longer counts, and their curves end where
    the run will stop."""
    dead = nan_step >= 0
    return jax.tree.map(lambda x: jnp.where(dead.reshape((-1,) + (1,) * (x.ndim - 1)), jnp.nan, x), metrics)


def start_tracking(args: Any, run_name: str, project: str, entity: str | None) -> None:
    """`--track`: mirror the TensorBoard logs to Weights & Biases (wandb must be installed)."""
    try:
        import wandb
    except ImportError as error:
        raise SystemExit("--track needs Weights & Biases: pip install wandb") from error
    wandb.init(
        project=project,
        entity=entity,
        sync_tensorboard=True,
        config=dataclasses.asdict(args),
        name=run_name,
        save_code=True,
    )
