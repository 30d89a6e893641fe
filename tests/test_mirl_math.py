"""The MIRL pieces against limits, invariants and hand-computed values."""

import inspect
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.replay import Replay
from mirl_gymnax import (
    behaviour_action,
    kl_to_prior,
    linear_schedule,
    policy_logits,
    soft_value,
    update_beta,
    update_prior,
)


def random_problem(seed: int, num_actions: int = 5, batch: int = 64):
    rng = np.random.default_rng(seed)
    q = rng.normal(scale=10.0, size=(batch, num_actions)).astype(np.float32)
    prior = rng.dirichlet(np.ones(num_actions)).astype(np.float32)
    return jnp.asarray(q), jnp.log(jnp.asarray(prior))


def test_soft_value_hand_computed():
    q = jnp.array([1.0, 2.0])
    prior = jnp.array([0.25, 0.75])
    expected = np.log(0.25 * np.exp(2.0) + 0.75 * np.exp(4.0)) / 2.0
    assert soft_value(q, jnp.log(prior), 2.0) == pytest.approx(expected, rel=1e-6)


def test_soft_value_large_beta_is_hard_max():
    q, log_prior = random_problem(0)
    np.testing.assert_allclose(soft_value(q, log_prior, 1e5), q.max(axis=-1), atol=1e-3)


def test_soft_value_small_beta_is_prior_expectation():
    q, log_prior = random_problem(1)
    np.testing.assert_allclose(soft_value(q, log_prior, 1e-6), (jnp.exp(log_prior) * q).sum(-1), atol=1e-3)


@pytest.mark.parametrize("beta", [1e-6, 1e-3, 0.1, 1.0, 10.0, 1e3, 1e6])
def test_soft_value_between_min_and_max(beta):
    q, log_prior = random_problem(2)
    value = soft_value(q, log_prior, beta)
    assert jnp.isfinite(value).all()
    assert (q.min(-1) - 1e-4 <= value).all() and (value <= q.max(-1) + 1e-4).all()


def test_soft_value_large_q_does_not_overflow():
    # the naive sum_a ρ exp(βQ) overflows float32 here
    q = jnp.array([[1000.0, 999.0, -1000.0]])
    value = soft_value(q, jnp.log(jnp.array([0.2, 0.3, 0.5])), 10.0)
    assert jnp.isfinite(value).all() and abs(float(value[0]) - 1000.0) < 1.0


def test_soft_value_zero_prior_mass_is_ignored():
    q = jnp.array([5.0, 1.0, 2.0])
    log_prior = jnp.log(jnp.array([0.0, 0.5, 0.5]))
    assert soft_value(q, log_prior, 1e4) == pytest.approx(2.0, abs=1e-3)


def test_policy_is_prior_tilted_by_q():
    q = jnp.array([0.0, 1.0, 2.0])
    prior = jnp.array([0.5, 0.3, 0.2])
    pi = jax.nn.softmax(policy_logits(q, jnp.log(prior), 1.5))
    expected = prior * np.exp(1.5 * np.asarray(q))
    np.testing.assert_allclose(pi, expected / expected.sum(), rtol=1e-6)


def test_kl_to_prior():
    q, log_prior = random_problem(3)
    assert kl_to_prior(log_prior + 0.0 * q, log_prior) == pytest.approx(0.0, abs=1e-6)
    log_policy = jax.nn.log_softmax(policy_logits(q, log_prior, 0.7))
    pi = jax.nn.softmax(policy_logits(q, log_prior, 0.7))
    expected = (pi * (jnp.log(pi) - log_prior)).sum(-1)
    np.testing.assert_allclose(kl_to_prior(log_policy, log_prior), expected, rtol=1e-4, atol=1e-6)
    assert (kl_to_prior(log_policy, log_prior) >= -1e-6).all()
    # a prior with an empty action: π has no mass there either, and the KL stays finite
    log_prior_gap = jnp.log(jnp.array([0.0, 0.5, 0.5]))
    log_policy_gap = jax.nn.log_softmax(policy_logits(jnp.array([9.0, 1.0, 0.0]), log_prior_gap, 1.0))
    assert jnp.isfinite(kl_to_prior(log_policy_gap, log_prior_gap))


@pytest.mark.parametrize("num_actions", range(2, 19))
def test_zero_alpha_keeps_prior_exactly_uniform(num_actions):
    prior = jnp.full(num_actions, 1.0 / num_actions)
    rng = np.random.default_rng(num_actions)
    for _ in range(20):
        policy = jnp.asarray(rng.dirichlet(np.ones(num_actions)), jnp.float32)
        prior = update_prior(prior, policy, 0.0, 10)
    np.testing.assert_array_equal(prior, jnp.full(num_actions, 1.0 / num_actions))


def sequential_updates(prior, policies, alpha):
    for policy in policies:
        prior = prior + alpha * (policy - prior)
    return prior


