"""common.replay.FrameReplay, which stores one frame per transition, against a plain replay of whole
stacked transitions: on synthetic envpool-like streams (lost lives, game overs, truncations,
auto-reset steps, an interruption as after --resume, wrap-around) and on real envpool Atari frames."""

import dataclasses
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mirl_atari
from common.replay import FrameReplay
from mirl_atari import AgentState, EnvStep, fresh_games

STACK = 4


class FakeAtari:
    """envpool's Atari semantics for one environment, with tiny frames that each carry a unique id:
    a real reset fills the stack with its frame; a lost life ends the episode but the game (and the
    stack) goes on; the step after any `done` is an auto-reset that ignores the action."""

    def __init__(self, rng: np.random.Generator, frame_shape, max_steps: int):
        self.rng, self.frame_shape, self.max_steps = rng, frame_shape, max_steps
        self.next_id = 0
        self.pending_reset = None  # None, "life" or "game" after a done

    def frame(self):
        self.next_id += 1
        return np.full(self.frame_shape, self.next_id % 251, np.uint8)

    def reset(self):
        self.stack = np.stack([self.frame()] * STACK)
        self.elapsed, self.lives, self.pending_reset = 0, 3, None
        return self.stack.copy(), self.elapsed

    def step(self):
        """Returns (obs, reward, terminated, truncated, elapsed)."""
        if self.pending_reset == "game":
            obs, elapsed = self.reset()
            return obs, 0.0, False, False, elapsed
        self.stack = np.concatenate([self.stack[1:], self.frame()[None]])
        if self.pending_reset == "life":
            self.pending_reset = None
            return self.stack.copy(), 0.0, False, False, self.elapsed
        self.elapsed += 1
        reward = float(self.rng.integers(-1, 2))
        terminated = bool(self.rng.random() < 0.08)
        truncated = not terminated and self.elapsed >= self.max_steps
        if terminated:
            self.lives -= 1
        self.pending_reset = "game" if truncated or (terminated and self.lives == 0) else "life" if terminated else None
        return self.stack.copy(), reward, terminated, truncated, self.elapsed


def fill(replay: FrameReplay, num_steps: int, num_envs: int, seed: int, interrupt_at: int | None = None):
    """Drive `replay` through mirl_atari's own `observe` step, and keep the reference: per row and
    environment, the whole transition (obs, action, reward, next_obs, terminated) and whether it may train."""
    rng = np.random.default_rng(seed)
    envs = [FakeAtari(rng, replay.frames.shape[2:], max_steps=int(rng.integers(5, 40))) for _ in range(num_envs)]
    obs = np.stack([env.reset()[0] for env in envs])
    # the agent's other fields play no part in storing a step
    state = AgentState(None, None, None, replay, **fresh_games(jnp.asarray(obs)), prior=None, beta=None, key=None,
                       nan_step=None, hypers=None)  # fmt: skip
    observe = jax.jit(mirl_atari.observe, static_argnums=0)
    rows = replay.num_rows
    reference, after_done = {}, np.zeros(num_envs, bool)
    for t in range(num_steps):
        if t == interrupt_at:  # what --resume does: every game restarts, and the last rows get no next obs
            obs = np.stack([env.reset()[0] for env in envs])
            state = dataclasses.replace(state, **fresh_games(jnp.asarray(obs)))
            after_done[:] = False
            for e in range(num_envs):
                reference[(t - 1) % rows, e]["valid"] = False
        actions = rng.integers(0, 6, num_envs)
        steps = [env.step() for env in envs]
        next_obs = np.stack([s[0] for s in steps])
        rewards, terminated, truncated, next_elapsed = (np.array([s[i] for s in steps]) for i in range(1, 5))
        game_over = np.array([env.pending_reset == "game" for env in envs])
        step = EnvStep(next_obs, rewards, terminated, truncated, rewards, game_over, next_elapsed)
        state, _ = observe(None, state, jnp.asarray(actions), jax.tree.map(jnp.asarray, step), jnp.asarray(t))
        for e in range(num_envs):
            reference[t % rows, e] = dict(
                obs=obs[e],
                actions=actions[e],
                rewards=rewards[e],
                next_obs=next_obs[e],
                terminated=terminated[e],
                valid=not after_done[e],
            )
        obs, after_done = next_obs, terminated | truncated
    return state.replay, reference


