"""Seeds on several devices: each device builds, restores and checks memory for its own seeds only."""

import json
import os
import subprocess
import sys

import jax
import pytest
from conftest import ROOT

from common.devices import InsufficientMemory, check_fits

PROBE = """
import json, resource, sys
import jax, jax.numpy as jnp, numpy as np
from common.checkpoint import init_or_restore, save_checkpoint
from common.devices import seed_mesh, seed_sharding, shard_seeds
from common.sweep import grid_runs
import mirl_gymnax as mg

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()

def peak_since(begin):
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
    return peak - begin

def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

args = mg.Args(num_seeds=4, buffer_size=1_000_000, total_timesteps=20_000)
env, env_params = mg.make_env(args.env_id)
hypers = mg.stacked_hypers(grid_runs(args, mg.SWEPT_FLAGS))
init = lambda keys: jax.vmap(mg.make_train(args, env, env_params).init)(keys, hypers)
mesh = seed_mesh(4)
sharding = seed_sharding(mesh)
keys = shard_seeds(jax.vmap(jax.random.key)(jnp.arange(4)), mesh)
array_bytes = [x.size * x.dtype.itemsize for x in jax.tree.leaves(jax.eval_shape(init, keys).replay)]
replay_bytes = sum(array_bytes)
print(json.dumps({"stage": "largest", "peak": max(array_bytes) / replay_bytes, "rows": {}}))

def report(stage, begin, states):
    rows = {}
    for array in jax.tree.leaves(states.replay):
        for shard in array.addressable_shards:
            rows.setdefault(str(shard.device), []).append(shard.data.shape[0])
    print(json.dumps({"stage": stage, "peak": peak_since(begin) / replay_bytes, "rows": rows}))

jax.block_until_ready(init_or_restore(init, None, keys, sharding=sharding))  # compiled once, then measured
reset_peak(); begin = rss()
states = jax.block_until_ready(init_or_restore(init, None, keys, sharding=sharding))
report("init", begin, states)
save_checkpoint(sys.argv[1], states, {})
del states
reset_peak(); begin = rss()
states = jax.block_until_ready(init_or_restore(init, sys.argv[1], keys, sharding=sharding))
report("restore", begin, states)
# written one device's part at a time, the file is the one the same arrays on one device make
save_checkpoint(sys.argv[1] + ".sharded", states, {})
save_checkpoint(sys.argv[1] + ".one_device", jax.device_put(states, jax.devices()[0]), {})
same = open(sys.argv[1] + ".sharded", "rb").read() == open(sys.argv[1] + ".one_device", "rb").read()
print(json.dumps({"stage": "same file", "peak": float(same), "rows": {}}))
"""


def test_each_device_builds_and_restores_only_its_seeds_within_the_memory_bound(tmp_path):
    """4 seeds with 41 MB replays on 4 CPU devices (which live in host memory): after init and after restoring
    a checkpoint each device holds one seed's buffers. The peak host memory added is at most 1.1× the replays'
    size when building (measured 0.98; building every seed in one place and splitting afterwards, as the kit
    did, measured 1.2–2.0× in development and fails this), and the replays plus their largest array when
    restoring, read one device's part at a time (measured 1.27–1.32 against a bound of 1.44; reading each
    array whole before placing it, as the kit did, measured 1.44–1.56)."""
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT)
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "state.eqx")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reports = {r["stage"]: r for r in map(json.loads, done.stdout.splitlines())}
    for stage in ("init", "restore"):  # each device holds one row (seed) of each replay array
        rows = reports[stage]["rows"]
        assert len(rows) == 4 and all(held == [1] * 5 for held in rows.values()), (stage, rows)
    largest = reports["largest"]["peak"]  # the largest array's share of the replays
    assert reports["init"]["peak"] <= 1.1, reports
    assert reports["restore"]["peak"] <= 1.05 + largest, reports  # one device's part of one array at a time
    assert reports["same file"]["peak"] == 1.0


def test_memory_is_checked_per_accelerator():
    """Accelerators that report their memory are each checked for their share, and the message names the
    device that is short and the share it needs."""

    class FakeGpu:
        platform = "gpu"
        process_index = 0

        def __init__(self, name, free):
            self.name, self.free = name, free

        def memory_stats(self):
            return {"bytes_limit": self.free + 2**30, "bytes_in_use": 2**30}

        def __str__(self):
            return self.name

    devices = [FakeGpu("gpu:0", 8 * 2**30), FakeGpu("gpu:1", 3 * 2**30)]
    check_fits("replays", 6 * 2**30, devices, "lower it")  # 3 GiB each
    with pytest.raises(
        InsufficientMemory,
        match=r"replays needs 4\.00 GiB on each of 2 gpu device\(s\), but gpu:1 "
        r"has only 3\.00 GiB free \(1 of them short\); lower it",
    ):
        check_fits("replays", 8 * 2**30, devices, "lower it")


def test_cpu_devices_share_the_host_memory():
    with pytest.raises(InsufficientMemory, match="of host memory is free"):
        check_fits("a huge thing", 2**50, jax.devices(), "lower it")