@pytest.mark.parametrize("alpha", [1e-3, 0.05, 0.3])
def test_parallel_prior_update_equals_sequential_updates(alpha):
    jax.config.update("jax_enable_x64", True)
    try:
        rng = np.random.default_rng(0)
        prior = jnp.asarray(rng.dirichlet(np.ones(4)))
        policies = jnp.asarray(rng.dirichlet(np.ones(4), size=6))
        # the same policy in every environment: exactly N sequential updates
        same = jnp.broadcast_to(policies[0], policies.shape)
        np.testing.assert_allclose(
            update_prior(prior, same.mean(0), alpha, 6), sequential_updates(prior, same, alpha), rtol=1e-12
        )
        # different policies: equal to the sequential updates averaged over the order of the states
        # (each cyclic shift puts every state once at every position)
        shifted = [sequential_updates(prior, jnp.roll(policies, k, axis=0), alpha) for k in range(6)]
        np.testing.assert_allclose(
            update_prior(prior, policies.mean(0), alpha, 6), np.mean(shifted, axis=0), rtol=1e-12
        )
    finally:
        jax.config.update("jax_enable_x64", False)


def test_prior_stays_a_distribution():
    rng = np.random.default_rng(1)
    prior = jnp.full(6, 1.0 / 6)
    for alpha, num_states in itertools.product([1e-8, 1e-3, 0.5, 1.0], [1, 7, 64]):
        for _ in range(50):
            policy = jnp.asarray(np.eye(6)[rng.integers(6)] if rng.random() < 0.5 else rng.dirichlet(np.ones(6)))
            prior = update_prior(prior, policy.astype(jnp.float32), alpha, num_states)
            assert (prior >= 0).all()
            assert abs(float(prior.sum()) - 1.0) < 1e-5


def test_beta_rule_hand_computed():
    assert update_beta(1.0, 0.25, 0.5, 1.0, 1e-3, 1e-2, 1e3) == pytest.approx(2.5)  # 1 + 0.5 (4 - 1)
    assert update_beta(2.0, 0.5, 0.1, 1.0, 1e-3, 1e-2, 1e3) == pytest.approx(2.0)  # fixed point β = 1/L
    assert update_beta(3.0, 0.5, 0.0, 1.0, 1e-3, 1e-2, 1e3) == pytest.approx(3.0)  # α_β = 0 keeps β


def test_beta_scale_multiplies_the_target():
    # --beta-scale c: β moves towards c/L, so its fixed point is c/L and c = 1 is the published rule bit for bit
    assert update_beta(1.0, 0.25, 0.5, 10.0, 1e-3, 1e-2, 1e3) == pytest.approx(20.5)  # 1 + 0.5 (40 - 1)
    assert update_beta(20.0, 0.5, 0.1, 10.0, 1e-3, 1e-2, 1e3) == pytest.approx(20.0)  # fixed point β = c/L
    assert update_beta(1.0, 0.0, 1.0, 3.0, 1e-2, 1e-2, 1e3) == pytest.approx(300.0)  # the floor bounds c/L too
    beta, loss = jnp.float32(1.7), jnp.float32(0.37)
    published = jnp.clip(beta + jnp.float32(0.01) * (1.0 / jnp.maximum(loss, 1e-3) - beta), 1e-2, 1e3)
    assert update_beta(beta, loss, jnp.float32(0.01), jnp.float32(1.0), 1e-3, 1e-2, 1e3) == published


def test_beta_guard_and_clip():
    # a zero loss would send β to infinity: the floor turns 1/L into 1/floor, and the clip bounds it
    assert update_beta(1.0, 0.0, 1.0, 1.0, 1e-2, 1e-2, 1e3) == pytest.approx(100.0)
    assert update_beta(1.0, 0.0, 1.0, 1.0, 1e-6, 1e-2, 1e3) == pytest.approx(1e3)
    assert update_beta(1.0, 1e6, 1.0, 1.0, 1e-3, 1e-2, 1e3) == pytest.approx(1e-2)


def test_exploration_draws_follow_prior():
    prior = jnp.array([0.5, 0.3, 0.15, 0.05])
    greedy = jnp.zeros(200_000, jnp.int32)
    actions = np.asarray(behaviour_action(jax.random.key(0), greedy, jnp.log(prior), 1.0))
    counts = np.bincount(actions, minlength=4)
    expected = np.asarray(prior) * len(actions)
    chi_square = ((counts - expected) ** 2 / expected).sum()
    assert chi_square < 16.27  # 99.9% quantile of χ² with 3 degrees of freedom


