"""--redundant-actions K (common.envs.RedundantActions): the agent sees |A| + K actions, the K extra ones exact
copies of one action of the game; ρ's mass on them is logged; with K = 0 the game is left as it is."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mirl_gymnax as mg
from common.cli import check_flags, experiment_flags
from common.envs import NO_OP_ACTIONS, RedundantActions, make_env
from common.errors import UserError
from common.sweep import grid_runs

TINY = dict(
    total_timesteps=2_000, num_envs=4, buffer_size=1_000, learning_starts=400, batch_size=32, train_frequency=4,
    target_network_frequency=200, log_interval=400, alpha_rho=(1e-2,), alpha_beta=(1e-2,),
)  # fmt: skip


def same(a, b) -> bool:
    """Bit for bit, NaN (an interval without episodes) equal to NaN, keys by their bits."""

    def bits(x):
        return np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)

    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return all(np.array_equal(bits(x), bits(y), equal_nan=True) for x, y in pairs)


@pytest.mark.parametrize("env_id, copied", [("CartPole-v1", 1), ("Acrobot-v1", None), ("Breakout-MinAtar", None)])
def test_each_copy_plays_the_copied_action_and_the_others_are_the_games(env_id, copied):
    game, params = make_env(env_id)
    env, _ = make_env(env_id, redundant_actions=3, copied_action=copied)
    n = game.action_space(params).n
    copied = NO_OP_ACTIONS[env_id] if copied is None else copied
    assert env.action_space(params).n == n + 3
    key, step_key = jax.random.split(jax.random.key(0))
    _, state = game.reset(key, params)
    for _ in range(5):  # away from the first state, where some actions may coincide
        state = game.step(step_key, state, 0, params)[1]
    for action in range(n + 3):
        played = env.step(step_key, state, jnp.asarray(action), params)
        expected = game.step(step_key, state, jnp.asarray(action if action < n else copied), params)
        assert same(played, expected), f"action {action}"
    # the copies differ from another action of the game where the game tells actions apart
    other = game.step(step_key, state, jnp.asarray((copied + 1) % n), params)
    assert not same(env.step(step_key, state, jnp.asarray(n), params)[:2], other[:2])


def test_the_listed_no_ops_do_nothing():
    """Read from gymnax's own parameters: Acrobot's torque, MinAtar's action set (0 is 'n'), and Catch's and
    MountainCar's push (action − 1) shown by a step with that action and with the push removed from the dynamics."""
    acrobot, acrobot_params = make_env("Acrobot-v1")
    assert float(acrobot_params.available_torque[NO_OP_ACTIONS["Acrobot-v1"]]) == 0.0
    for game in [name for name in NO_OP_ACTIONS if name.endswith("-MinAtar")]:
        for full in (False, True):
            env, _ = make_env(game, full)
            assert int(env.action_set[NO_OP_ACTIONS[game]]) == 0, (game, full)
    car, car_params = make_env("MountainCar-v0")
    _, state = car.reset(jax.random.key(1), car_params)
    stepped = car.step_env(jax.random.key(2), state, NO_OP_ACTIONS["MountainCar-v0"], car_params)[1]
    no_force = car.step_env(jax.random.key(2), state, 1, car_params.replace(force=0.0))[1]  # (1 − 1)·0 either way
    pushed = car.step_env(jax.random.key(2), state, 1, car_params.replace(force=1.0))[1]
    assert same(stepped, no_force) and same(stepped, pushed)  # the action's push is 0 whatever the force
    catch, catch_params = make_env("Catch-bsuite")
    _, state = catch.reset(jax.random.key(3), catch_params)
    moved = catch.step_env(jax.random.key(4), state, NO_OP_ACTIONS["Catch-bsuite"], catch_params)[1]
    assert int(moved.paddle_x) == int(state.paddle_x)


def test_bad_choices_are_refused_naming_the_fix():
    with pytest.raises(UserError, match="CartPole-v1 has no action that does nothing.*--copied-action"):
        make_env("CartPole-v1", redundant_actions=2)
    with pytest.raises(UserError, match="must be one of CartPole-v1's actions, 0 to 1"):
        make_env("CartPole-v1", redundant_actions=2, copied_action=2)
    with pytest.raises(UserError, match="give both"):
        make_env("Acrobot-v1", copied_action=1)
    # the flags alone are refused before anything is built, as every flag is
    for flags, message in [
        (dict(redundant_actions=-1), "--redundant-actions \\(-1\\) must be non-negative"),
        (dict(redundant_actions=2), "CartPole-v1 has no action that does nothing"),
        (dict(copied_action=0), "give both"),
        (dict(redundant_actions=2, copied_action=-1), "must be one of CartPole-v1's actions"),
    ]:
        with pytest.raises(UserError, match=message):
            check_flags(mg.Args(**flags))
    check_flags(mg.Args(env_id="Acrobot-v1", redundant_actions=2))  # its no-op by default


def train(env, **flags):
    args = mg.Args(**{**TINY, **flags})
    trainer = mg.make_train(args, env, env.default_params)
    hypers = mg.stacked_hypers(grid_runs(args, mg.SWEPT_FLAGS))
    return jax.jit(trainer.train)(jax.random.split(jax.random.key(0), 1), hypers)


def test_zero_copies_leave_the_game_and_the_run_as_they_are():
    game, params = make_env("Acrobot-v1")
    assert not isinstance(make_env("Acrobot-v1", redundant_actions=0)[0], RedundantActions)
    wrapped = RedundantActions(game, game.action_space(params).n, 0, NO_OP_ACTIONS["Acrobot-v1"])
    # the wrapper itself, with no copies, trains the same agent bit for bit (the behaviour record shows that the
    # flag's default leaves every run as the commit before the flag computed it)
    assert same(train(game), train(wrapped))


@pytest.mark.parametrize("algo", ["mirl", "sql"])
def test_prior_mass_on_the_copies_is_logged(algo):
    env, _ = make_env("Acrobot-v1", redundant_actions=3)
    states, records = train(env, algo=algo, redundant_actions=3)
    mass = np.asarray(records.scalars["mirl/prior_on_copies"])  # (intervals, runs)
    assert mass.shape == (TINY["total_timesteps"] // TINY["log_interval"], 1)
    np.testing.assert_array_equal(mass[-1], np.asarray(states.prior)[:, 3:].sum(-1))  # the last three of 3 + 3
    if algo == "sql":  # ρ stays uniform: K / (|A| + K)
        np.testing.assert_allclose(mass, 0.5, rtol=1e-6)
    else:
        assert np.abs(np.diff(mass[:, 0])).max() > 1e-4  # ρ learns
    _, plain = train(make_env("Acrobot-v1")[0], algo=algo)
    assert "mirl/prior_on_copies" not in plain.scalars


def test_runs_with_other_copies_or_beta_scales_are_other_experiments():
    # plots and aggregates pool only runs whose experiment flags agree (common.plot.check_same_flags)
    plain = experiment_flags(mg.Args(env_id="Acrobot-v1"))
    for changed in (dict(redundant_actions=3), dict(redundant_actions=3, copied_action=0), dict(beta_scale=(10.0,))):
        flags = experiment_flags(mg.Args(env_id="Acrobot-v1", **changed))
        assert {name for name in flags if flags[name] != plain[name]} == set(changed)
