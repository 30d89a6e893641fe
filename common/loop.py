"""Training loops split at logging boundaries, so that no iteration pays for a branch, and returning each
boundary's record to the host instead of calling out to it from inside the loop."""

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Chunk(NamedTuple):
    """The static shape of a run of iterations: how many, and how far the first is past a logging boundary
    (a multiple of `log_every`). Each distinct Chunk is its own compiled program: chunks of the same length
    that start on a boundary share one."""

    length: int
    log_phase: int

    @staticmethod
    def starting_at(first_iteration: int, length: int, log_every: int) -> "Chunk":
        return Chunk(length, first_iteration % log_every)


def chunks(
    first_iteration: int, total_iterations: int, log_every: int, intervals: int, ends_every: tuple[int, ...] = ()
) -> Iterator[tuple[int, Chunk]]:
    """The training loop's chunks from `first_iteration`, each with its first iteration: a chunk is `intervals`
    logging intervals long at most (the host writes the records and shows progress after each chunk), and ends
    at every multiple of `ends_every` (checkpoints, evaluations) and at the end of the run."""
    iteration = first_iteration
    while iteration < total_iterations:
        until_end = (period - iteration % period for period in ends_every)
        length = min(total_iterations - iteration, intervals * log_every, *until_end)
        yield iteration, Chunk.starting_at(iteration, length, log_every)
        iteration += length


def interval_problems(args: Any, chunk_ends: tuple[str, ...]) -> list[str]:
    """A logging interval's means come from one compiled chunk (scan_tallied's sums start at zero with a chunk),
    so intervals must lie whole inside chunks: each of the flags `chunk_ends` (steps between checkpoints,
    evaluations), where chunks end, must be a whole number of logging intervals."""
    interval = args.log_every() * args.steps_per_iteration()
    return [
        f"--{name.replace('_', '-')} ({getattr(args, name)}) must be a whole number of logging intervals ({interval} "
        f"steps: --log-interval {args.log_interval})"
        for name in chunk_ends
        if getattr(args, name) % interval
    ]


def scan_logged(
    step: Callable[[Any, jax.Array], tuple[Any, Any]],
    carry: Any,
    first_iteration: jax.Array,
    chunk: Chunk,
    log_every: int,
    at_boundary: Callable[[Any, jax.Array, Any], tuple[Any, Any]],
) -> tuple[Any, Any]:
    """`carry, out = step(carry, i)` for i = first_iteration, ..., first_iteration + chunk.length − 1, and after every
    i that ends a logging interval ((i + 1) % log_every == 0), `carry, record = at_boundary(carry, i, outs)`, `outs`
    being the interval's `out`s (those of its iterations in this chunk) stacked on a leading axis. Returns the last
    carry and the chunk's records, stacked in order on a new leading axis (empty if no interval ends).

    The iterations split statically into a head up to the first boundary, whole intervals (a scan over
    intervals of an inner scan) and a tail, so the per-iteration loop has no branch on the iteration (that
    branch and the selects it needed were a measurable share of a CartPole run on a CPU). The records leave
    through the program's outputs: a host callback inside the loop slowed every kernel of a one-seed CartPole
    run by 5–10 %, whether it ran or not. `chunk.log_phase` must be `first_iteration % log_every` (build it
    with Chunk.starting_at)."""

    def advance(carry, first, length: int):
        if length == 0:
            return carry, None
        iterations = first + jnp.arange(length, dtype=jnp.int32)
        return jax.lax.scan(step, carry, iterations)

    def interval(carry, first):
        carry, outs = advance(carry, first, log_every)
        return at_boundary(carry, first + log_every - 1, outs)

    head = min(chunk.length, (log_every - chunk.log_phase) % log_every)
    periods, tail = divmod(chunk.length - head, log_every)
    records = []
    carry, outs = advance(carry, first_iteration, head)
    if head and (chunk.log_phase + head) % log_every == 0:
        carry, record = at_boundary(carry, first_iteration + head - 1, outs)
        records.append(jax.tree.map(lambda x: x[None], record))
    if periods:
        starts = first_iteration + head + log_every * jnp.arange(periods, dtype=jnp.int32)
        carry, stacked = jax.lax.scan(interval, carry, starts)
        records.append(stacked)
    carry, _ = advance(carry, first_iteration + head + periods * log_every, tail)
    if not records:  # no boundary: an empty stack of the records' shapes
        outs = jax.eval_shape(lambda c: advance(c, first_iteration, 1)[1], carry)
        shapes = jax.eval_shape(at_boundary, carry, first_iteration, outs)[1]
        return carry, jax.tree.map(lambda s: jnp.zeros((0, *s.shape), s.dtype), shapes)
    return carry, jax.tree.map(lambda *parts: jnp.concatenate(parts), *records)


