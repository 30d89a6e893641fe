"""Checkpoint files: one JSON header line (Args, step, run name) followed by the leaves of a pytree, each in
NumPy's .npy format.

The header is readable without knowing the tree's structure, so `--resume PATH` can rebuild the
run's Args first and only then the tree to load into. Arrays are written and read one device's part at a
time, so the host never holds more than one part of one array. With several processes (jax.distributed),
each writes the rows (seeds) of its own devices to its own file: process 0 to PATH, process p to
PATH.process{p}; each reads its own back.
"""

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from common.devices import fail_together, sync_processes
from common.errors import UserError


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def process_file(path: str | Path) -> Path:
    """This process's file of the checkpoint at `path`."""
    path = Path(path)
    return path if jax.process_index() == 0 else path.with_name(f"{path.name}.process{jax.process_index()}")


def _row_blocks(x: jax.Array, sharding: jax.sharding.Sharding) -> list[tuple[slice, list[jax.Device]]]:
    """This process's part of an array laid out by `sharding`: its row ranges (leading axis) in order, each
    with the devices that hold it (several where it is replicated). They must follow one another."""
    blocks: dict[tuple[int, int], list[jax.Device]] = {}
    for device, index in sharding.addressable_devices_indices_map(x.shape).items():
        if any(part.indices(size) != (0, size, 1) for part, size in zip(index[1:], x.shape[1:], strict=True)):
            raise ValueError(f"an array split along an axis other than its first ({index}): it cannot be saved")
        rows = index[0] if index else slice(None)
        start, stop, _ = rows.indices(x.shape[0]) if x.ndim else (0, 1, 1)
        blocks.setdefault((start, stop), []).append(device)
    ordered = sorted(blocks)
    if any(a[1] != b[0] for a, b in zip(ordered, ordered[1:], strict=False)):
        raise ValueError(f"this process's rows {ordered} of an array are not contiguous: it cannot be saved")
    return [(slice(start, stop), blocks[start, stop]) for start, stop in ordered]


def _local_shape(x, blocks) -> tuple[int, ...]:
    return (sum(rows.stop - rows.start for rows, _ in blocks), *x.shape[1:]) if x.ndim else ()


def _serialise_leaf(f, x):
    if not isinstance(x, jax.Array):
        return eqx.default_serialise_filter_spec(f, x)
    x = jax.random.key_data(x) if _is_key(x) else x  # typed PRNG keys have no NumPy form: store their key data
    blocks = _row_blocks(x, x.sharding)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(x.dtype)), "fortran_order": False}
    np.lib.format.write_array_header_1_0(f, {**header, "shape": _local_shape(x, blocks)})  # as np.save does
    shards = {shard.device: shard for shard in x.addressable_shards}
    for _, devices in blocks:  # one device's part at a time, in row order: together, this process's rows
        f.write(np.ascontiguousarray(shards[devices[0]].data).tobytes())


def save_checkpoint(path: str | Path, tree: Any, header: dict) -> None:
    """Write this process's part of `tree` to its file of `path` (process_file) atomically: a run killed while
    saving keeps its previous file."""
    path = process_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    header = {**header, "processes": jax.process_count()}
    with open(partial, "wb") as f:
        f.write((json.dumps(header) + "\n").encode())
        eqx.tree_serialise_leaves(f, tree, filter_spec=_serialise_leaf)
    os.replace(partial, path)


