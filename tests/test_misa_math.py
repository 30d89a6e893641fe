"""MISA's pieces against closed forms and hand-computed values."""

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import misa_d4rl as misa
from common.datasets import (
    ActionBox,
    DatasetInfo,
    ObsScaler,
    Transitions,
    evaluation_seeds,
    shaped_rewards,
    training_arrays,
)
from common.hmc import HMCConfig, adapt_step_size, hmc_sample
from common.loop import Chunk


def gaussian_density(x, mean, std):
    return np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def test_tanh_gaussian_log_prob_is_the_change_of_variables():
    mean, log_std = 0.3, math.log(0.6)
    actions = np.linspace(-0.995, 0.995, 401)
    # density of a = tanh(u), u ~ N(mean, std²): N(atanh a) · |d atanh(a)/da| = N(atanh a) / (1 − a²)
    expected = np.log(gaussian_density(np.arctanh(actions), mean, 0.6) / (1 - actions**2))
    got = misa.log_prob_of_actions(jnp.asarray(actions)[:, None], jnp.asarray([mean]), jnp.asarray([log_std]))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # it is a density on (−1, 1)
    fine = np.linspace(-1 + 1e-6, 1 - 1e-6, 200_001)
    density = np.exp(misa.log_prob_of_actions(jnp.asarray(fine)[:, None], jnp.asarray([mean]), jnp.asarray([log_std])))
    assert np.trapezoid(density, fine) == pytest.approx(1.0, abs=1e-3)


def test_tanh_gaussian_log_prob_sums_over_action_dimensions():
    mean, log_std = jnp.asarray([0.1, -0.4]), jnp.asarray([-1.0, 0.2])
    actions = jnp.asarray([[0.5, -0.2], [-0.9, 0.99]])
    per_dim = [misa.log_prob_of_actions(actions[:, i : i + 1], mean[i : i + 1], log_std[i : i + 1]) for i in range(2)]
    np.testing.assert_allclose(misa.log_prob_of_actions(actions, mean, log_std), per_dim[0] + per_dim[1], rtol=1e-6)


def test_stable_tanh_correction():
    u = jnp.linspace(-8.0, 8.0, 33)
    np.testing.assert_allclose(misa.log_one_minus_tanh_squared(u), np.log(1 - np.tanh(np.float64(u)) ** 2), atol=1e-4)
    assert jnp.all(jnp.isfinite(misa.log_one_minus_tanh_squared(jnp.asarray([-50.0, 50.0]))))


def test_sampled_log_prob_matches_the_log_prob_of_the_sample():
    mean, log_std = jnp.asarray([[0.2, -0.5, 1.0]]), jnp.asarray([[-1.0, -0.5, -2.0]])
    actions, log_pi = misa.policy_sample(jax.random.normal(jax.random.key(0), (1000, 1, 3)), mean, log_std)
    assert actions.shape == (1000, 1, 3) and log_pi.shape == (1000, 1)
    assert jnp.all(jnp.abs(actions) < 1)
    np.testing.assert_allclose(log_pi, misa.log_prob_of_actions(actions, mean, log_std), rtol=1e-3, atol=1e-3)


def run_hmc(log_density, initial, **overrides):
    config = HMCConfig(
        burn_in=20, samples=50, leapfrog_steps=2, step_size=0.8, adaptation_steps=0, target_acceptance=0.75
    )
    return hmc_sample(log_density, initial, jax.random.key(3), config._replace(**overrides))


def test_hmc_recovers_a_1d_gaussian():
    mean, std = 0.5, 0.7

    def log_density(x):
        return -0.5 * jnp.sum(jnp.square((x - mean) / std), axis=-1)

    samples, acceptance, _ = run_hmc(log_density, jnp.zeros((4000, 1)))
    assert samples.shape == (50, 4000, 1)
    assert float(samples.mean()) == pytest.approx(mean, abs=0.02)
    assert float(samples.std()) == pytest.approx(std, rel=0.03)
    assert 0.5 < float(acceptance.mean()) <= 1.0


def test_hmc_recovers_a_correlated_2d_gaussian():
    mean = jnp.asarray([0.3, -0.2])
    covariance = jnp.asarray([[1.0, 0.5], [0.5, 0.8]])
    precision = jnp.linalg.inv(covariance)

    def log_density(x):
        centred = x - mean
        return -0.5 * jnp.einsum("ci,ij,cj->c", centred, precision, centred)

    samples, _, _ = run_hmc(log_density, jnp.zeros((4000, 2)))
    flat = np.asarray(samples).reshape(-1, 2)
    np.testing.assert_allclose(flat.mean(axis=0), mean, atol=0.03)
    np.testing.assert_allclose(np.cov(flat.T), covariance, atol=0.05)


