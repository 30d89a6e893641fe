"""The replay buffers of the MIRL scripts, and the rules their loop's flags must keep. Both buffers are circular
and write where the iteration number says, the same for every seed, so that vmapped writes stay in-place slice
updates.

- Replay (mirl_gymnax.py): whole transitions, observations in the dtype the caller chooses.
- FrameReplay (mirl_atari.py): one 84×84 frame per transition, the frame stacks rebuilt when it samples: an eighth
  of the memory of storing both stacks of every transition.
"""

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from common.errors import flag


class Replay(eqx.Module):
    """A circular buffer of transitions. Where to write and how much is filled follow from the
    iteration number, the same for every seed, so vmapped writes stay in-place slice updates."""

    obs: jax.Array
    actions: jax.Array
    rewards: jax.Array
    next_obs: jax.Array
    terminated: jax.Array

    @staticmethod
    def empty(capacity: int, obs_shape: tuple[int, ...], obs_dtype) -> "Replay":
        return Replay(
            obs=jnp.zeros((capacity, *obs_shape), obs_dtype),
            actions=jnp.zeros(capacity, jnp.int32),
            rewards=jnp.zeros(capacity, jnp.float32),
            next_obs=jnp.zeros((capacity, *obs_shape), obs_dtype),
            terminated=jnp.zeros(capacity, jnp.bool_),
        )

    @staticmethod
    def bytes_per_transition(obs_shape: tuple[int, ...], obs_dtype) -> int:
        """Two observations, an int32 action, a float32 reward and a flag."""
        return 2 * int(np.prod(obs_shape)) * jnp.dtype(obs_dtype).itemsize + 4 + 4 + 1

    def add(self, position: jax.Array, obs, actions, rewards, next_obs, terminated) -> "Replay":
        def write(buffer, values):
            return jax.lax.dynamic_update_slice_in_dim(buffer, values.astype(buffer.dtype), position, axis=0)

        return Replay(*map(write, jax.tree.leaves(self), (obs, actions, rewards, next_obs, terminated)))

    def sample(self, key: jax.Array, filled: jax.Array, batch_size: int) -> "Replay":
        indices = jax.random.randint(key, (batch_size,), 0, filled)
        return jax.tree.map(lambda buffer: buffer[indices], self)


class Batch(NamedTuple):
    obs: jax.Array
    actions: jax.Array
    rewards: jax.Array
    next_obs: jax.Array
    terminated: jax.Array
    valid: jax.Array  # False for transitions that must not train (see FrameReplay.gather)