def scan_tallied(
    step: Callable[[Any, jax.Array], tuple[Any, dict]],
    carry: Any,
    first_iteration: jax.Array,
    chunk: Chunk,
    log_every: int,
    at_boundary: Callable[[Any, jax.Array, dict], tuple[Any, Any]],
) -> tuple[Any, Any]:
    """scan_logged for steps that tally what they log: `carry, tally = step(carry, i)`, where an entry
    `tag: (total, count)` of the tally holds arrays [seeds, ...] (the trailing axes: several per iteration, as a
    learning phase's gradient steps), and `carry, record = at_boundary(carry, i, means)` gets each tag's mean per
    seed over the interval (NaN where nothing was counted).

    The totals and counts are running float32 sums in the loop's carry, added in step order, the trailing entries one
    after the other (the sums an agent state would carry, bit for bit), and start at zero with each chunk, so an
    interval must lie whole in one chunk (interval_problems). Stacking the steps' tallies as scan outputs instead
    made an 8-seed CartPole chunk's program 39 fusions and 9 loops larger (docs/benchmarks.md). `step` is traced
    once: jitted, the trace that finds the sums' shapes is the one the scan reuses."""
    if chunk.log_phase:
        raise ValueError(f"a chunk of {chunk} starts inside a logging interval ({log_every} iterations)")
    step = jax.jit(step)
    tally_shapes = jax.eval_shape(step, carry, first_iteration)[1]
    zeros = {tag: (jnp.zeros(t.shape[:1], jnp.float32),) * 2 for tag, (t, _) in tally_shapes.items()}

    def summing(carry_sums, iteration):
        carry, sums = carry_sums
        carry, tally = step(carry, iteration)
        return (carry, {tag: add_in_step_order(sums[tag], tally[tag]) for tag in sums}), None

    def boundary(carry_sums, iteration, _):
        carry, sums = carry_sums
        means = {tag: nan_mean(total, count) for tag, (total, count) in sums.items()}
        carry, record = at_boundary(carry, iteration, means)
        return (carry, zeros), record

    (carry, _), records = scan_logged(summing, (carry, zeros), first_iteration, chunk, log_every, boundary)
    return carry, records


def add_in_step_order(sums: tuple[jax.Array, jax.Array], tallied: tuple[jax.Array, jax.Array]):
    """The running (total, count) per seed plus one step's, its trailing entries added one at a time in order."""
    added = []
    for running, value in zip(sums, tallied, strict=True):
        value = jnp.asarray(value, jnp.float32).reshape(len(running), -1)
        for entry in range(value.shape[1]):
            running = running + value[:, entry]
        added.append(running)
    return tuple(added)


def nan_mean(total: jax.Array, count: jax.Array) -> jax.Array:
    """total / count, NaN (= nothing to report) where count is 0."""
    return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)


def scan_tallied_over_seeds(
    step: Callable[[Any, jax.Array], tuple[Any, dict]],
    states: Any,
    first_iteration: jax.Array,
    chunk: Chunk,
    log_every: int,
    at_boundary: Callable[[Any, jax.Array, dict], tuple[Any, Any]],
) -> tuple[Any, Any]:
    """scan_tallied of one seed's `step` vmapped over the seeds on the leading axis of `states`; `at_boundary` takes
    all seeds. One seed runs without the seed axis for the whole chunk: vmap over a batch of one is slower on
    XLA:CPU, and taking the seed out and back in every iteration makes it copy a replay buffer every iteration
    (benchmarks/cpu_workarounds.py)."""
    if jax.tree.leaves(states)[0].shape[0] != 1:
        seeds_step = jax.vmap(step, in_axes=(0, None))
        return scan_tallied(seeds_step, states, first_iteration, chunk, log_every, at_boundary)

    def take_seed(tree):
        return jax.tree.map(lambda x: x[0], tree)

    def put_seed(tree):
        return jax.tree.map(lambda x: x[None], tree)

    def step_one(state, iteration):
        state, tally = step(state, iteration)
        return state, jax.tree.map(lambda x: jnp.asarray(x)[None], tally)

    def at_boundary_one(state, iteration, means):
        states, record = at_boundary(put_seed(state), iteration, means)
        return take_seed(states), record

    state, records = scan_tallied(step_one, take_seed(states), first_iteration, chunk, log_every, at_boundary_one)
    return put_seed(state), records
