"""Placing vmapped seeds on devices (of one process, or of several through jax.distributed), and refusing
allocations that cannot fit."""

import os
import time
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from common.errors import UserError

SEED_AXIS = "seeds"
T = TypeVar("T")


def join_processes(num_processes: int, process_id: int | None, coordinator_address: str | None) -> None:
    """Join JAX's multi-controller runtime (jax.distributed) when several processes train the seeds together,
    before anything touches a device; from then on jax.devices() lists every process's devices. Values left
    None are detected by JAX where it knows the cluster (SLURM, Open MPI)."""
    if num_processes == 1 or jax.distributed.is_initialized():  # (a library caller may run main twice)
        return
    # the records each chunk gathers for process 0 cross processes: CPU devices need gloo for that
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)


CHOOSE_CPU_DEVICES = 0  # --cpu-devices 0: one device per core, as the runs divide
XLA_DEVICE_COUNT_FLAG = "xla_force_host_platform_device_count"


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity where the OS reports it (taskset, SLURM, cpusets; CPU
    quotas, as a container's --cpus sets them, are not seen)."""
    if hasattr(os, "process_cpu_count"):  # Python 3.13+
        return os.process_cpu_count() or 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_devices_for(runs: int, cores: int) -> int:
    """The most devices, at most one per core, over which `runs` divide evenly (1 for a single run)."""
    return max(count for count in range(1, min(runs, cores) + 1) if runs % count == 0)


def split_host_cpu(requested: int, runs: int, num_processes: int = 1) -> int:
    """--cpu-devices: split this host's CPU into JAX devices over which the `runs` (seeds) are sharded, so that
    each device runs its seeds on its own thread (one XLA:CPU device leaves cores idle on small networks). It
    must happen before JAX starts its backends. 1 splits nothing: JAX's CPU devices stay as they are (one, or
    as XLA_FLAGS or JAX_NUM_CPU_DEVICES set them).

    `requested` 0 (the default) chooses cpu_devices_for(runs, usable_cores()), and splits nothing where the
    split is not the kit's to make: several processes, a device count the environment already sets, a caller
    that has already started JAX. Returns the count to record with the run, so that a resume splits the same
    way (float32 rounding depends on it): 1 where nothing was split, or where the seeds run on an accelerator."""
    started = backends_started()
    if requested == CHOOSE_CPU_DEVICES:
        environment_sets_it = XLA_DEVICE_COUNT_FLAG in os.environ.get("XLA_FLAGS", "")
        if num_processes > 1 or environment_sets_it or jax.config.jax_num_cpu_devices >= 0:
            return 1
        if started:  # a library caller running main again keeps its devices
            return max(1, cpu_device_count()) if jax.default_backend() == "cpu" else 1
        count = cpu_devices_for(runs, usable_cores())
        if count > 1:
            jax.config.update("jax_num_cpu_devices", count)
        return count if jax.default_backend() == "cpu" else 1
    if requested == 1 or (started and cpu_device_count() == requested):
        return requested
    if started:
        raise UserError(
            f"--cpu-devices {requested} must be set before JAX starts: this process has already used JAX "
            f"(it has {cpu_device_count()} CPU device(s)); run the script in a fresh process"
        )
    jax.config.update("jax_num_cpu_devices", requested)
    return requested


def backends_started() -> bool:
    """Whether JAX has started its backends in this process (after which its devices are fixed)."""
    try:
        from jax._src.xla_bridge import backends_are_initialized
    except ImportError:  # moved in another JAX: then jax.config.update says so when it is too late
        return False
    return backends_are_initialized()


def cpu_device_count() -> int:
    """The CPU devices of a started JAX; 0 where the CPU platform is excluded (JAX_PLATFORMS)."""
    try:
        return jax.device_count("cpu")
    except RuntimeError:
        return 0


def is_lead_process() -> bool:
    """Whether this process writes the logs and prints the results (process 0; the only one, usually)."""
    return jax.process_index() == 0


def agreed_time(claim: Callable[[int], bool] = lambda seconds: True) -> int:
    """The time in seconds, the same in every process (process 0's): for the run name. Process 0 takes the first
    second from now that `claim(seconds)` succeeds for (making the run's folder), so that runs started within one
    second get distinct names."""
    now = int(time.time())
    while is_lead_process() and not claim(now):
        now += 1
    if jax.process_count() == 1:
        return now
    high, low = multihost_utils.broadcast_one_to_all(np.array(divmod(now, 2**16), np.int32))  # int32 without x64
    return int(high) * 2**16 + int(low)


def sync_processes(name: str) -> None:
    """Wait until every process has reached this point (a no-op in one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def fail_together(attempt: Callable[[], T]) -> T:
    """`attempt()`, whose UserError in any process stops every process (that one with its own error): alone,
    the others would wait for it at their next collective until the runtime's timeout, never saying why."""
    error = None
    try:
        result = attempt()
    except UserError as caught:
        error = caught
    if jax.process_count() > 1:
        failed = multihost_utils.process_allgather(np.int32(error is not None))
        if error is None and failed.any():
            raise UserError(f"process {int(np.argmax(failed))} stopped with an error (see its output)")
    if error is not None:
        raise error
    return result


def on_lead_process(tree: Any) -> Any:
    """`tree` (its arrays split over every process's devices) whole on process 0, which evaluates or reports for
    all; None in the other processes. Every process must call it: with several, it is a gather they all take part
    in."""
    if jax.process_count() > 1:
        tree = jax.tree.map(host_value, tree)
    return tree if is_lead_process() else None


def host_value(x: jax.Array) -> np.ndarray:
    """A small array (per-seed results) whole on this host, gathered from every process's devices."""
    return np.asarray(multihost_utils.process_allgather(x, tiled=True) if not x.is_fully_addressable else x)


def seed_mesh(num_seeds: int) -> jax.sharding.Mesh:
    """A 1-D mesh over as many devices as evenly divide `num_seeds` (all of them when possible; with several
    processes it must be all: each process holds the seeds of its own devices)."""
    devices = jax.devices()
    if jax.process_count() > 1 and num_seeds % len(devices):
        raise UserError(
            f"{num_seeds} agents (seeds, or configurations × seeds in a sweep) cannot be split evenly over the "
            f"{len(devices)} devices of {jax.process_count()} processes: use a multiple of the device count"
        )
    count = max(d for d in range(1, len(devices) + 1) if num_seeds % d == 0)
    if count < len(devices):
        warnings.warn(
            f"{num_seeds} seeds do not divide evenly over {len(devices)} devices: using {count}", stacklevel=2
        )
    return jax.make_mesh((count,), (SEED_AXIS,), axis_types=(AxisType.Auto,), devices=devices[:count])


def announce_placement(mesh: jax.sharding.Mesh, num_seeds: int) -> None:
    """Say where the seeds run (process 0), when they are split over several devices."""
    if mesh.size > 1 and is_lead_process():
        platform = mesh.devices.flat[0].platform.upper()
        print(f"{num_seeds} seeds on {mesh.size} {platform} devices, {num_seeds // mesh.size} each", flush=True)


def seed_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Every array's leading (seed) axis split over the mesh."""
    return NamedSharding(mesh, PartitionSpec(SEED_AXIS))


def shard_seeds(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Split every array's leading (seed) axis over the mesh."""
    return jax.device_put(tree, seed_sharding(mesh))


def free_bytes(device: jax.Device) -> int | None:
    """Free memory of an accelerator where its runtime reports it; None for CPU devices, which share the host's."""
    stats = device.memory_stats()
    if stats and "bytes_limit" in stats:
        return stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    return None


def host_available_bytes() -> int:
    with open("/proc/meminfo") as f:
        meminfo = dict(line.split(":", 1) for line in f)
    return int(meminfo["MemAvailable"].split()[0]) * 1024


class InsufficientMemory(UserError, MemoryError):
    """Refused before allocating: the arrays would not fit."""


def check_fits(what: str, needed_bytes: int, devices: list[jax.Device], hint: str) -> None:
    """Raise before allocating `needed_bytes`, split evenly over `devices` (the agents' axis), if some device of this
    process lacks its share: each accelerator is checked for its own part; CPU devices share the host's memory,
    which must hold this process's devices' parts (several processes on one host each count their own only).
    Every process stops if one of them is short."""
    fail_together(lambda: check_this_process_fits(what, needed_bytes, devices, hint))


def check_this_process_fits(what: str, needed_bytes: int, devices: list[jax.Device], hint: str) -> None:
    share = -(-needed_bytes // len(devices))
    local = [device for device in devices if device.process_index == jax.process_index()]
    free = [free_bytes(device) for device in local]
    if None in free:
        needed, available = share * len(local), host_available_bytes()
        if needed > available:
            raise InsufficientMemory(
                f"{what} needs {needed / 2**30:.2f} GiB but only {available / 2**30:.2f} GiB of host memory "
                f"is free; {hint}"
            )
        return
    short = [(device, room) for device, room in zip(local, free, strict=True) if share > room]
    if short:
        device, room = min(short, key=lambda pair: pair[1])
        raise InsufficientMemory(
            f"{what} needs {share / 2**30:.2f} GiB on each of {len(devices)} {device.platform} device(s), but "
            f"{device} has only {room / 2**30:.2f} GiB free ({len(short)} of them short); {hint}"
        )
