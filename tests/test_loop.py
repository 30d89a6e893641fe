"""common.loop: the logging boundaries of a chunk, whatever its length and phase; and the CPU threefry lowering."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.cpu import unroll_threefry_on_cpu
from common.loop import Chunk, chunks, interval_problems, nan_mean, scan_logged, scan_tallied, scan_tallied_over_seeds


@pytest.mark.parametrize("log_every", [1, 3, 5])
@pytest.mark.parametrize("first", [0, 1, 4, 5, 7])
@pytest.mark.parametrize("length", [0, 1, 2, 5, 6, 11])
def test_scan_logged_steps_every_iteration_and_ends_intervals_where_the_plain_loop_does(log_every, first, length):
    """The carry records each step's iteration and each boundary's, and the records come out in order with the
    boundary's iteration, the carry it saw and the outputs of its interval's steps in this chunk; all must match a
    plain Python loop's."""
    slots = 64

    def step(carry, i):
        history, n = carry
        return (history.at[n].set(i), n + 1), 10 * i

    def at_boundary(carry, i, outs):
        history, n = carry
        return (history.at[n].set(-1000 - i), n + 1), {"iteration": i, "entries": n, "outs": outs.sum()}

    run = jax.jit(
        lambda carry, first_iteration, chunk: scan_logged(step, carry, first_iteration, chunk, log_every, at_boundary),
        static_argnums=2,
    )
    (history, n), records = run(
        (jnp.full(slots, 7777), jnp.int32(0)), jnp.int32(first), Chunk.starting_at(first, length, log_every)
    )
    expected, expected_records, outs = [], [], []
    for i in range(first, first + length):
        expected.append(i)
        outs.append(10 * i)
        if (i + 1) % log_every == 0:
            expected_records.append((i, len(expected), sum(outs)))
            expected.append(-1000 - i)
            outs = []
    assert int(n) == len(expected)
    assert np.asarray(history[: len(expected)]).tolist() == expected
    assert records["iteration"].dtype == jnp.int32 and records["iteration"].shape == (len(expected_records),)
    got = zip(records["iteration"].tolist(), records["entries"].tolist(), records["outs"].tolist(), strict=True)
    assert list(got) == expected_records


@pytest.mark.parametrize(
    "first, total, log_every, intervals, ends_every, expected",
    [
        (0, 25, 1, 10, (), [(0, 10), (10, 10), (20, 5)]),  # `intervals` logging intervals at most
        (0, 100, 5, 10, (20,), [(0, 20), (20, 20), (40, 20), (60, 20), (80, 20)]),
        (0, 100, 5, 10, (30, 40), [(0, 30), (30, 10), (40, 20), (60, 20), (80, 10), (90, 10)]),
        (0, 130, 5, 10, (65,), [(0, 50), (50, 15), (65, 50), (115, 15)]),
        (0, 12, 4, 1, (), [(0, 4), (4, 4), (8, 4)]),
        (7, 30, 2, 10, (10,), [(7, 3), (10, 10), (20, 10)]),  # a resume between checkpoints: back on the grid
        (30, 30, 2, 10, (10,), []),
    ],
)
def test_chunks_end_at_every_period_and_the_end(first, total, log_every, intervals, ends_every, expected):
    schedule = list(chunks(first, total, log_every, intervals, ends_every))
    assert [(start, chunk.length) for start, chunk in schedule] == expected
    assert [chunk.log_phase for _, chunk in schedule] == [start % log_every for start, _ in expected]


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