class FrameReplay(eqx.Module):
    """A circular buffer of rows, one row per iteration, one column per environment. Row t holds the
    newest frame of the stack the agent acted on, the action, and what the step returned.

    envpool stacks frames continuously across a lost life and fills the whole stack with the first
    frame after a real reset (game over or truncation): `stack` rebuilds exactly that from the frames
    and the `first` flags. The step after a `done` is envpool's auto-reset, which ignores the action:
    such rows are not `valid` transitions, and neither is a row whose next row starts a new game."""

    frames: jax.Array  # (rows, envs, height, width) uint8
    actions: jax.Array  # (rows, envs) uint8
    rewards: jax.Array  # (rows, envs) float32, as the learner sees them (clipped)
    terminated: jax.Array  # (rows, envs): the step ended the episode (a life, with --episodic-life)
    first: jax.Array  # (rows, envs): the row's stack is a fresh reset, every frame the same
    valid: jax.Array  # (rows, envs): the action was carried out (not an auto-reset step)
    stack_size: int = eqx.field(static=True)

    @staticmethod
    def empty(capacity: int, num_envs: int, obs_shape: tuple[int, int, int]) -> "FrameReplay":
        stack_size, *frame_shape = obs_shape
        rows = capacity // num_envs
        return FrameReplay(
            frames=jnp.zeros((rows, num_envs, *frame_shape), jnp.uint8),
            actions=jnp.zeros((rows, num_envs), jnp.uint8),
            rewards=jnp.zeros((rows, num_envs), jnp.float32),
            terminated=jnp.zeros((rows, num_envs), jnp.bool_),
            first=jnp.zeros((rows, num_envs), jnp.bool_),
            valid=jnp.zeros((rows, num_envs), jnp.bool_),
            stack_size=stack_size,
        )

    @staticmethod
    def bytes_per_transition(obs_shape: tuple[int, int, int]) -> int:
        """One frame, a uint8 action, a float32 reward and three flags."""
        return int(np.prod(obs_shape[1:])) + 1 + 4 + 3

    @property
    def num_rows(self) -> int:
        return self.frames.shape[0]

    def add(self, row: jax.Array, frame, action, reward, terminated, first, valid) -> "FrameReplay":
        def write(buffer, values):
            return jax.lax.dynamic_update_index_in_dim(buffer, values.astype(buffer.dtype), row, axis=0)

        fields = (self.frames, self.actions, self.rewards, self.terminated, self.first, self.valid)
        return FrameReplay(
            *map(write, fields, (frame, action, reward, terminated, first, valid)), stack_size=self.stack_size
        )

    def sample_indices(self, key: jax.Array, rows_written: jax.Array, batch_size: int):
        """Uniform (row, env) pairs among the rows whose stack and next stack are both still stored:
        every written row but the newest (no next row yet) and, once the buffer has wrapped, the
        oldest stack_size − 1 (their earlier frames are overwritten)."""
        full = rows_written >= self.num_rows
        next_row = rows_written % self.num_rows
        start = jnp.where(full, next_row + self.stack_size - 1, 0)
        count = jnp.where(full, self.num_rows - self.stack_size, rows_written - 1)
        num_envs = self.frames.shape[1]
        flat = jax.random.randint(key, (batch_size,), 0, count * num_envs)
        return (start + flat // num_envs) % self.num_rows, flat % num_envs

    def stack(self, rows: jax.Array, envs: jax.Array) -> jax.Array:
        """The (batch, stack_size, height, width) observations of rows `rows`, oldest frame first:
        frames before the newest fresh reset within the stack are replaced by that reset frame."""
        lags = jnp.arange(self.stack_size)  # 0 is the newest frame
        recent_first = self.first[(rows[:, None] - lags[None, :-1]) % self.num_rows, envs[:, None]]
        reset_lag = jnp.where(recent_first.any(axis=1), jnp.argmax(recent_first, axis=1), self.stack_size - 1)
        frame_lags = jnp.minimum(lags[::-1][None, :], reset_lag[:, None])
        return self.frames[(rows[:, None] - frame_lags) % self.num_rows, envs[:, None]]

    def gather(self, rows: jax.Array, envs: jax.Array) -> Batch:
        next_rows = (rows + 1) % self.num_rows
        # a row followed by a fresh reset has no real next observation: during a run that row is an
        # auto-reset step already, and after --resume it is the last step before the interruption
        valid = self.valid[rows, envs] & ~self.first[next_rows, envs]
        return Batch(
            obs=self.stack(rows, envs),
            actions=self.actions[rows, envs].astype(jnp.int32),
            rewards=self.rewards[rows, envs],
            next_obs=self.stack(next_rows, envs),
            terminated=self.terminated[rows, envs],
            valid=valid,
        )


def loop_problems(args: Any) -> list[str]:
    """What would make an off-policy loop (both MIRL scripts) never learn, never update its target network, or
    sample more transitions than its replay holds; the flags are in range."""
    problems = []
    if args.train_frequency % args.num_envs and args.num_envs % args.train_frequency:
        problems.append(
            f"--train-frequency ({args.train_frequency}) and --num-envs ({args.num_envs}) must divide one another"
        )
    for small, large in (("batch_size", "learning_starts"), ("batch_size", "buffer_size")):
        if getattr(args, small) > getattr(args, large):
            problems.append(
                f"{flag(large)} ({getattr(args, large)}) must be at least {flag(small)} ({getattr(args, small)})"
            )
    if first_learning_step(args) > args.total_timesteps:
        problems.append(
            f"--learning-starts ({args.learning_starts}) leaves no learning step before --total-timesteps "
            f"({args.total_timesteps}): the run would never learn"
        )
    elif first_target_copy(args, after=first_learning_step(args)) >= last_learning_step(args):
        problems.append(
            f"--target-network-frequency ({args.target_network_frequency}) copies no trained network into the target "
            f"network before the last gradient step (--learning-starts {args.learning_starts}, --total-timesteps "
            f"{args.total_timesteps}): the TD targets would stay those of the initial network"
        )
    return problems


def learning_period(args: Any) -> int:
    """Environment steps between the scripts' learning phases (max of --train-frequency and --num-envs)."""
    return max(args.train_frequency, args.num_envs)


def first_learning_step(args: Any) -> int:
    """The environment step of the first gradient step: the first multiple of the period past --learning-starts."""
    return (args.learning_starts // learning_period(args) + 1) * learning_period(args)


def last_learning_step(args: Any) -> int:
    return args.total_timesteps // learning_period(args) * learning_period(args)


def first_target_copy(args: Any, after: int) -> int:
    """The environment step of the first copy into the target network at or after step `after` (> --learning-starts).
    The scripts copy, after that step's learning, at the first step (a multiple of --num-envs) of each window
    [k·f, k·f + num_envs), f the target frequency."""
    frequency, num_envs = args.target_network_frequency, args.num_envs

    def copy_step(k: int) -> int:  # the first multiple of num_envs at or after k·f
        return -(-k * frequency // num_envs) * num_envs

    k = max(1, after // frequency)
    while copy_step(k) < after:
        k += 1
    return copy_step(k)
