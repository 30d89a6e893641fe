"""gymnax environments for the MIRL script: ids checked against gymnax's registry (discrete actions only), copies of
an action added on request (the redundancy study), the dtype in which a replay stores each environment's observations
without loss, and whole episodes played by a policy."""

import difflib
from collections.abc import Callable

import jax
import jax.numpy as jnp

from common.errors import UserError

# gymnax environments with a continuous action space; a test keeps this in step with gymnax
CONTINUOUS_ENV_IDS = ("Pendulum-v1", "MountainCarContinuous-v0", "PointRobot-misc", "Reacher-misc", "Swimmer-misc")


def make_env(env_id: str, full_action_set: bool = False, redundant_actions: int = 0, copied_action: int | None = None):
    """gymnax's environment and parameters; with `redundant_actions` K > 0, wrapped in RedundantActions: K more
    actions, each a copy of `copied_action` (by default the game's no-op, see NO_OP_ACTIONS)."""
    # imported here, not at the top: gymnax makes arrays as it is imported, which starts JAX's devices, and a run
    # of several processes must join them first (common.devices.join_processes)
    import gymnax
    from gymnax.environments import spaces

    discrete = [name for name in gymnax.registered_envs if name not in CONTINUOUS_ENV_IDS]
    if env_id not in gymnax.registered_envs:
        close = difflib.get_close_matches(env_id, discrete, n=3, cutoff=0.5)
        guess = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(f"unknown env id {env_id!r}{guess}; discrete-action gymnax environments: {', '.join(discrete)}")
    minatar = [name for name in gymnax.registered_envs if name.endswith("-MinAtar")]
    if full_action_set and env_id not in minatar:
        raise UserError(f"--full-action-set applies to the MinAtar games only: {', '.join(minatar)}")
    env, env_params = gymnax.make(env_id, **({"use_minimal_action_set": False} if full_action_set else {}))
    if not isinstance(env.action_space(env_params), spaces.Discrete):
        raise UserError(f"{env_id} has a continuous action space; MIRL needs discrete actions: {', '.join(discrete)}")
    problems = redundancy_problems(env_id, redundant_actions, copied_action)
    if problems:
        raise UserError("; ".join(problems))
    if redundant_actions == 0:
        return env, env_params
    game_actions = env.action_space(env_params).n
    copied_action = NO_OP_ACTIONS[env_id] if copied_action is None else copied_action
    if not 0 <= copied_action < game_actions:
        raise UserError(f"--copied-action ({copied_action}) must be one of {env_id}'s actions, 0 to {game_actions - 1}")
    return RedundantActions(env, game_actions, redundant_actions, copied_action), env_params


def redundancy_problems(env_id: str, redundant_actions: int, copied_action: int | None) -> list[str]:
    """What is wrong with --redundant-actions and --copied-action, before any environment is made."""
    if redundant_actions == 0 and copied_action is not None:
        return ["--copied-action names the action that --redundant-actions copies: give both"]
    if redundant_actions and copied_action is None and env_id not in NO_OP_ACTIONS:
        return [f"{env_id} has no action that does nothing: name the one the redundant actions copy (--copied-action)"]
    if copied_action is not None and copied_action < 0:
        return [f"--copied-action ({copied_action}) must be one of {env_id}'s actions, from 0"]
    return []


MINATAR_GAMES = ("Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "Seaquest-MinAtar", "SpaceInvaders-MinAtar")
# The action that changes nothing, where a game has one, read from gymnax 1.0's source: Acrobot's torque
# available_torque[1] = 0, MountainCar's and Catch's push (action − 1) = 0, and MinAtar's action_set[0] = 0, 'n'
# (no-op) in the minimal and the full set of every game. A test checks each against the game's own steps.
NO_OP_ACTIONS = {"Acrobot-v1": 1, "MountainCar-v0": 1, "Catch-bsuite": 1} | {game: 0 for game in MINATAR_GAMES}


class RedundantActions:
    """An environment with `copies` more actions, each an exact copy of action `copied`: the agent's action
    a >= `game_actions` plays `copied`. Copies that change nothing are what a uniform prior wastes exploration and
    value on, and what a learned marginal prior can learn to leave (docs/results.md, the redundancy study)."""

    def __init__(self, env, game_actions: int, copies: int, copied: int):
        self.env, self.game_actions, self.copies, self.copied = env, game_actions, copies, copied

    def __getattr__(self, name):  # reset, observation_space, default_params...: the game's own
        return getattr(self.env, name)

    def game_action(self, action: jax.Array) -> jax.Array:
        return jnp.where(action < self.game_actions, action, self.copied)

    def step(self, key, state, action, params=None):
        return self.env.step(key, state, self.game_action(action), params)

    @property
    def num_actions(self) -> int:
        return self.game_actions + self.copies

    def action_space(self, params=None):
        from gymnax.environments import spaces

        return spaces.Discrete(self.num_actions)


# Environments whose observations are 0/1 grids by construction: gymnax 1.0's `get_obs` of each writes only
# 0, 1, True or False into a zero array before casting it to float32. They are stored as uint8, a quarter of
# float32's memory, without loss; every other environment in its own dtype (a test round-trips them all).
BYTE_GRID_ENV_IDS = (*MINATAR_GAMES, "Catch-bsuite", "DeepSea-bsuite", "Pong-misc")


def replay_obs_dtype(env_id: str, env, env_params) -> jnp.dtype:
    """The dtype the replay stores observations in: uint8 for the 0/1 grids above, else the environment's own."""
    if env_id in BYTE_GRID_ENV_IDS:
        return jnp.dtype(jnp.uint8)
    obs, _ = jax.eval_shape(env.reset, jax.random.key(0), env_params)
    return obs.dtype


def episode_returns(env, env_params, act: Callable[[jax.Array], jax.Array], key: jax.Array, num_episodes: int):
    """The returns of `num_episodes` episodes played at once, each to its end, by `act` (observations → actions).
    The loop runs the environment's longest episode; gymnax starts a new episode where one ends, and what that one
    earns is not counted."""
    reset_key, step_key = jax.random.split(key)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(reset_key, num_episodes), env_params)

    def step(carry, key):
        obs, env_state, returns, running = carry
        obs, env_state, rewards, terminated, truncated, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(key, num_episodes), env_state, act(obs), env_params
        )
        returns = returns + jnp.where(running, rewards, 0.0)
        return (obs, env_state, returns, running & ~(terminated | truncated)), None

    carry = (obs, env_state, jnp.zeros(num_episodes), jnp.ones(num_episodes, jnp.bool_))
    max_steps = int(env_params.max_steps_in_episode)
    return jax.lax.scan(step, carry, jax.random.split(step_key, max_steps))[0][2]