def test_epsilon_mixes_greedy_and_prior():
    prior = jnp.array([0.1, 0.2, 0.7])
    greedy = jnp.full(200_000, 1, jnp.int32)
    actions = np.asarray(behaviour_action(jax.random.key(1), greedy, jnp.log(prior), 0.3))
    # P(a) = (1 - ε) 1[a = greedy] + ε ρ(a)
    expected = 0.3 * np.asarray(prior) + 0.7 * np.eye(3)[1]
    np.testing.assert_allclose(np.bincount(actions, minlength=3) / len(actions), expected, atol=0.005)
    np.testing.assert_array_equal(behaviour_action(jax.random.key(2), greedy, jnp.log(prior), 0.0), greedy)


def test_linear_schedule():
    assert linear_schedule(1.0, 0.05, 100, 0) == pytest.approx(1.0)
    assert linear_schedule(1.0, 0.05, 100, 50) == pytest.approx(0.525)
    assert linear_schedule(1.0, 0.05, 100, 1000) == pytest.approx(0.05)


def test_replay_wraps_around_and_samples_only_filled():
    replay = Replay.empty(6, (2,), jnp.float32)
    for step in range(4):  # two transitions per step into a buffer of 6: the 4th step overwrites slots 0-1
        values = jnp.array([10 * step, 10 * step + 1], jnp.float32)
        replay = replay.add(
            (step * 2) % 6,
            jnp.stack([values, values], 1),
            values.astype(jnp.int32),
            values,
            values[:, None] + 0 * jnp.ones((2, 2)),
            values > 0,
        )
    np.testing.assert_array_equal(replay.actions, [30, 31, 10, 11, 20, 21])
    batch = replay.sample(jax.random.key(0), jnp.asarray(4), 1000)
    assert set(np.asarray(batch.actions).tolist()) == {30, 31, 10, 11}
    np.testing.assert_array_equal(batch.obs[:, 0], batch.actions)


def test_dense_is_equinox_linear_transposed():
    """Dense stores (in, out) and initialises as equinox's Linear (uniform in ±1/√in for weights and biases)."""
    import equinox as eqx

    from mirl_gymnax import Dense

    layer = Dense(120, 84, key=jax.random.key(0))
    assert layer.weight.shape == (120, 84) and layer.bias.shape == (84,)
    bound = 1 / np.sqrt(120)
    for values in (layer.weight, layer.bias):  # both ends of ±bound are reached, none passed
        assert -bound <= values.min() < -0.9 * bound and 0.9 * bound < values.max() <= bound
    x = jax.random.normal(jax.random.key(1), (120,))
    linear = eqx.tree_at(
        lambda m: (m.weight, m.bias), eqx.nn.Linear(120, 84, key=jax.random.key(2)), (layer.weight.T, layer.bias)
    )
    np.testing.assert_allclose(layer(x), linear(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "size, stride, image_size, channels",
    [(3, 1, 10, 4), (8, 4, 84, 4), (4, 2, 20, 32), (3, 1, 9, 64)],  # MinAtar's conv; the Nature CNN's three
)
def test_patch_conv_is_a_valid_convolution(size, stride, image_size, channels):
    from mirl_gymnax import PatchConv

    conv = PatchConv(channels, 16, size=size, stride=stride, key=jax.random.key(0))
    image = jax.random.normal(jax.random.key(1), (image_size, image_size, channels))
    # the same weights as a (height, width, in, out) kernel for XLA's own convolution
    kernel = conv.linear.weight.reshape(size, size, channels, 16)
    reference = jax.lax.conv_general_dilated(
        image[None], kernel, (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )[0]
    np.testing.assert_allclose(conv(image), reference + conv.linear.bias, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "name",
    [
        "soft_value",
        "policy_logits",
        "kl_to_prior",
        "update_prior",
        "update_beta",
        "behaviour_action",
        "linear_schedule",
        "Dense",
        "PatchConv",
        "updates_per_learn",
        "learn_period",
        "gradient_steps",
        "Hypers",
        "make_optimizer",
        "q_values",
        "greedy_logits",
        "epsilon_at",
        "choose",
        "td_target",
        "apply_td_step",
        "learn_and_sync",
    ],
)
def test_atari_script_has_the_same_math(name):
    """Each script carries its own copy of the algorithm and the patch convolution (single-file
    style): every step without an Atari part (all but storing and the TD loss, whose batches differ by the
    frame replay's validity weights). The tests check mirl_gymnax's; this keeps mirl_atari's identical."""
    import mirl_atari
    import mirl_gymnax

    assert inspect.getsource(getattr(mirl_atari, name)) == inspect.getsource(getattr(mirl_gymnax, name))


def test_atari_logs_what_gymnax_logs():
    """interval_metrics too, but for ρ's mass on --redundant-actions' copies, which only mirl_gymnax.py adds."""
    import mirl_atari
    import mirl_gymnax

    lines = inspect.getsource(mirl_gymnax.interval_metrics).splitlines()
    start = next(i for i, line in enumerate(lines) if "if setup.args.redundant_actions:" in line)
    assert "prior_on_copies" in lines[start + 1]
    assert inspect.getsource(mirl_atari.interval_metrics).splitlines() == lines[:start] + lines[start + 2 :]
