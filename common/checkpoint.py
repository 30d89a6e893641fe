"""Checkpoint files: one JSON header line (Args, step, run name) followed by the leaves of a pytree.

The header is readable without knowing the tree's structure, so `--resume PATH` can rebuild the
run's Args first and only then the tree to load into.
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

from common.errors import UserError


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _serialise_leaf(f, x):
    # typed PRNG keys have no NumPy form: store their raw key data
    eqx.default_serialise_filter_spec(f, jax.random.key_data(x) if _is_key(x) else x)


def save_checkpoint(path: str | Path, tree: Any, header: dict) -> None:
    """Write `tree` to `path` atomically: a run killed while saving keeps its previous file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
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
    """Read the leaves saved in `path` into a tree shaped like `like` (arrays or ShapeDtypeStructs). Each array
    is checked against its expected shape and dtype and placed with `sharding` as soon as it is read, so every
    device receives only its own part and the host holds at most one leaf besides (the default device takes
    all without a sharding)."""

    def place(f, x):
        if not isinstance(x, jax.Array | jax.ShapeDtypeStruct | np.ndarray):
            return eqx.default_deserialise_filter_spec(f, x)
        value = np.load(f, allow_pickle=False)
        if value.shape != x.shape or value.dtype != x.dtype:
            raise ValueError(
                f"an array saved as {value.dtype}{list(value.shape)} where {x.dtype}{list(x.shape)} belongs"
            )
        return jax.device_put(value, sharding)

    key_data_like = jax.tree.map(lambda x: jax.eval_shape(jax.random.key_data, x) if _is_key(x) else x, like)
    with open(path, "rb") as f:
        f.readline()
        try:
            loaded = eqx.tree_deserialise_leaves(f, key_data_like, filter_spec=place)
        except Exception as error:  # whatever the reader hit, the file does not hold this state
            raise UserError(
                f"{path} is cut short or corrupt, or was written for other sizes ({type(error).__name__}: {error}); "
                "resume from an earlier checkpoint of the run"
            ) from error
        if f.read(1):
            raise UserError(f"{path} holds more data than this run's state: it was written for other sizes")
    return jax.tree.map(lambda x, model: jax.random.wrap_key_data(x) if _is_key(model) else x, loaded, like)


def init_or_restore(init: Callable, resume: str | Path | None, *inputs, sharding=None) -> Any:
    """`jax.jit(init)(*inputs)` with its output laid out by `sharding` as it is made, so that no device ever
    holds another's part; or, with `resume`, the state saved there, read into the same structure and placed
    the same way."""
    if resume:
        return load_checkpoint(resume, eqx.filter_eval_shape(init, *inputs), sharding)
    return jax.jit(init, out_shardings=sharding)(*inputs)


def prune_checkpoints(directory: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (file names sort by step); keep <= 0 keeps all."""
    if keep <= 0:
        return
    for old in sorted(Path(directory).glob("step_*.eqx"))[:-keep]:
        old.unlink()


def save_run_checkpoint(run_dir: str | Path, step: int, tree: Any, header: dict, keep: int) -> Path:
    """Save `tree` as `{run_dir}/checkpoints/step_{step:09d}.eqx`, keep the newest `keep` there (<= 0: all),
    and return the new file's path."""
    path = Path(run_dir) / "checkpoints" / f"step_{step:09d}.eqx"
    save_checkpoint(path, tree, header)
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