@pytest.mark.parametrize("length", [200, 120, 30])  # whole intervals, a part-interval tail, no boundary at all
def test_scan_tallied_means_are_running_sums_in_step_order(length):
    """Totals and counts tallied as [seeds, gradient steps] each iteration, summed in float32 one after the other in
    step order (the running sums the agent state used to carry, bit for bit), then divided; NaN where nothing was
    counted; the sums start again after each boundary."""
    rng = np.random.default_rng(0)
    # magnitudes from 1e-3 to 1e3, where the order of float32 additions shows in the sums (it does for both seeds)
    losses = (rng.normal(size=(length, 3, 2)) * 10.0 ** rng.integers(-3, 4, (length, 3, 2))).astype(np.float32)
    counts = rng.integers(0, 2, (length, 3, 2)).astype(np.int32)
    counts[:, 2] = 0  # a seed that took no step
    log_every = 50

    def step(carry, i):
        tally = {
            "loss": (jnp.asarray(losses * counts)[i], jnp.asarray(counts)[i]),
            "q": (jnp.asarray(losses)[i, :, 0], jnp.ones(3)),
        }
        return carry, tally

    def at_boundary(carry, i, means):
        return carry, means

    run = jax.jit(lambda: scan_tallied(step, 0, jnp.int32(0), Chunk(length, 0), log_every, at_boundary)[1])
    means = run()
    assert means["loss"].shape == means["q"].shape == (length // log_every, 3)
    assert means["loss"].dtype == jnp.float32
    for interval in range(length // log_every):
        for seed in range(3):
            total, count, q_total = np.float32(0), np.float32(0), np.float32(0)
            for iteration in range(interval * log_every, (interval + 1) * log_every):
                q_total += losses[iteration, seed, 0]
                for update in range(2):
                    total += np.float32(losses[iteration, seed, update] * counts[iteration, seed, update])
                    count += np.float32(counts[iteration, seed, update])
            expected = total / count if count else np.nan
            np.testing.assert_array_equal(np.asarray(means["loss"][interval, seed]), np.float32(expected))
            np.testing.assert_array_equal(np.asarray(means["q"][interval, seed]), q_total / np.float32(log_every))


def test_scan_tallied_traces_the_step_once():
    """Finding the sums' shapes and scanning share one trace of the step (tracing a whole iteration is not free)."""
    traces = []

    def step(carry, i):
        traces.append(i)
        return carry + 1.0, {"x": (carry[None], jnp.ones(1))}

    boundary = lambda carry, i, means: (carry, means)  # noqa: E731
    jax.jit(lambda c: scan_tallied(step, c, jnp.int32(0), Chunk(6, 0), 3, boundary)).lower(jnp.float32(0))
    assert len(traces) == 1


def test_scan_tallied_refuses_a_chunk_that_starts_inside_an_interval():
    """Its sums start at zero with the chunk: a chunk starting mid-interval would log a part-interval's mean."""
    with pytest.raises(ValueError, match="starts inside a logging interval"):
        scan_tallied(lambda c, i: (c, {}), 0, jnp.int32(2), Chunk.starting_at(2, 6, 3), 3, lambda c, i, m: (c, m))


def test_nan_mean_reports_nothing_for_an_empty_interval():
    np.testing.assert_allclose(nan_mean(jnp.asarray([6.0, 0.0]), jnp.asarray([3.0, 0.0])), [2.0, np.nan])


def test_one_seed_runs_without_its_seed_axis_and_tallies_as_vmapped_seeds_do():
    """scan_tallied_over_seeds: a batch of one seed runs the step unbatched; its state and means come back with
    the seed axis, equal to the same seed's in a vmapped batch."""
    increments = jnp.asarray([1.5, -0.25])

    batched = []

    def step(state, i):
        batched.append(type(state).__name__ == "BatchTracer")  # vmap's tracer
        return state + i, {"state": (state, 1)}

    def at_boundary(states, i, means):
        return states, {"state": means["state"], "states": states}

    def run(states):
        return scan_tallied_over_seeds(step, states, jnp.int32(0), Chunk(6, 0), 3, at_boundary)

    one_state, one = jax.jit(run)(increments[:1])
    assert batched == [False]  # traced once, without the seed axis
    both_states, both = jax.jit(run)(increments)
    assert batched == [False, True]
    assert one_state.shape == (1,) and one["state"].shape == (2, 1) and one["states"].shape == (2, 1)
    np.testing.assert_array_equal(one_state, both_states[:1])
    np.testing.assert_array_equal(one["state"], both["state"][:, :1])
    # the states the steps tallied: s, s, s + 1 in the first interval; s + 3, s + 6, s + 10 in the second
    for interval, offsets in enumerate([(0, 0, 1), (3, 6, 10)]):
        for seed, start in enumerate(np.asarray(increments)):
            total = np.float32(0)
            for offset in offsets:
                total += np.float32(start + offset)
            assert both["state"][interval, seed] == total / np.float32(3)


def test_chunk_ends_must_be_whole_logging_intervals():
    from mirl_gymnax import Args

    assert interval_problems(Args(log_interval=5_000, checkpoint_interval=100_000), ("checkpoint_interval",)) == []
    (problem,) = interval_problems(Args(log_interval=3_000, checkpoint_interval=100_000), ("checkpoint_interval",))
    assert problem.startswith("--checkpoint-interval (100000) must be a whole number of logging intervals")
    assert problem.endswith("(3000 steps: --log-interval 3000)")
    # a log interval that is not a multiple of the environments logs every whole iteration below it: 20 steps here
    assert not interval_problems(Args(log_interval=25, num_envs=10, checkpoint_interval=100), ("checkpoint_interval",))
    (problem,) = interval_problems(Args(log_interval=25, num_envs=10, checkpoint_interval=30), ("checkpoint_interval",))
    assert problem.endswith("(20 steps: --log-interval 25)")
