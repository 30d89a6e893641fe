import os
import subprocess
import sys
import tempfile
from pathlib import Path

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
