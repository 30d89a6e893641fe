"""Record what small runs of the three scripts compute, to show that a change of layout changes no number.

Each run below is started on the command line, as a user starts it, in a scratch folder; the record keeps its last
checkpoint's arrays (parameters, optimisers, replay, ρ, β, RNG: every leaf, in file order) and every scalar it logged
to TensorBoard except the timings. Only the command line and the file formats are relied on, so the same record can be
made from any commit of the kit:

    python tests/behaviour_record.py --out before.json                      # this checkout
    git worktree add /tmp/before <commit>
    python tests/behaviour_record.py --checkout /tmp/before --out before.json
    python tests/behaviour_record.py --checkout /tmp/before --into tests/reference/behaviour.json  # this machine kind's

The record holds each array's SHA-256 with its shape, dtype and sum (the arrays themselves, replay buffers included,
would be tens of MB). tests/test_behaviour.py compares this checkout's record bit for bit with the record in
tests/reference/behaviour.json of this machine kind: each record names its CPU, core count and JAX version, on which
XLA's float32 rounding depends. `--into` adds this machine kind's record to that file (replacing an earlier one).
"""

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

GYMNAX_TINY = (
    "--total-timesteps 6000 --num-envs 4 --buffer-size 1000 --learning-starts 400 --batch-size 32 "
    "--target-network-frequency 200 --log-interval 400 --checkpoint-interval 2000 --eval-episodes 2 "
    "--save-model --keep-checkpoints 0"
)
# name: (script, flags); misa's runs also get --dataset-path
RUNS = {
    "gymnax_mirl_2_seeds": ("mirl_gymnax.py", f"{GYMNAX_TINY} --num-seeds 2 --cpu-devices 2 --train-frequency 4"),
    "gymnax_dqn_minatar_1_seed": (  # the one-seed path, the MinAtar CNN, two gradient steps per learning phase
        "mirl_gymnax.py",
        f"{GYMNAX_TINY} --algo dqn --env-id Breakout-MinAtar --train-frequency 2",
    ),
    "gymnax_sql_sweep": (
        "mirl_gymnax.py",
        f"{GYMNAX_TINY} --algo sql --env-id Acrobot-v1 --learning-rate 1e-3 2.5e-4 --cpu-devices 1 --train-frequency 4",
    ),
    "atari_mirl": (
        "mirl_atari.py",
        "--env-id Pong-v5 --total-timesteps 640 --num-envs 2 --buffer-size 64 --learning-starts 32 --batch-size 4 "
        "--train-frequency 2 --target-network-frequency 16 --log-interval 16 --checkpoint-interval 320 "
        "--eval-interval 320 --eval-episodes 1 --max-episode-steps 64 --save-model --keep-checkpoints 0",
    ),
    "misa": (
        "misa_d4rl.py",
        "--env-id pendulum-random --total-steps 40 --eval-interval 20 --log-interval 5 --eval-episodes 2 "
        "--hidden-size 16 --batch-size 16 --num-action-samples 4 --hmc-burn-in 1 --hmc-samples 3 --num-seeds 2 "
        "--cpu-devices 1 --save-model --keep-checkpoints 0",
    ),
    "misa_cql_lagrange": (
        "misa_d4rl.py",
        "--env-id pendulum-random --variant cql --lagrange True --total-steps 30 --eval-interval 30 --log-interval 10 "
        "--eval-episodes 1 --hidden-size 16 --batch-size 16 --num-action-samples 4 --save-model",
    ),
}
UNTIMED = ("charts/SPS",)  # logged values that measure the machine, not the run


def fingerprint() -> str:
    """What XLA's float32 rounding depends on besides the code: the CPU, the cores JAX splits over, the versions."""
    import jax
    import jaxlib

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu} | {platform.machine()} | {os.cpu_count()} cores | jax {jax.__version__} jaxlib {jaxlib.__version__}"


