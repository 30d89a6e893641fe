"""What the study commands share (minatar_study.py, redundancy_study.py, beta_scale_study.py): each part of a study
is a `mirl_gymnax.py` run made in this process, with checkpoints, so that running a study's command again continues
it: parts that finished are skipped, and an interrupted part resumes from its last checkpoint. Runs made with other
flags (another budget, other seeds) are other experiments: they are neither continued nor counted."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import tyro


def latest_checkpoint(env_id: str, experiment: str, flags: list[str]) -> Path | None:
    """The newest checkpoint of this experiment's newest run made with exactly these flags."""
    import mirl_gymnax
    from common.checkpoint import read_header

    wanted = json.loads(json.dumps(dataclasses.asdict(tyro.cli(mirl_gymnax.Args, args=flags))))  # as headers hold it
    ignored = {"resume": None} | ({"cpu_devices": 0} if wanted["cpu_devices"] == 0 else {})  # 0: the run's own
    # a flag added after a run was made is at its default there: the kit's new flags default to what it did before
    # (tests/test_behaviour.py shows it), so a finished part is found again; an unfinished one cannot resume (the
    # state's layout changed with them) and the checkpoint says so
    defaults = json.loads(json.dumps(dataclasses.asdict(mirl_gymnax.Args())))
    found = []
    for run_dir in sorted(Path("runs").glob(f"{env_id}__{experiment}__*"), key=lambda p: int(p.name.split("__")[-1])):
        checkpoints = sorted(run_dir.glob("checkpoints/step_*.eqx"))
        saved = read_header(checkpoints[-1])["args"] if checkpoints else {}
        if saved and {**defaults, **saved, **ignored} == {**wanted, **ignored}:
            found.append(checkpoints[-1])
    return found[-1] if found else None


def evaluated(run_dir: Path) -> bool:
    """Every seed of the run logged its final evaluation."""
    from common.plot import read_scalars, seed_dirs

    return all(len(read_scalars(sub_run, "eval/episodic_return")[0]) for sub_run in seed_dirs(run_dir))


def train(argv: list[str]) -> Path:
    """One mirl_gymnax.py run, in this process; its run directory."""
    import mirl_gymnax
    from common.cli import parse

    return mirl_gymnax.main(parse(mirl_gymnax.Args, mirl_gymnax.SCRIPT, argv))["run_dir"]


def run_or_continue(env_id: str, experiment: str, flags: list[str], steps: int) -> Path:
    """The run directory of one part of a study (`flags` name its --env-id and --exp-name): finished before,
    finished now from its last checkpoint (the last one of a finished run: only its evaluation is left), or run
    from the start."""
    checkpoint = latest_checkpoint(env_id, experiment, flags)
    if checkpoint is not None:
        run_dir = checkpoint.parents[1]
        if checkpoint.name == f"step_{steps:09d}.eqx" and evaluated(run_dir):
            print(f"{env_id} {experiment}: done, {run_dir}")
            return run_dir
        print(f"{env_id} {experiment}: resuming {checkpoint}")
        return train(["--resume", str(checkpoint)])
    print(f"{env_id} {experiment}: starting")
    return train(flags)


def iqm_interval(scores: list[float], reps: int) -> tuple[float, float, float]:
    """The IQM of one environment's seed scores and its 95% bootstrap interval (rliable, as common.aggregate)."""
    from rliable import library as rly
    from rliable import metrics

    np.random.seed(0)  # rliable draws from NumPy's global generator
    point, interval = rly.get_interval_estimates({"x": np.asarray(scores)[:, None]}, metrics.aggregate_iqm, reps=reps)
    (point,), (low, high) = np.ravel(point["x"]), np.ravel(interval["x"])
    return float(point), float(low), float(high)


def save_figure(figure, path: str) -> None:
    """Write a study's figure, its folder made where missing, and say where."""
    import matplotlib.pyplot as plt

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    print(f"wrote {path}")
