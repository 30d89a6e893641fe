"""common.loop: the logging boundaries of a chunk, whatever its length and phase; and the CPU threefry lowering."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.devices import unroll_threefry_on_cpu
from common.loop import Chunk, scan_logged


@pytest.mark.parametrize("log_every", [1, 3, 5])
@pytest.mark.parametrize("first", [0, 1, 4, 5, 7])
@pytest.mark.parametrize("length", [0, 1, 2, 5, 6, 11])
def test_scan_logged_steps_every_iteration_and_ends_intervals_where_the_plain_loop_does(log_every, first, length):
    """The carry records each step's iteration and each boundary's; they must match a plain Python loop's."""
    slots = 64

    def step(carry, i):
        record, n = carry
        return record.at[n].set(i), n + 1

    def at_boundary(carry, i):
        record, n = carry
        return record.at[n].set(-1000 - i), n + 1

    run = jax.jit(
        lambda carry, first_iteration, chunk: scan_logged(step, carry, first_iteration, chunk, log_every, at_boundary),
        static_argnums=2,
    )
    record, n = run(
        (jnp.full(slots, 7777), jnp.int32(0)), jnp.int32(first), Chunk.starting_at(first, length, log_every)
    )
    expected = []
    for i in range(first, first + length):
        expected.append(i)
        if (i + 1) % log_every == 0:
            expected.append(-1000 - i)
    assert int(n) == len(expected)
    assert np.asarray(record[: len(expected)]).tolist() == expected


BITS = "import jax; print(jax.jit(lambda k: jax.random.bits(k, (6,)))(jax.random.key(7)).tolist())"


def test_unrolled_threefry_gives_jax_own_bits_without_a_loop():
    """The same random bits as JAX's own CPU lowering (run in a fresh process, unpatched), with no `while`
    left in the compiled hash."""
    reference = subprocess.run([sys.executable, "-c", BITS], capture_output=True, text=True, check=True).stdout
    assert unroll_threefry_on_cpu()
    bits = jax.jit(lambda k: jax.random.bits(k, (6,)) + jnp.uint32(0))
    assert np.asarray(bits(jax.random.key(7))).tolist() == json.loads(reference)
    assert " while(" not in bits.lower(jax.random.key(7)).compile().as_text()
    unroll_threefry_on_cpu(unrolled=False)
    try:
        looped = jax.jit(lambda k: jax.random.bits(k, (6,)) + jnp.uint32(1))
        assert " while(" in looped.lower(jax.random.key(7)).compile().as_text()
    finally:
        unroll_threefry_on_cpu()
