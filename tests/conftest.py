import os
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The tests build the same networks and loops many times (and in subprocesses): a persistent
# compilation cache, fresh for each session, compiles each of them once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="mirl-jax-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


def run_on_cpu_devices(probe: str, devices: int, out: Path) -> str:
    """Run `probe` (Python source that writes its arrays to sys.argv[1]) in a fresh process that sees
    `devices` CPU devices; returns its stdout. Fails the test with its stderr if it fails."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", probe, str(out)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


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