def checkpoint_leaves(path: Path) -> list[np.ndarray]:
    """Every array of a kit checkpoint, in file order: a JSON header line, then .npy leaves back to back."""
    arrays = []
    with open(path, "rb") as f:
        f.readline()
        while f.peek(1)[:1]:
            arrays.append(np.lib.format.read_array(f))
    return arrays


def logged_scalars(run_dir: Path) -> dict[str, np.ndarray]:
    """{sub-run/tag: [[step, value], ...]} of every TensorBoard scalar under `run_dir`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves = {}
    for events in sorted({path.parent for path in run_dir.rglob("events.out.tfevents.*")}):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            if tag not in UNTIMED:
                points = [(e.step, e.value) for e in accumulator.Scalars(tag)]
                curves[f"{events.relative_to(run_dir)}/{tag}"] = np.asarray(points, np.float64)
    return curves


def make_dataset(checkout: Path, folder: Path) -> Path:
    path = folder / "pendulum-random.hdf5"
    command = [sys.executable, "-m", "common.make_dataset", "--env-id", "Pendulum-v1", "--policy", "random"]
    command += ["--num-steps", "600", "--reference-episodes", "1", "--seed", "0", "--output", str(path)]
    subprocess.run(command, cwd=checkout, check=True, capture_output=True)
    return path


def record(checkout: Path = ROOT, names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Run each of RUNS (or those named) with `checkout`'s scripts; returns {run/what: array}."""
    arrays = {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        dataset = make_dataset(checkout, scratch)
        for name, (script, flags) in RUNS.items():
            if names is not None and name not in names:
                continue
            work = scratch / name
            work.mkdir()
            argv = [sys.executable, str(checkout / script), *flags.split()]
            argv += ["--dataset-path", str(dataset)] if script == "misa_d4rl.py" else []
            environment = dict(os.environ, PYTHONPATH=str(checkout))
            done = subprocess.run(argv, cwd=work, env=environment, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
            (run_dir,) = (work / "runs").iterdir()
            final = sorted((run_dir / "checkpoints").glob("step_*.eqx"))[-1]
            for index, leaf in enumerate(checkpoint_leaves(final)):
                arrays[f"{name}/checkpoint/{index:03d}"] = leaf
            for curve, points in logged_scalars(run_dir).items():
                arrays[f"{name}/logged/{curve}"] = points
            header = json.loads(final.read_bytes().split(b"\n", 1)[0])
            arrays[f"{name}/final_step"] = np.asarray(header.get("iteration", header.get("step")))
    return arrays


def digest(array: np.ndarray) -> dict:
    """What identifies an array bit for bit, and what says how far apart two are when they differ."""
    array = np.ascontiguousarray(array)
    summary = float(array.astype(np.float64).sum()) if array.dtype.kind in "biuf" else None
    return {
        "sha256": hashlib.sha256(array.tobytes()).hexdigest(),
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "sum": summary,
    }


def commit_of(checkout: Path) -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True)
    return done.stdout.strip() or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the kit's folder whose scripts run")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="the .json to write")
    target.add_argument("--into", type=Path, help="the records file to add this machine kind's record to")
    parser.add_argument("--runs", nargs="*", help=f"only these of {', '.join(RUNS)}")
    options = parser.parse_args()
    checkout = options.checkout.resolve()
    arrays = record(checkout, tuple(options.runs) if options.runs else None)
    summary = {
        "fingerprint": fingerprint(),
        "commit": commit_of(checkout),
        "arrays": {name: digest(array) for name, array in arrays.items()},
    }
    if options.out:
        options.out.write_text(json.dumps(summary, indent=0) + "\n")
    else:
        if options.runs:
            parser.error("--into takes a record of every run")
        records = json.loads(options.into.read_text())["records"] if options.into.exists() else []
        records = [record for record in records if record["fingerprint"] != summary["fingerprint"]] + [summary]
        options.into.write_text(json.dumps({"records": records}, indent=0) + "\n")
    where = options.out or options.into
    print(f"{len(arrays)} arrays from {len(options.runs or RUNS)} runs at {summary['commit']} written to {where}")


if __name__ == "__main__":
    main()