def read_header(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint file at {path}")
    with open(path, "rb") as f:
        first_line = f.readline(1 << 20)
    try:
        header = json.loads(first_line)
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise UserError(f"{path} is not a checkpoint of this kit (it does not start with a JSON header line)")
    return header


def load_checkpoint(path: str | Path, like: Any, sharding: jax.sharding.Sharding | None = None) -> Any:
    """Read the leaves saved in this process's file of `path` into a tree shaped like `like` (arrays or
    ShapeDtypeStructs), laid out by `sharding` (default: on the default device). Each array is checked against
    its expected shape and dtype, and read one device's part at a time, each placed on its device(s) at once:
    every device receives only its own part, and the host holds at most one part besides."""
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    saved_by = read_header(path).get("processes", 1)  # process 0's header (the run directory is shared)
    if saved_by != jax.process_count():
        raise UserError(
            f"{path} was saved by {saved_by} process{'es' * (saved_by > 1)}, each with its own seeds: resume it with "
            f"--num-processes {saved_by}"
        )
    path = process_file(path)

    def place(f, x):
        if not isinstance(x, jax.Array | jax.ShapeDtypeStruct | np.ndarray):
            return eqx.default_deserialise_filter_spec(f, x)
        blocks = _row_blocks(x, sharding)
        version = np.lib.format.read_magic(f)
        read_array_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        shape, fortran_order, dtype = read_array_header[version](f)
        if shape != _local_shape(x, blocks) or dtype != x.dtype or fortran_order:
            raise ValueError(
                f"an array saved as {dtype}{list(shape)} where {x.dtype}{list(_local_shape(x, blocks))} belongs"
            )
        parts = []
        for rows, devices in blocks:
            part_shape = (rows.stop - rows.start, *x.shape[1:]) if x.ndim else ()
            size = int(np.prod(part_shape)) * dtype.itemsize
            part = np.frombuffer(f.read(size), dtype, count=int(np.prod(part_shape))).reshape(part_shape)
            parts += [jax.device_put(part, device) for device in devices]
        return jax.make_array_from_single_device_arrays(x.shape, sharding, parts)

    key_data_like = jax.tree.map(lambda x: jax.eval_shape(jax.random.key_data, x) if _is_key(x) else x, like)
    with open(path, "rb") as f:
        f.readline()
        try:
            loaded = eqx.tree_deserialise_leaves(f, key_data_like, filter_spec=place)
        except Exception as error:  # whatever the reader hit, the file does not hold this state
            cause = error  # equinox names the leaf (its TreePathError); the error it wraps says what was wrong there
            while cause.__cause__ is not None:
                cause = cause.__cause__
            where = f"at {jax.tree_util.keystr(error.path)}: " if hasattr(error, "path") else ""
            raise UserError(
                f"{path} is cut short or corrupt, or was written for other sizes or by another version of the kit "
                f"({where}{type(cause).__name__}: {cause}); resume from an earlier checkpoint of the run, or start a "
                "new one"
            ) from error
        if f.read(1):
            raise UserError(f"{path} holds more data than this run's state: it was written for other sizes")
    return jax.tree.map(lambda x, model: jax.random.wrap_key_data(x) if _is_key(model) else x, loaded, like)


def init_or_restore(init: Callable, resume: str | Path | None, *inputs, sharding=None) -> Any:
    """`jax.jit(init)(*inputs)` with its output laid out by `sharding` as it is made, so that no device ever
    holds another's part; or, with `resume`, the state saved there, read into the same structure and placed
    the same way."""
    if resume:  # one process's file may be missing or cut short: all stop, with the reason
        return fail_together(lambda: load_checkpoint(resume, eqx.filter_eval_shape(init, *inputs), sharding))
    return jax.jit(init, out_shardings=sharding)(*inputs)


def prune_checkpoints(directory: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (file names sort by step); keep <= 0 keeps all."""
    if keep <= 0:
        return
    for old in sorted(Path(directory).glob(process_file("step_*.eqx").name))[:-keep]:
        old.unlink()


def save_run_checkpoint(run_dir: str | Path, step: int, tree: Any, header: dict, keep: int) -> Path:
    """Save `tree` as `{run_dir}/checkpoints/step_{step:09d}.eqx`, keep the newest `keep` there (<= 0: all),
    and return the new file's path."""
    path = Path(run_dir) / "checkpoints" / f"step_{step:09d}.eqx"
    save_checkpoint(path, tree, header)
    sync_processes(f"saved {path}")  # the older checkpoints go only once every process's file of this one exists
    prune_checkpoints(path.parent, keep)
    return path


def non_finite_stop(
    nan_steps, seeds: list[int] | list[str], loss: str, step_unit: str, last_checkpoint, saving: bool
) -> SystemExit | None:
    """The error that stops a run whose loss became non-finite in some seed (`nan_steps[k]` ≥ 0 is the
    seed's first such step), naming each such seed (or in a sweep each sub-run) with its step and the checkpoint
    kept (`saving`: --save-model is on); None if all are finite."""
    nan_steps = np.asarray(nan_steps)
    if not (nan_steps >= 0).any():
        return None
    bad = {seed: int(step) for seed, step in zip(seeds, nan_steps, strict=True) if step >= 0}
    what = "seed" if all(isinstance(seed, int) for seed in seeds) else "run"
    return SystemExit(
        f"error: {loss} became non-finite ({what}: {step_unit}) {bad}; run stopped. "
        f"Last checkpoint kept: {last_checkpoint or ('none yet' if saving else 'none (use --save-model)')}"
    )