def all_sampleable(replay: FrameReplay, rows_written: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (row, env) pair sample_indices can return, found by sampling until the set stops growing."""
    sample = jax.jit(FrameReplay.sample_indices, static_argnums=3)
    rows, envs = sample(replay, jax.random.key(0), jnp.asarray(rows_written), 20_000)
    pairs = sorted(set(zip(np.asarray(rows).tolist(), np.asarray(envs).tolist(), strict=True)))
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


@pytest.mark.parametrize(
    "capacity, num_envs, num_steps, interrupt_at",
    [
        (120, 3, 30, None),  # not yet full
        (120, 3, 97, None),  # wrapped around, mid-buffer
        (64, 1, 200, None),  # wrapped several times, one environment
        (90, 2, 130, 110),  # wrap-around, then an interruption (as after --resume)
    ],
)
def test_frame_replay_equals_stacked_reference(capacity, num_envs, num_steps, interrupt_at):
    replay = FrameReplay.empty(capacity, num_envs, (STACK, 2, 3))
    replay, reference = fill(replay, num_steps, num_envs, seed=capacity + num_steps, interrupt_at=interrupt_at)
    rows, envs = all_sampleable(replay, num_steps)
    num_rows = capacity // num_envs
    # exactly the rows whose stack and next stack are stored: all written rows but the newest, and
    # once wrapped, not the stack_size - 1 oldest
    newest = (num_steps - 1) % num_rows
    expected_rows = (
        set(range(num_steps - 1))
        if num_steps <= num_rows
        else {(newest - k) % num_rows for k in range(1, num_rows - STACK + 1)}
    )
    assert set(rows.tolist()) == expected_rows
    assert set(envs.tolist()) == set(range(num_envs))

    batch = jax.jit(FrameReplay.gather)(replay, jnp.asarray(rows), jnp.asarray(envs))
    expected = {
        field: np.stack([reference[r, e][field] for r, e in zip(rows, envs, strict=True)])
        for field in ("obs", "actions", "rewards", "next_obs", "terminated", "valid")
    }
    np.testing.assert_array_equal(np.asarray(batch.valid), expected["valid"])
    np.testing.assert_array_equal(np.asarray(batch.obs), expected["obs"])
    # what a transition that trains is made of (an interrupted one has no next observation to compare)
    trains = expected["valid"]
    for field in ("actions", "rewards", "next_obs", "terminated"):
        np.testing.assert_array_equal(np.asarray(getattr(batch, field))[trains], expected[field][trains], err_msg=field)
    # the streams exercised every case: auto-reset steps, terminations, and stacks that a reset cut short
    obs = np.asarray(batch.obs)
    assert (~np.asarray(batch.valid)).any() and np.asarray(batch.terminated).any()
    assert ((obs[:, 0] == obs[:, 1]).all(axis=(1, 2)) & (obs[:, 1] != obs[:, 3]).any(axis=(1, 2))).any()


def test_memory_per_transition():
    obs_shape = (STACK, 84, 84)
    per_transition = FrameReplay.bytes_per_transition(obs_shape)
    replay = jax.eval_shape(lambda: FrameReplay.empty(1_000, 4, obs_shape))
    allocated = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(replay))
    assert allocated == 1_000 * per_transition
    assert 1_000_000 * per_transition <= 7.2e9  # whole stacks of obs and next_obs would take 56 GB


def test_stacks_match_envpool_breakout():
    """Real frames: every rebuilt stack equals the one envpool returned, across lost lives, game
    overs and truncations (max_episode_steps is tiny to force them)."""
    if sys.version_info < (3, 11):
        pytest.skip("envpool 1.2 has wheels for Python 3.11+ only")
    import envpool

    num_envs, num_steps = 2, 400
    env = envpool.make(
        "Breakout-v5",
        env_type="gymnasium",
        num_envs=num_envs,
        seed=0,
        episodic_life=True,
        reward_clip=True,
        max_episode_steps=60,
    )
    obs, info = env.reset()
    replay = FrameReplay.empty(num_steps * num_envs, num_envs, obs.shape[1:])
    add = jax.jit(FrameReplay.add)
    rng = np.random.default_rng(0)
    elapsed, after_done, observed, dones = info["elapsed_step"], np.zeros(num_envs, bool), [], 0
    for t in range(num_steps):
        actions = rng.integers(0, env.action_space.n, num_envs)
        next_obs, rewards, terminated, truncated, info = env.step(actions)
        replay = add(replay, jnp.asarray(t), obs[:, -1], actions, rewards, terminated, elapsed == 0, ~after_done)
        observed.append(obs)
        obs, elapsed, after_done = next_obs, info["elapsed_step"], terminated | truncated
        dones += int((terminated | truncated).sum())
    assert dones >= 6
    rows = np.repeat(np.arange(num_steps), num_envs)
    envs = np.tile(np.arange(num_envs), num_steps)
    stacks = np.asarray(replay.stack(jnp.asarray(rows), jnp.asarray(envs)))
    np.testing.assert_array_equal(stacks, np.stack(observed).reshape(-1, *obs.shape[1:]))


def test_learn_gives_no_weight_to_invalid_transitions():
    """A replay of one frame everywhere, every transition terminal: valid rows reward 0.5, the others (as an
    auto-reset step would be) 1000. The learner's loss is (Q(s, a) − 0.5)², as if only the valid rows existed."""
    args = mirl_atari.Args(num_envs=1, buffer_size=16, batch_size=32, algo="dqn")
    obs_shape = (STACK, 84, 84)
    setup = mirl_atari.make_setup(args, 4, obs_shape)
    params, _ = eqx.partition(mirl_atari.QNetwork(obs_shape, 4, jax.random.key(0)), eqx.is_array)
    frame = jax.random.randint(jax.random.key(1), (1, 84, 84), 0, 256).astype(jnp.uint8)
    replay = FrameReplay.empty(16, 1, obs_shape)
    for row in range(16):
        valid = row % 2 == 0
        flags = [jnp.full(1, flag) for flag in (True, row == 0, valid)]  # terminated, first, valid
        replay = replay.add(row, frame, jnp.ones(1), jnp.full(1, 0.5 if valid else 1000.0), *flags)
    stack = jnp.broadcast_to(frame, (1, *obs_shape))
    hypers = mirl_atari.only_configuration(args)
    state = AgentState(
        params, params, setup.optimizer(hypers.learning_rate).init(params), replay, **fresh_games(stack),
        prior=jnp.full(4, 0.25), beta=jnp.asarray(1.0), key=jax.random.key(2), nan_step=jnp.asarray(-1),
        hypers=hypers,
    )  # fmt: skip
    _, tally = jax.jit(mirl_atari.learn, static_argnums=0)(setup, state, jnp.asarray(15))
    q_taken = float(mirl_atari.q_values(setup, params, stack)[0, 1])
    assert float(tally["losses/td_loss"][0]) == pytest.approx((q_taken - 0.5) ** 2, rel=1e-4)
