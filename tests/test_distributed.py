"""Seeds across processes (jax.distributed): mirl_gymnax.py and misa_d4rl.py in 2 processes of 2 CPU devices
each, talking over 127.0.0.1, against one process of 4 devices; each process saves and restores its own seeds'
checkpoint file."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import ROOT, assert_rows_close, scalars

TINY_FLAGS = [
    *("--total-timesteps", "2000", "--num-envs", "4", "--buffer-size", "1000", "--learning-starts", "400"),
    *("--batch-size", "32", "--train-frequency", "4", "--target-network-frequency", "200", "--log-interval", "200"),
    *("--checkpoint-interval", "1000", "--eval-episodes", "2", "--alpha-rho", "1e-3", "--alpha-beta", "1e-2"),
    *("--num-seeds", "4", "--save-model", "--keep-checkpoints", "0"),
]

# one process's part: the command line's run, then (process 0) every seed's arrays gathered from all processes
PROBE = """
import sys, numpy as np, jax
from jax.experimental import multihost_utils
from common.cli import parse
from mirl_gymnax import SCRIPT, Args, main
result = main(parse(Args, SCRIPT, sys.argv[2:]))
states = result["states"]
params = jax.tree.leaves(states.params)
arrays = {"actions": states.replay.actions, "obs": states.replay.obs, "beta": states.beta[:, None],
          "prior": states.prior, "params": jax.numpy.concatenate([x.reshape(4, -1) for x in params], axis=1)}
arrays = {name: multihost_utils.process_allgather(x, tiled=True) for name, x in arrays.items()}
print("process", jax.process_index(), "of", jax.process_count(), "devices", len(jax.devices()), flush=True)
if jax.process_index() == 0:
    np.savez(sys.argv[1], eval_returns=result["eval_returns"], run_dir=str(result["run_dir"]), **arrays)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MISA_PROBE = """
import sys, numpy as np, jax
from jax.experimental import multihost_utils
from common.cli import parse
from misa_d4rl import SCRIPT, Args, main
result = main(parse(Args, SCRIPT, sys.argv[2:]))
policy = jax.numpy.concatenate([x.reshape(4, -1) for x in jax.tree.leaves(result["states"].params.policy)], axis=1)
policy = multihost_utils.process_allgather(policy, tiled=True)
print("process", jax.process_index(), "of", jax.process_count(), "devices", len(jax.devices()), flush=True)
if jax.process_index() == 0:
    np.savez(sys.argv[1], policy=policy, scores=result["scores"], run_dir=str(result["run_dir"]))
"""


def run(out: Path, processes: int, devices_each: int, cwd: Path, *flags: str, probe: str = PROBE) -> dict:
    """The probe in `processes` processes of `devices_each` CPU devices; process 0's arrays."""
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_each}",
        PYTHONPATH=str(ROOT),
    )
    distributed = ["--num-processes", str(processes), "--coordinator-address", f"127.0.0.1:{free_port()}"]
    commands = [
        [
            sys.executable,
            "-c",
            probe,
            str(out),
            *flags,
            *(distributed + ["--process-id", str(p)] if processes > 1 else []),
        ]
        for p in range(processes)
    ]
    children = [
        subprocess.Popen(c, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in commands
    ]
    for p, child in enumerate(children):
        stdout, stderr = child.communicate(timeout=600)
        assert child.returncode == 0, stderr[-3000:]
        assert f"process {p} of {processes} devices {processes * devices_each}" in stdout
    return dict(np.load(out))


def test_two_processes_train_each_seed_as_one_process_does_and_resume_from_their_own_files(tmp_path):
    two = run(tmp_path / "two.npz", 2, 2, tmp_path, *TINY_FLAGS)
    one = run(tmp_path / "one.npz", 1, 4, tmp_path, *TINY_FLAGS)
    # the same seeds on the same per-device batches: the same trajectories and learners
    np.testing.assert_array_equal(two["actions"], one["actions"])
    np.testing.assert_array_equal(two["obs"], one["obs"])
    assert_rows_close(two, one, ("beta", "prior", "params"))
    np.testing.assert_array_equal(two["eval_returns"], one["eval_returns"])

    # process 0 logged every seed, once; each process saved its own seeds' file
    run_dir = tmp_path / str(two["run_dir"])
    for seed in (1, 2, 3, 4):
        assert len(scalars(run_dir, seed)["charts/epsilon"]) == 2000 // 200
    checkpoints = sorted(path.name for path in (run_dir / "checkpoints").iterdir())
    assert checkpoints == [
        "step_000001000.eqx", "step_000001000.eqx.process1", "step_000002000.eqx", "step_000002000.eqx.process1"
    ]  # fmt: skip

    # a checkpoint of 2 processes' seeds cannot be resumed by one, which holds one file
    first_checkpoint = str(run_dir / "checkpoints" / "step_000001000.eqx")
    refused = subprocess.run(
        [sys.executable, str(ROOT / "mirl_gymnax.py"), "--resume", first_checkpoint, "--num-processes", "1"],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
    )  # fmt: skip
    assert (
        refused.returncode == 1 and "saved by 2 processes" in refused.stderr and "--num-processes 2" in refused.stderr
    )

    # both resume from step 1000, each from its own file, to the uninterrupted numbers
    resumed = run(tmp_path / "resumed.npz", 2, 2, tmp_path, "--resume", first_checkpoint)
    for name in ("actions", "obs", "beta", "prior", "params", "eval_returns"):
        np.testing.assert_array_equal(resumed[name], two[name])


def test_misa_in_two_processes_trains_each_seed_as_one_process_does(tmp_path, dataset_path):
    """Process 0 evaluates every seed's policy, gathered from both processes; the evaluation returns agree to
    float32 rounding (the policies' last bits differ as the learners' do)."""
    flags = [
        *(
            "--env-id",
            "pendulum-random",
            "--dataset-path",
            dataset_path,
            "--total-steps",
            "20",
            "--eval-interval",
            "10",
        ),
        *("--log-interval", "5", "--eval-episodes", "2", "--hidden-size", "16", "--batch-size", "16"),
        *("--num-action-samples", "4", "--hmc-burn-in", "1", "--hmc-samples", "3", "--num-seeds", "4"),
        *("--save-model", "--keep-checkpoints", "0"),
    ]
    two = run(tmp_path / "two.npz", 2, 2, tmp_path, *flags, probe=MISA_PROBE)
    one = run(tmp_path / "one.npz", 1, 4, tmp_path, *flags, probe=MISA_PROBE)
    assert_rows_close(two, one, ("policy",))
    np.testing.assert_allclose(two["scores"], one["scores"], rtol=1e-3)
    run_dir = tmp_path / str(two["run_dir"])
    for seed in (1, 2, 3, 4):
        assert [step for step, _ in scalars(run_dir, seed)["eval/episodic_return"]] == [10, 20]
    resumed = run(
        tmp_path / "resumed.npz", 2, 2, tmp_path, "--resume", str(run_dir / "checkpoints" / "step_000000010.eqx"),
        probe=MISA_PROBE,
    )  # fmt: skip
    np.testing.assert_array_equal(resumed["policy"], two["policy"])
    np.testing.assert_array_equal(resumed["scores"], two["scores"])
