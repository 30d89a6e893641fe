"""Training loops split at logging boundaries, so that no iteration pays for a branch."""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Chunk(NamedTuple):
    """The static shape of a run of iterations: how many, and how far the first is past a logging boundary
    (a multiple of `log_every`). Each distinct Chunk is its own compiled program: chunks that start on a
    boundary (when --checkpoint-interval is a multiple of --log-interval, as by default) share one."""

    length: int
    log_phase: int

    @staticmethod
    def starting_at(first_iteration: int, length: int, log_every: int) -> "Chunk":
        return Chunk(length, first_iteration % log_every)


def scan_logged(
    step: Callable[[Any, jax.Array], Any],
    carry: Any,
    first_iteration: jax.Array,
    chunk: Chunk,
    log_every: int,
    at_boundary: Callable[[Any, jax.Array], Any],
) -> Any:
    """`carry = step(carry, i)` for i = first_iteration, ..., first_iteration + chunk.length − 1, and after every i
    that ends a logging interval ((i + 1) % log_every == 0), `carry = at_boundary(carry, i)`.

    The iterations split statically into a head up to the first boundary, whole intervals (a scan over
    intervals of an inner scan) and a tail, so the per-iteration loop has no branch on the iteration (that
    branch and the selects it needed were a measurable share of a CartPole run on a CPU). `chunk.log_phase`
    must be `first_iteration % log_every` (build it with Chunk.starting_at)."""

    def advance(carry, first, length: int):
        if length == 0:
            return carry
        iterations = first + jnp.arange(length, dtype=jnp.int32)
        return jax.lax.scan(lambda carry, i: (step(carry, i), None), carry, iterations)[0]

    def interval(carry, first):
        return at_boundary(advance(carry, first, log_every), first + log_every - 1), None

    head = min(chunk.length, (log_every - chunk.log_phase) % log_every)
    periods, tail = divmod(chunk.length - head, log_every)
    carry = advance(carry, first_iteration, head)
    if head and (chunk.log_phase + head) % log_every == 0:
        carry = at_boundary(carry, first_iteration + head - 1)
    if periods:
        starts = first_iteration + head + log_every * jnp.arange(periods, dtype=jnp.int32)
        carry = jax.lax.scan(interval, carry, starts)[0]
    return advance(carry, first_iteration + head + periods * log_every, tail)
