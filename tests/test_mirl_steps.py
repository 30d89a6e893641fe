"""mirl_gymnax's steps called on their own (choose, observe, td_target, learn, learn_and_sync), against
values computed by hand from the state they are given. mirl_atari runs the same functions (a test keeps
them identical); its own observe is tested in test_frame_replay.py."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mirl_gymnax as mg
from common.logger import live_seeds_only
from common.sweep import grid_runs

SMALL = dict(num_envs=2, buffer_size=64, batch_size=8, learning_starts=8, train_frequency=2, total_timesteps=1_000)


def setup_and_state(algo="mirl", env_params_update=None, **overrides):
    swept = {name: (value,) for name, value in overrides.items() if name in mg.SWEPT_FLAGS}
    args = mg.Args(algo=algo, **{**SMALL, **overrides, **swept})
    env, env_params = mg.make_env(args.env_id)
    if env_params_update:
        env_params = env_params.replace(**env_params_update)
    trainer = mg.make_train(args, env, env_params)
    hypers = jax.tree.map(lambda x: x[0], mg.stacked_hypers(grid_runs(args, mg.SWEPT_FLAGS)))
    return mg.make_setup(args, env, env_params), trainer.init(jax.random.key(0), hypers)


@pytest.mark.parametrize("algo", ["mirl", "sql", "dqn"])
def test_td_target_by_hand(algo):
    setup, _ = setup_and_state(algo, gamma=0.9)
    next_q = jnp.asarray([[1.0, 3.0], [0.5, -1.0]])
    prior, beta = jnp.asarray([0.25, 0.75]), jnp.asarray(2.0)
    rewards, terminated = jnp.asarray([1.0, -2.0]), jnp.asarray([False, True])
    if algo == "dqn":
        next_value = 3.0
    else:  # V = log Σ ρ exp(βQ) / β
        next_value = np.log(0.25 * np.exp(2.0) + 0.75 * np.exp(6.0)) / 2.0
    expected = [1.0 + 0.9 * next_value, -2.0]  # a terminated transition does not bootstrap
    np.testing.assert_allclose(mg.td_target(setup, next_q, rewards, terminated, prior, beta), expected, rtol=1e-6)


def test_epsilon_schedule_by_hand():
    setup, state = setup_and_state(start_e=1.0, end_e=0.05, exploration_fraction=0.5)  # 1000 steps, 2 envs
    assert float(mg.epsilon_at(setup, state.hypers, jnp.asarray(125))) == pytest.approx(1.0 + (0.05 - 1.0) * 250 / 500)
    assert float(mg.epsilon_at(setup, state.hypers, jnp.asarray(400))) == pytest.approx(0.05)


@pytest.mark.parametrize("algo", ["mirl", "sql", "dqn"])
def test_choose_is_greedy_on_pi_and_moves_the_prior(algo):
    setup, state = setup_and_state(algo, start_e=0.0, end_e=0.0, alpha_rho=0.1, beta_init=3.0)
    prior = jnp.asarray([0.3, 0.7])
    state = dataclasses.replace(state, prior=prior)
    chosen, actions, tally = mg.choose(setup, state, jnp.asarray(5))
    q = mg.q_values(setup, state.params, state.obs)
    logits = jnp.log(prior) + 3.0 * q if algo != "dqn" else q
    np.testing.assert_array_equal(actions, jnp.argmax(logits, axis=-1))
    if algo == "mirl":  # ρ ← ρ + (1 − (1 − α)^N)(mean_k π(·|s_k) − ρ)
        policy = jax.nn.softmax(logits, axis=-1).mean(axis=0)
        np.testing.assert_allclose(chosen.prior, prior + (1 - 0.9**2) * (policy - prior), rtol=1e-5)
    else:
        np.testing.assert_array_equal(chosen.prior, prior)
    if algo != "dqn":  # Σ_k KL(π(·|s_k) ‖ ρ) over the 2 acting states
        log_pi = jax.nn.log_softmax(logits, axis=-1)
        kl = jnp.sum(jnp.exp(log_pi) * (log_pi - jnp.log(prior)))
        total, count = tally["mirl/kl_pi_prior"]
        assert float(total) == pytest.approx(float(kl), rel=1e-5) and count == 2
    else:
        assert tally == {}


@pytest.mark.parametrize("algo", ["mirl", "sql", "dqn"])
def test_choose_explores_with_probability_epsilon_drawing_from_the_prior(algo):
    """ε-greedy on 6000 Acrobot states at once: an action is the greedy one with probability 1 − ε and a draw from
    ρ with probability ε, so P(a | greedy g) = (1 − ε)·1[a = g] + ε·ρ(a). ρ is the state's prior, uniform for sql
    and dqn (which never move it) and set to (0.1, 0.3, 0.6) for mirl. Checked by the fraction of non-greedy
    actions, ε·mean(1 − ρ(g)), within its 99.9 % binomial interval, and by a χ² test of the action counts."""
    epsilon, num_envs = 0.3, 6_000
    setup, state = setup_and_state(algo, env_id="Acrobot-v1", num_envs=num_envs, start_e=epsilon, end_e=epsilon)
    prior = jnp.asarray([0.1, 0.3, 0.6]) if algo == "mirl" else state.prior
    np.testing.assert_allclose(state.prior, 1 / 3)  # every algorithm starts uniform
    state = dataclasses.replace(state, prior=prior)
    _, actions, _ = mg.choose(setup, state, jnp.asarray(5))
    logits = mg.greedy_logits(setup, mg.q_values(setup, state.params, state.obs), prior, state.beta)
    greedy, actions, prior = np.asarray(jnp.argmax(logits, axis=-1)), np.asarray(actions), np.asarray(prior)
    explored = epsilon * np.mean(1 - prior[greedy])
    observed = np.mean(actions != greedy)
    assert abs(observed - explored) < 3.3 * np.sqrt(explored * (1 - explored) / num_envs), (observed, explored)
    expected = ((1 - epsilon) * np.eye(3)[greedy] + epsilon * prior).sum(axis=0)
    chi_square = ((np.bincount(actions, minlength=3) - expected) ** 2 / expected).sum()
    assert chi_square < 13.82, (np.bincount(actions, minlength=3), expected)  # χ² with 2 degrees of freedom, 99.9 %


def test_observe_stores_the_final_observation_and_truncation_is_not_termination():
    """CartPole cut at 3 steps: the transition that hits the limit stores CartPole's true next state
    (x' = x + 0.02·ẋ, Euler, as gymnax integrates), not the next episode's first observation, and is
    not terminal; the stored observation of the next row is the reset one."""
    setup, state = setup_and_state("dqn", env_params_update={"max_steps_in_episode": 3}, start_e=1.0, end_e=1.0)
    ended = []
    for iteration in range(4):
        state, actions, _ = mg.choose(setup, state, jnp.asarray(iteration))
        state, tally = mg.observe(setup, state, actions, jnp.asarray(iteration))
        ended.append([float(x) for pair in tally.values() for x in pair])
    replay, num_envs = state.replay, 2
    rows = np.asarray(replay.obs[: 4 * num_envs]).reshape(4, num_envs, -1)
    next_rows = np.asarray(replay.next_obs[: 4 * num_envs]).reshape(4, num_envs, -1)
    terminated = np.asarray(replay.terminated[: 4 * num_envs]).reshape(4, num_envs)
    np.testing.assert_allclose(next_rows[:, :, 0], rows[:, :, 0] + 0.02 * rows[:, :, 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(next_rows[:2], rows[1:3])  # within an episode, the next row continues it
    assert not (next_rows[2] == rows[3]).all(axis=-1).any()  # the 3rd step is cut: the 4th row is a reset
    assert not terminated[2].any()  # truncation is not termination
    # the episodes' ends are tallied in the step that ends them: return and length 3 each, in both environments
    assert ended == [[0.0, 0.0, 0.0, 0.0]] * 2 + [[6.0, 2.0, 6.0, 2.0], [0.0, 0.0, 0.0, 0.0]]


def fill_with_one_transition(state, rows, obs, action, reward, next_obs, terminated):
    """The first `rows` replay slots hold the same transition (the rest stay zeros)."""
    replay = state.replay.add(
        0,
        jnp.broadcast_to(obs, (rows, *obs.shape)),
        jnp.full(rows, action),
        jnp.full(rows, reward),
        jnp.broadcast_to(next_obs, (rows, *obs.shape)),
        jnp.full(rows, terminated),
    )
    return dataclasses.replace(state, replay=replay)


def flat_params(state) -> np.ndarray:
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(state.params)])


@pytest.mark.parametrize("algo, beta_scale", [("mirl", 1.0), ("mirl", 3.0), ("dqn", 1.0)])
def test_learn_by_hand(algo, beta_scale):
    """After 4 iterations of 2 environments the replay holds 8 transitions, all the same (the other 56 slots
    are empty): the minibatch loss is (Q(s, a) − y)² of that transition; β moves by the rule from that
    loss, towards --beta-scale / L; a non-finite loss records its step (the first one is kept)."""
    setup, state = setup_and_state(algo, alpha_beta=0.5, beta_init=2.0, learning_rate=1e-3, beta_scale=beta_scale)
    obs, next_obs = jnp.asarray([0.1, -0.2, 0.03, 0.4]), jnp.asarray([0.2, 0.1, -0.05, 0.3])
    state = fill_with_one_transition(state, 8, obs, 1, 0.7, next_obs, False)
    state = dataclasses.replace(state, prior=jnp.asarray([0.4, 0.6]))
    learned, tally = mg.learn(setup, state, jnp.asarray(3))
    next_q = mg.q_values(setup, state.target_params, next_obs[None])[0]
    if algo == "dqn":
        target = 0.7 + 0.99 * float(next_q.max())
    else:
        target = 0.7 + 0.99 * float(np.log(0.4 * np.exp(2.0 * next_q[0]) + 0.6 * np.exp(2.0 * next_q[1])) / 2.0)
    q_taken = float(mg.q_values(setup, state.params, obs[None])[0, 1])
    loss = (q_taken - target) ** 2
    assert float(tally["losses/td_loss"][0]) == pytest.approx(loss, rel=1e-4) and tally["losses/td_loss"][1] == 1
    assert float(tally["losses/q_values"][0]) == pytest.approx(q_taken, rel=1e-5) and tally["losses/q_values"][1] == 1
    expected_beta = 2.0 if algo == "dqn" else 2.0 + 0.5 * (beta_scale / max(loss, 1e-3) - 2.0)
    assert float(learned.beta) == pytest.approx(expected_beta, rel=1e-4)
    # Adam's first step moves each parameter by the run's learning rate times m̂/(√v̂ + ε) = g/(|g| + ε): by
    # 1e-3 where the gradient is not tiny, never more
    moved = np.abs(flat_params(learned) - flat_params(state))
    assert moved.max() == pytest.approx(1e-3, rel=1e-4) and (moved <= 1e-3 * (1 + 1e-5)).all()

    # a non-finite loss records its environment step (the host stops the run there); the first one is kept
    broken = fill_with_one_transition(state, 8, obs, 1, np.nan, next_obs, False)
    stopped, _ = mg.learn(setup, broken, jnp.asarray(3))
    assert int(stopped.nan_step) == 4 * 2
    assert int(mg.learn(setup, stopped, jnp.asarray(5))[0].nan_step) == 4 * 2


def test_learn_and_sync_follow_the_schedule():
    """Learning every --train-frequency steps after --learning-starts, a target copy every
    --target-network-frequency steps (2 environments: 2 steps per iteration)."""
    setup, state = setup_and_state("dqn", learning_starts=20, train_frequency=4, target_network_frequency=40)
    state = fill_with_one_transition(state, 64, jnp.zeros(4), 0, 1.0, jnp.zeros(4), True)
    state = dataclasses.replace(state, target_params=jax.tree.map(lambda x: 0.5 * x, state.params))

    def changed(a, b):
        return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))

    for iteration, steps in [(7, 16), (9, 20), (12, 26), (20, 42)]:  # before learning starts; off the beat
        same, tally = mg.learn_and_sync(setup, state, jnp.asarray(iteration))
        assert not changed(same.params, state.params) and not changed(same.target_params, state.target_params), steps
        assert float(tally["losses/td_loss"][1].sum()) == 0  # no gradient step tallied
    learns, tally = mg.learn_and_sync(setup, state, jnp.asarray(13))  # 28 steps: learn, no copy
    assert changed(learns.params, state.params) and not changed(learns.target_params, state.target_params)
    assert tally["losses/td_loss"][1].tolist() == [1]  # one gradient step per phase (2 envs, every 4 steps)
    syncs, _ = mg.learn_and_sync(setup, state, jnp.asarray(19))  # 40 steps: learn and copy the new network
    assert changed(syncs.params, state.params) and not changed(syncs.target_params, syncs.params)


def test_seeds_whose_loss_went_non_finite_log_nothing_more():
    """After a seed's first non-finite loss its metrics are NaN (the logger writes nothing for NaN); the
    others' are untouched."""
    nan_step = jnp.asarray([-1, 40, -1])
    scalars = {"charts/episodic_return": jnp.asarray([1.0, 2.0, 3.0])}
    bars = {"mirl/prior": jnp.asarray([[0.5, 0.5], [0.2, 0.8], [0.1, 0.9]])}
    scalars, bars = live_seeds_only(nan_step, (scalars, bars))
    np.testing.assert_array_equal(scalars["charts/episodic_return"], [1.0, np.nan, 3.0])
    np.testing.assert_array_equal(
        bars["mirl/prior"], np.asarray([[0.5, 0.5], [np.nan, np.nan], [0.1, 0.9]], np.float32)
    )