def test_hmc_rejects_non_finite_proposals():
    """A density that is −inf outside (−1, 1), like log π of a tanh policy: no sample may leave."""

    def log_density(x):
        return misa.log_prob_of_actions(x, jnp.zeros(1), jnp.zeros(1))

    samples, acceptance, _ = run_hmc(log_density, jnp.full((2000, 1), 0.9), burn_in=100)
    assert jnp.all(jnp.abs(samples) < 1)
    assert 0.0 < float(acceptance.mean()) < 1.0  # some proposals leave the interval and are rejected
    # the tanh of a standard normal: mean 0, E[tanh(u)²] ≈ 0.394
    assert float(samples.mean()) == pytest.approx(0.0, abs=0.03)
    assert float(jnp.mean(samples**2)) == pytest.approx(0.394, abs=0.02)


def test_hmc_step_size_adapts_like_tfp_in_the_first_steps_only():
    """tfp's SimpleStepSizeAdaptation (the official code's): ×1.01 above the target acceptance, ÷1.01 below."""

    def flat(x):  # every proposal is accepted: the step size grows in each adaptation step
        return jnp.zeros(x.shape[0])

    _, _, grown = run_hmc(flat, jnp.zeros((8, 1)), step_size=1.0, adaptation_steps=4)
    assert float(grown) == pytest.approx(1.01**4, rel=1e-6)

    def impossible(x):  # nothing is accepted: it shrinks
        return jnp.where(jnp.abs(x[:, 0]) < 1e-9, 0.0, -jnp.inf)

    _, acceptance, shrunk = run_hmc(impossible, jnp.zeros((8, 1)), step_size=1.0, adaptation_steps=4)
    assert float(shrunk) == pytest.approx(1.01**-4, rel=1e-6)
    assert float(acceptance.max()) == 0.0


@pytest.mark.parametrize(
    "log_ratios, grows",
    [
        ([0.0, math.log(0.6)], True),  # mean acceptance probability 0.8 > 0.75
        ([0.0, math.log(0.4)], False),  # 0.7
        ([5.0, math.log(0.3)], False),  # min(1, e^5) = 1: mean 0.65, though the mean ratio is large
        ([0.0, 0.0, 0.0, -math.inf], False),  # exactly 0.75 is not above the target
    ],
)
def test_step_size_adaptation_by_hand(log_ratios, grows):
    config = HMCConfig(
        burn_in=5, samples=1, leapfrog_steps=1, step_size=1.0, adaptation_steps=4, target_acceptance=0.75
    )
    adapted = adapt_step_size(jnp.asarray(0.5), jnp.asarray(log_ratios), jnp.asarray(3), config)
    assert float(adapted) == pytest.approx(0.5 * 1.01 if grows else 0.5 / 1.01, rel=1e-6)
    after = adapt_step_size(jnp.asarray(0.5), jnp.asarray(log_ratios), jnp.asarray(4), config)
    assert float(after) == 0.5  # adaptation is over after `adaptation_steps` transitions


def test_logsumexp_regularizer_by_hand():
    scores = jnp.asarray([[1.0, 0.0], [2.0, -1.0], [0.5, 3.0]])  # [samples=3, batch=2]
    q_data = jnp.asarray([0.5, 1.0])
    column_0 = math.log(math.e**1 + math.e**2 + math.e**0.5) - math.log(2) - 0.5
    column_1 = math.log(1 + math.e**-1 + math.e**3) - math.log(2) - 1.0
    got = misa.logsumexp_regularizer(scores, q_data, math.log(2))
    assert float(got) == pytest.approx((column_0 + column_1) / 2, rel=1e-6)


