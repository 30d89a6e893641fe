"""Placing vmapped seeds on devices, and refusing allocations that cannot fit."""

import warnings
from typing import Any

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from common.errors import UserError

SEED_AXIS = "seeds"


def seed_mesh(num_seeds: int) -> jax.sharding.Mesh:
    """A 1-D mesh over as many devices as evenly divide `num_seeds` (all of them when possible)."""
    devices = jax.devices()
    count = max(d for d in range(1, len(devices) + 1) if num_seeds % d == 0)
    if count < len(devices):
        warnings.warn(
            f"{num_seeds} seeds do not divide evenly over {len(devices)} devices: using {count}", stacklevel=2
        )
    return jax.make_mesh((count,), (SEED_AXIS,), axis_types=(AxisType.Auto,), devices=devices[:count])


def shard_seeds(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Split every array's leading (seed) axis over the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(SEED_AXIS)))


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Inside jit: gather small per-seed values (metrics) on every device before a host callback,
    so that XLA does not fall back to a full rematerialisation to reach the callback's device."""
    return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, PartitionSpec()))


def available_bytes(devices: list[jax.Device]) -> int:
    """Free memory on the devices that will hold the arrays: accelerator memory where the runtime
    reports it, else the host's available RAM (CPU devices share it)."""
    stats = [d.memory_stats() for d in devices]
    if all(s and "bytes_limit" in s for s in stats):
        return sum(s["bytes_limit"] - s.get("bytes_in_use", 0) for s in stats)
    with open("/proc/meminfo") as f:
        meminfo = dict(line.split(":", 1) for line in f)
    return int(meminfo["MemAvailable"].split()[0]) * 1024


class InsufficientMemory(UserError, MemoryError):
    """Refused before allocating: the arrays would not fit."""


def check_fits(what: str, needed_bytes: int, devices: list[jax.Device], hint: str) -> None:
    """Raise before allocating `needed_bytes` if the devices do not have them free."""
    free = available_bytes(devices)
    if needed_bytes > free:
        raise InsufficientMemory(
            f"{what} needs {needed_bytes / 2**30:.2f} GiB but only {free / 2**30:.2f} GiB is free "
            f"on {len(devices)} {devices[0].platform} device(s); {hint}"
        )
