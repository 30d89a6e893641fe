import os
import subprocess
import sys
import tempfile
from pathlib import Path

# The tests build the same networks and loops many times (and in subprocesses): a persistent
# compilation cache, fresh for each session, compiles each of them once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="mirl-jax-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import jax  # after the cache settings above, which JAX reads when it is imported
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# JAX starts here, on this process's usual devices: the scripts' --cpu-devices 0 (their default) then leaves them
# as they are, so in-process runs do not split the CPU for the tests after them, whatever the order.
jax.devices()


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory) -> str:
    """A small Pendulum-v1 dataset of random play in D4RL's format, made by common.make_dataset (test_misa_d4rl
    uses its own, with an expert reference score)."""
    import common.make_dataset as make_dataset

    path = tmp_path_factory.mktemp("data") / "pendulum-random.hdf5"
    make_dataset.main(
        make_dataset.Args(env_id="Pendulum-v1", policy="random", num_steps=600, output=str(path), reference_episodes=1)
    )
    return str(path)


def run_sharded_and_single(probe: str, devices: int, tmp_path: Path) -> tuple[dict, dict]:
    """Run `probe` (Python source that passes `cpu_devices={cpu_devices}` to a script's Args, prints "devices
    D shards S" and writes its arrays to sys.argv[1]) in fresh processes run with --cpu-devices `devices` and
    1; each must shard its seeds over all the devices it sees. Returns the arrays of the sharded run and of
    the single-device one."""
    outputs = {}
    for count in (devices, 1):
        out = tmp_path / f"devices_{count}.npz"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        command = [sys.executable, "-c", probe.replace("{cpu_devices}", str(count)), str(out)]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"devices {count} shards {count}" in done.stdout
        outputs[count] = dict(np.load(out))
    return outputs[devices], outputs[1]


def assert_rows_close(sharded: dict, single: dict, names: tuple[str, ...], tolerance: float = 1e-3) -> None:
    """Each row (seed) of each named array agrees in relative norm: float32 rounding differs when XLA
    compiles a batch of fewer seeds per device."""
    for name in names:
        relative = np.linalg.norm(sharded[name] - single[name], axis=-1) / np.linalg.norm(single[name], axis=-1)
        assert (relative < tolerance).all(), (name, relative)


def leaves(tree) -> list[np.ndarray]:
    """Every array of a pytree as NumPy, typed PRNG keys as their key data (to compare runs exactly)."""
    return [
        np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
        for x in jax.tree.leaves(tree)
    ]


def scalars(run_dir: Path, seed: int) -> dict[str, list]:
    """The TensorBoard scalars one seed's sub-run logged: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / f"seed_{seed}"), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}