def test_cql_scores_are_the_importance_weighted_set():
    q_uniform, q_next, q_current = jnp.full((2, 1), 1.0), jnp.full((2, 1), 2.0), jnp.full((2, 1), 3.0)
    next_log_pi, current_log_pi = jnp.full((2, 1), -0.5), jnp.full((2, 1), 0.25)
    scores = misa.cql_scores(q_uniform, q_next, next_log_pi, q_current, current_log_pi, action_dim=3)
    expected = [1 - 3 * math.log(0.5)] * 2 + [2.5] * 2 + [2.75] * 2
    np.testing.assert_allclose(scores[:, 0], expected, rtol=1e-6)
    # CQL(H) with temperature 1: log Σ_j exp(score_j) − Q(s, a)
    q_data = jnp.asarray([0.4])
    cql_h = math.log(sum(math.exp(v) for v in expected)) - 0.4
    assert float(misa.logsumexp_regularizer(scores, q_data, 0.0)) == pytest.approx(cql_h, rel=1e-6)


def test_actor_objectives_by_hand():
    alpha, log_pi, q_new, data_log_pi = (
        0.5,
        jnp.asarray([-1.0, -3.0]),
        jnp.asarray([2.0, 4.0]),
        jnp.asarray([-2.0, 0.0]),
    )
    misa_loss = 0.5 * np.mean([0.5 * -1 + 2, 0.5 * -3 - 0]) - 3.0
    assert float(misa.actor_objective(alpha, log_pi, q_new, data_log_pi, 0.5)) == pytest.approx(misa_loss)
    cql_loss = np.mean([0.5 * -1 - 2, 0.5 * -3 - 4])
    assert float(misa.actor_objective(alpha, log_pi, q_new, None, 0.5)) == pytest.approx(cql_loss)


def test_reward_transforms():
    rewards = np.asarray([0.0, 0.5, 1.0], np.float32)
    np.testing.assert_allclose(shaped_rewards(rewards, "antmaze"), [-2.0, 0.0, 2.0])
    np.testing.assert_allclose(shaped_rewards(rewards * 10 + 3, "adroit"), [-1.0, 0.0, 1.0])
    np.testing.assert_allclose(shaped_rewards(rewards * 4, "kitchen"), [-1.0, 0.0, 1.0])
    np.testing.assert_allclose(shaped_rewards(rewards, "locomotion"), rewards)


def test_training_arrays_map_actions_into_the_unit_box_clip_them_shape_rewards_and_scale_observations():
    obs = np.asarray([[0.0, 10.0], [2.0, 30.0]], np.float64)
    data = Transitions(
        observations=obs,
        actions=np.asarray([[0.0], [4.0]]),  # the box's edges: ±1 in unit actions, clipped inside
        rewards=np.asarray([0.0, 1.0]),
        next_observations=obs[::-1],
        terminals=np.asarray([0.0, 1.0]),
    )
    info = DatasetInfo("test", "antmaze", None, None, None, None)
    box = ActionBox(np.asarray([0.0]), np.asarray([4.0]))
    arrays, scale = training_arrays(data, info, box, action_clip=0.9, normalize_obs=True)
    assert all(x.dtype == np.float32 for x in dataclasses.asdict(arrays).values())
    np.testing.assert_array_equal(arrays.actions, np.float32([[-0.9], [0.9]]))
    np.testing.assert_array_equal(arrays.rewards, np.float32([-2.0, 2.0]))  # antmaze's (r − 0.5)·4
    np.testing.assert_allclose(scale.std, [1.0 + 1e-3, 10.0 + 1e-3])
    np.testing.assert_allclose(arrays.observations, (obs - [1.0, 20.0]) / scale.std, rtol=1e-6)
    np.testing.assert_allclose(arrays.next_observations, arrays.observations[::-1])
    unscaled, _ = training_arrays(data, info, box, action_clip=0.9, normalize_obs=False)
    np.testing.assert_array_equal(unscaled.observations, obs.astype(np.float32))


