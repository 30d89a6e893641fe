"""Placing vmapped seeds on devices, and refusing allocations that cannot fit."""

import warnings
from typing import Any

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from common.errors import UserError

SEED_AXIS = "seeds"


def unroll_threefry_on_cpu(unrolled: bool = True) -> bool:
    """Lower JAX's threefry hash on the CPU as straight-line code instead of JAX's default CPU lowering, a
    five-trip `while` loop (chosen upstream for compile time). The hash and its bits are the same; the loop's
    per-trip bookkeeping made a CartPole run 1.14× slower (benchmarks/cpu_workarounds.py). Other
    platforms already use the straight-line form. It applies to the whole process: importing any of the
    kit's scripts registers it. `unrolled=False` puts JAX's loop back (to measure it).
    Returns False, changing nothing, where this JAX version keeps the lowering elsewhere."""
    import importlib

    try:
        from jax._src.interpreters import mlir
    except ImportError:
        return False
    for module_name in ("jax._src.random.threefry2x32", "jax._src.prng"):  # newer JAX, then JAX before 0.9
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        primitive = getattr(module, "threefry2x32_p", None)
        rule = getattr(module, "_threefry2x32_lowering_rule" if unrolled else "_threefry2x32_cpu_lowering_rule", None)
        if primitive is not None and rule is not None:
            mlir.register_lowering(primitive, rule, platform="cpu")
            return True
    return False


def seed_mesh(num_seeds: int) -> jax.sharding.Mesh:
    """A 1-D mesh over as many devices as evenly divide `num_seeds` (all of them when possible)."""
    devices = jax.devices()
    count = max(d for d in range(1, len(devices) + 1) if num_seeds % d == 0)
    if count < len(devices):
        warnings.warn(
            f"{num_seeds} seeds do not divide evenly over {len(devices)} devices: using {count}", stacklevel=2
        )
    return jax.make_mesh((count,), (SEED_AXIS,), axis_types=(AxisType.Auto,), devices=devices[:count])


def seed_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Every array's leading (seed) axis split over the mesh."""
    return NamedSharding(mesh, PartitionSpec(SEED_AXIS))


def shard_seeds(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Split every array's leading (seed) axis over the mesh."""
    return jax.device_put(tree, seed_sharding(mesh))


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Inside jit: gather small per-seed values (metrics) on every device before a host callback,
    so that XLA does not fall back to a full rematerialisation to reach the callback's device."""
    return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, PartitionSpec()))


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
    """Raise before allocating `needed_bytes`, split evenly over `devices` (the seed axis), if some device
    lacks its share: each accelerator is checked for its own part; CPU devices share the host's memory, which
    must hold the whole."""
    free = [free_bytes(device) for device in devices]
    if None in free:
        available = host_available_bytes()
        if needed_bytes > available:
            raise InsufficientMemory(
                f"{what} needs {needed_bytes / 2**30:.2f} GiB but only {available / 2**30:.2f} GiB of host memory "
                f"is free; {hint}"
            )
        return
    share = -(-needed_bytes // len(devices))
    short = [(device, room) for device, room in zip(devices, free, strict=True) if share > room]
    if short:
        device, room = min(short, key=lambda pair: pair[1])
        raise InsufficientMemory(
            f"{what} needs {share / 2**30:.2f} GiB on each of {len(devices)} {device.platform} device(s), but "
            f"{device} has only {room / 2**30:.2f} GiB free ({len(short)} of them short); {hint}"
        )