def test_observation_scaler_and_action_box():
    observations = np.random.default_rng(0).normal(3.0, 2.0, size=(1000, 4)).astype(np.float32)
    scaled = ObsScaler.fit(observations, standardise=True)(observations)
    np.testing.assert_allclose(scaled.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(scaled.std(axis=0), 1.0, atol=1e-3)  # std + 1e-3 in the denominator
    np.testing.assert_array_equal(ObsScaler.fit(observations, standardise=False)(observations), observations)

    box = ActionBox(np.asarray([-2.0, 0.0]), np.asarray([2.0, 1.0]))
    np.testing.assert_allclose(
        box.to_unit(np.asarray([[-2.0, 0.0], [2.0, 1.0], [1.0, 0.75]])), [[-1, -1], [1, 1], [0.5, 0.5]]
    )
    units = np.random.default_rng(1).uniform(-1, 1, size=(10, 2))
    np.testing.assert_allclose(box.to_unit(box.from_unit(units)), units, atol=1e-12)


def test_evaluation_seeds_belong_to_each_seed_and_step():
    together = evaluation_seeds([1, 2], step=1000, episodes=3)
    assert together[3:] == evaluation_seeds([2], step=1000, episodes=3)  # seed 2 alone or second
    assert len(set(together)) == 6
    assert evaluation_seeds([1], step=2000, episodes=3) != together[:3]


def test_flax_initialisation():
    policy = misa.Policy(17, 6, 256, False, jax.random.key(0))
    hidden = np.asarray(policy.net.hidden[1].weight)
    fan_in_std = 1 / math.sqrt(256)
    assert hidden.std() == pytest.approx(fan_in_std, rel=0.03)  # truncated normal rescaled to unit variance
    assert np.abs(hidden).max() <= 2 * fan_in_std / 0.87962566 + 1e-6  # truncated at two (pre-scale) stds
    output = np.asarray(policy.net.output.weight)
    limit = math.sqrt(3 * 1e-2 / 256)  # variance scaling 1e-2, fan-in, uniform
    assert np.abs(output).max() <= limit and output.std() == pytest.approx(limit / math.sqrt(3), rel=0.05)
    assert not np.any(policy.net.hidden[0].bias) and not np.any(policy.net.output.bias)
    assert float(policy.log_std_multiplier) == 1.0 and float(policy.log_std_offset) == -1.0


def test_domain_defaults_fill_only_unset_flags_when_the_flags_are_made():
    antmaze = "antmaze-umaze-v2"
    args = misa.Args(env_id=antmaze, q_lr=5e-4)
    assert (args.q_lr, args.layer_norm, args.lagrange, args.total_steps) == (5e-4, True, True, 2_000_000)
    assert (args.eval_interval, args.eval_episodes, args.log_interval) == (50_000, 100, 1_000)
    adroit = misa.Args(env_id="pen-human-v1")
    assert (adroit.auto_alpha, adroit.bc_weight, adroit.lagrange) == (False, 5.0, False)
    assert (args.add_positive, args.hmc_adaptation_steps) == (True, 4)  # int(0.8 · 5 burn-in steps)
    assert misa.Args(env_id=antmaze, variant="cql").add_positive is False
    assert misa.Args(env_id=antmaze, hmc_burn_in=20).hmc_adaptation_steps == 16
    locomotion = misa.Args()
    assert (locomotion.q_lr, locomotion.layer_norm, locomotion.total_steps) == (3e-4, False, 1_200_000)
    assert misa.Args(env_id="mujoco/hopper/medium-v0").total_steps == 1_200_000  # a Minari id, not downloaded
    assert misa.Args(total_steps=14, eval_interval=4).log_interval == 2  # gcd(1000, 4, 14)
    kitchen = misa.Args(env_id="kitchen-partial-v0")
    derived = ("lagrange", "add_positive", "hmc_adaptation_steps", "eval_interval", "eval_episodes", "log_interval")
    assert all(getattr(kitchen, name) is not None for name in (*misa.DOMAIN_DEFAULTS["kitchen"], *derived))


# ----------------------------------------------------------------------------------------------
# One gradient step of the learner on a small random dataset
# ----------------------------------------------------------------------------------------------

OBS_DIM, ACTION_DIM = 5, 2


@pytest.fixture(scope="module")
def dataset():
    rng = np.random.default_rng(0)
    n = 300
    return misa.Batch(
        observations=rng.normal(size=(n, OBS_DIM)).astype(np.float32),
        actions=np.clip(rng.normal(0, 0.5, size=(n, ACTION_DIM)), -0.999, 0.999).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=rng.normal(size=(n, OBS_DIM)).astype(np.float32),
        terminals=(rng.random(n) < 0.1).astype(np.float32),
    )


def small_args(**overrides):
    small = dict(hidden_size=16, batch_size=8, num_action_samples=4, hmc_burn_in=1, hmc_samples=3, log_interval=2)
    return misa.Args(**{**small, **overrides})


def one_step(args, dataset, seed=0):
    trainer = misa.make_train(args, OBS_DIM, ACTION_DIM)
    states = jax.vmap(trainer.init)(jax.random.key(seed)[None])
    return states, jax.jit(trainer.run, static_argnums=3)(states, dataset, jnp.asarray(0, jnp.int32), Chunk(2, 0))[0]


def leaves(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_array))


def test_biased_variant_differs_only_in_the_policy(dataset):
    _, unbiased = one_step(small_args(variant="misa"), dataset)
    _, biased = one_step(small_args(variant="misa-biased"), dataset)
    # the same critic and temperature updates, up to the rounding of two differently fused programs
    for a, b in zip(leaves(unbiased.params.critics), leaves(biased.params.critics), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(unbiased.params.log_alpha, biased.params.log_alpha, rtol=1e-5, atol=1e-7)
    pairs = zip(leaves(unbiased.params.policy), leaves(biased.params.policy), strict=True)
    assert any(not np.array_equal(a, b) for a, b in pairs)


def test_targets_are_polyak_averages_of_the_new_critics(dataset):
    args = small_args(variant="cql", log_interval=1)
    trainer = misa.make_train(args, OBS_DIM, ACTION_DIM)
    before = jax.vmap(trainer.init)(jax.random.key(0)[None])
    after, _ = jax.jit(trainer.run, static_argnums=3)(before, dataset, jnp.asarray(0, jnp.int32), Chunk(1, 0))
    for new, target, old in zip(
        leaves(after.params.critics), leaves(after.target_critics), leaves(before.target_critics), strict=True
    ):
        np.testing.assert_allclose(target, args.tau * new + (1 - args.tau) * old, rtol=1e-6, atol=1e-7)


def test_fixed_alpha_and_bc_leave_unused_groups_alone(dataset):
    before, after = one_step(small_args(variant="bc"), dataset)
    for a, b in zip(leaves(before.params.critics), leaves(after.params.critics), strict=True):
        np.testing.assert_array_equal(a, b)
    before, after = one_step(small_args(auto_alpha=False), dataset)
    np.testing.assert_array_equal(before.params.log_alpha, after.params.log_alpha)


def test_lagrange_multiplier_moves_only_with_lagrange(dataset):
    before, after = one_step(small_args(lagrange=False), dataset)
    np.testing.assert_array_equal(before.params.log_alpha_prime, after.params.log_alpha_prime)
    before, after = one_step(small_args(lagrange=True), dataset)
    assert not np.array_equal(before.params.log_alpha_prime, after.params.log_alpha_prime)


def test_the_training_chunk_compiles_once(dataset):
    """The state a chunk returns has the types of the state it was given (no weakly typed scalars turning
    strong), so the jitted chunk is compiled once for the whole run."""
    trainer = misa.make_train(small_args(), OBS_DIM, ACTION_DIM)
    states = jax.vmap(trainer.init)(jax.random.key(0)[None])
    run = jax.jit(trainer.run, static_argnums=3)
    for first_step in (0, 2):
        states, _ = run(states, dataset, jnp.asarray(first_step, jnp.int32), Chunk(2, 0))
    assert run._cache_size() == 1


def test_hmc_gradient_ratio_splits_the_actor_gradient(dataset):
    """misa/hmc_grad_ratio (--hmc-diagnostics): the actor loss's gradient with the HMC samples minus the one
    without them is the HMC term's; the ratio of its norm to the rest's, computed here from two full gradients."""
    args = small_args(hmc_diagnostics=True)
    state = misa.make_train(args, OBS_DIM, ACTION_DIM).init(jax.random.key(0))
    batch = jax.tree.map(lambda x: jnp.asarray(x[:8]), dataset)
    draws = misa.draw(args, jax.random.key(1), 8, ACTION_DIM)
    mcmc = jax.random.uniform(jax.random.key(2), (3, 8, ACTION_DIM), minval=-0.9, maxval=0.9)
    p = state.params

    def actor_grad(samples):
        return jax.grad(misa.actor_loss, has_aux=True)(
            p.policy, args, p.critics, p.log_alpha, batch, draws.actor, samples
        )[0]

    full, rest = actor_grad(mcmc), actor_grad(None)
    hmc = jax.tree.map(jnp.subtract, full, rest)
    expected = float(optax.global_norm(hmc) / optax.global_norm(rest))
    assert expected > 0
    _, _, metrics = misa.gradients(args, p, state.target_critics, batch, draws, mcmc)
    assert float(metrics["misa/hmc_grad_ratio"]) == pytest.approx(expected, rel=1e-4)
    _, _, metrics = misa.gradients(
        dataclasses.replace(args, hmc_diagnostics=False), p, state.target_critics, batch, draws, mcmc
    )
    assert "misa/hmc_grad_ratio" not in metrics  # off by default: it costs a backward pass
