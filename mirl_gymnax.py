"""MIRL on gymnax: soft Q-learning with a learned marginal action prior ρ and an adaptive inverse
temperature β (Grau-Moya, Leibfried & Vrancx, "Soft Q-Learning with Mutual-Information
Regularization", ICLR 2019), with SQL (uniform prior) and DQN (hard max) as `--algo` special cases.

The environments run on the device too: acting, the replay buffer, the ε schedule, ρ, β, target
syncs and gradient updates are one `jax.lax.scan` per chunk of ten logging intervals (ending at every
checkpoint), compiled once per chunk shape (common.loop.Chunk: the defaults need one, and a shorter last chunk one
more); each chunk returns its intervals' metrics, which the host writes to TensorBoard. `--num-seeds N` trains N
independent seeds at once (vmapped, and sharded over devices when there are several).

Sweeps run in the same program: the float flags marked "swept" take several values, and every combination of them
trains with every seed (`--alpha-rho 1e-5 4e-5 --learning-rate 1e-4 2.5e-4 --num-seeds 5`: 20 agents). Their values
are arrays in the state (Hypers), so the grid costs no extra compilation.
"""

import dataclasses
import itertools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from common.checkpoint import init_or_restore, non_finite_stop
from common.cli import run_script, start_resume
from common.devices import (
    announce_placement,
    check_fits,
    host_value,
    is_lead_process,
    join_processes,
    seed_mesh,
    seed_sharding,
    split_host_cpu,
    unroll_threefry_on_cpu,
)
from common.errors import UserError, flag, out_of_range, plural
from common.logger import Record, RunLogger, make_run_name, nan_mean, start_tracking
from common.loop import Chunk, chunks, scan_logged

SCRIPT = os.path.basename(__file__)
unroll_threefry_on_cpu()  # the same random bits, faster on a CPU


@dataclass(frozen=True)
class Args:
    exp_name: str | None = None
    """the name of this experiment: runs go to runs/{env_id}__{exp_name}__{seed}__{time} (default: the --algo)"""
    seed: int = 1
    """seed of the first run; seed k of --num-seeds uses seed + k"""
    num_seeds: int = 1
    """independent seeds trained at once (vmapped; sharded over devices when there are several); with several
    values for the swept flags (the float flags so marked), every combination trains with these seeds, all in one
    program, one TensorBoard sub-run each"""
    cpu_devices: int = 0
    """JAX devices to split this host's CPU into, the seeds sharded over them, each device running its seeds on its
    own thread (8 CartPole seeds ran 1.9x faster on 2 cores as 2 devices). 0: one per core, as many as divide
    the runs (configurations × seeds) evenly, so one seed runs unsplit; 1: no split. The count used is
    recorded with the run (float32 rounding depends on it) and a resume keeps it. Accelerators stay the
    default devices"""
    num_processes: int = 1
    """processes that train the seeds together, each holding the seeds of its own devices (jax.distributed; the
    README's Several processes): start the same command in each, with its --process-id"""
    process_id: int | None = None
    """this process's index, 0 to --num-processes − 1 (default: from SLURM or Open MPI, where JAX detects them)"""
    coordinator_address: str | None = None
    """host:port of process 0, which the others connect to (default: from SLURM or Open MPI)"""
    track: bool = False
    """mirror the TensorBoard logs to Weights & Biases"""
    wandb_project_name: str = "mirl-jax"
    """the Weights & Biases project"""
    wandb_entity: str | None = None
    """the Weights & Biases entity (team)"""
    save_model: bool = False
    """write a checkpoint (parameters, optimiser, ρ, β, replay, RNG, step, Args) every --checkpoint-interval steps"""
    checkpoint_interval: int = 100_000
    """environment steps (per seed) between checkpoints"""
    keep_checkpoints: int = 1
    """how many of the newest checkpoints to keep (0 keeps all)"""
    resume: str | None = None
    """continue the run saved in this checkpoint file with its flags; only --total-timesteps (see the README's
    Resuming) and the logging, checkpoint and evaluation flags may be changed"""
    log_interval: int = 5_000
    """environment steps (per seed) between TensorBoard writes"""

    # Algorithm
    env_id: str = "CartPole-v1"
    """the id of a discrete-action gymnax environment"""
    full_action_set: bool = False
    """MinAtar: all 6 actions of the game engine instead of the game's minimal set (many then do the same thing:
    the setting where a learned action prior should matter most)"""
    algo: Literal["mirl", "sql", "dqn"] = "mirl"
    """mirl: learned prior ρ, adaptive β; sql: uniform prior, adaptive β; dqn: hard max backup"""
    total_timesteps: int = 500_000
    """environment steps per seed"""
    num_envs: int = 10
    """parallel environments per seed"""
    learning_rate: tuple[float, ...] = (2.5e-4,)
    """Adam learning rate; several values sweep it (see --num-seeds)"""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0 over the gradient steps, so that the final policy is a settled one"""
    buffer_size: int = 10_000
    """replay capacity in transitions (per seed)"""
    gamma: float = 0.99
    """discount factor"""
    target_network_frequency: int = 500
    """environment steps between hard copies of the Q-network into the target network"""
    batch_size: int = 128
    """minibatch size"""
    start_e: float = 1.0
    """ε at the start"""
    end_e: tuple[float, ...] = (0.05,)
    """ε at the end of the exploration phase; several values sweep it"""
    exploration_fraction: float = 0.5
    """fraction of --total-timesteps over which ε decays linearly"""
    learning_starts: int = 10_000
    """environment steps before learning starts"""
    train_frequency: int = 10
    """environment steps per gradient step"""
    huber: bool = False
    """Huber instead of squared TD error"""
    alpha_rho: tuple[float, ...] = (4e-5,)
    """prior step size α_ρ, per environment step (mirl only; sql and dqn keep ρ uniform); several values sweep it"""
    alpha_beta: tuple[float, ...] = (2e-4,)
    """β step size α_β, per gradient step (0 keeps β fixed at --beta-init; mirl and sql); several values sweep it"""
    beta_init: tuple[float, ...] = (1.0,)
    """initial inverse temperature β; several values sweep it"""
    beta_min: tuple[float, ...] = (1e-2,)
    """lower clip for β; several values sweep it"""
    beta_max: float = 1e3
    """upper clip for β"""
    td_loss_floor: float = 1e-3
    """β moves towards 1/max(L, floor): a near-zero loss must not send β to infinity"""
    eval_episodes: int = 10
    """greedy evaluation episodes per seed at the end"""


# ----------------------------------------------------------------------------------------------
# Environment
# ----------------------------------------------------------------------------------------------

# gymnax environments with a continuous action space; a test keeps this in step with gymnax
CONTINUOUS_ENV_IDS = ("Pendulum-v1", "MountainCarContinuous-v0", "PointRobot-misc", "Reacher-misc", "Swimmer-misc")


def make_env(env_id: str, full_action_set: bool = False):
    # imported here, not at the top: gymnax makes arrays as it is imported, which starts JAX's devices, and a run
    # of several processes must join them first (common.devices.join_processes)
    import gymnax
    from gymnax.environments import spaces

    discrete = [name for name in gymnax.registered_envs if name not in CONTINUOUS_ENV_IDS]
    if env_id not in gymnax.registered_envs:
        raise UserError(f"unknown env id {env_id!r}; discrete-action gymnax environments: {', '.join(discrete)}")
    minatar = [name for name in gymnax.registered_envs if name.endswith("-MinAtar")]
    if full_action_set and env_id not in minatar:
        raise UserError(f"--full-action-set applies to the MinAtar games only: {', '.join(minatar)}")
    env, env_params = gymnax.make(env_id, **({"use_minimal_action_set": False} if full_action_set else {}))
    if not isinstance(env.action_space(env_params), spaces.Discrete):
        raise UserError(f"{env_id} has a continuous action space; MIRL needs discrete actions: {', '.join(discrete)}")
    return env, env_params


# Environments whose observations are 0/1 grids by construction: gymnax 1.0's `get_obs` of each writes only
# 0, 1, True or False into a zero array before casting it to float32. They are stored as uint8, a quarter of
# float32's memory, without loss; every other environment in its own dtype (a test round-trips them all).
BYTE_GRID_ENV_IDS = (
    "Asterix-MinAtar",
    "Breakout-MinAtar",
    "Freeway-MinAtar",
    "Seaquest-MinAtar",
    "SpaceInvaders-MinAtar",
    "Catch-bsuite",
    "DeepSea-bsuite",
    "Pong-misc",
)


def replay_obs_dtype(env_id: str, env, env_params) -> jnp.dtype:
    """The dtype the replay stores observations in: uint8 for the 0/1 grids above, else the environment's own."""
    if env_id in BYTE_GRID_ENV_IDS:
        return jnp.dtype(jnp.uint8)
    obs, _ = jax.eval_shape(env.reset, jax.random.key(0), env_params)
    return obs.dtype


# ----------------------------------------------------------------------------------------------
# Network: an MLP for vector observations, the MinAtar CNN for image observations
# ----------------------------------------------------------------------------------------------


class Dense(eqx.Module):
    """x @ W + b with W stored (in, out), as flax stores it. equinox's Linear stores (out, in), and XLA:CPU runs the
    batched weight-gradient products of that layout on a slower kernel (the README's PureJaxRL comparison)."""

    weight: jax.Array
    bias: jax.Array

    def __init__(self, in_size: int, out_size: int, key: jax.Array):
        # equinox's and PyTorch's default initialisation: weights and biases uniform in ±1/√in_size
        weight_key, bias_key = jax.random.split(key)
        bound = 1.0 / math.sqrt(in_size)
        self.weight = jax.random.uniform(weight_key, (in_size, out_size), minval=-bound, maxval=bound)
        self.bias = jax.random.uniform(bias_key, (out_size,), minval=-bound, maxval=bound)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        return x @ self.weight + self.bias


class PatchConv(eqx.Module):
    """A valid k×k convolution with stride s on one (height, width, channels) image, written as a matmul
    over its k×k patches: the same function as a convolution, and faster on XLA:CPU, whose native
    convolution gradient makes a whole Breakout-MinAtar run 2.2× slower (benchmarks/cpu_workarounds.py)."""

    linear: Dense  # weights in patch order: (row, column, channel) × out_channels
    size: int = eqx.field(static=True)
    stride: int = eqx.field(static=True)

    def __init__(self, in_channels: int, out_channels: int, size: int, key: jax.Array, stride: int = 1):
        self.linear = Dense(size * size * in_channels, out_channels, key=key)
        self.size, self.stride = size, stride

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        rows = (x.shape[0] - self.size) // self.stride + 1
        cols = (x.shape[1] - self.size) // self.stride + 1
        row_span, col_span = self.stride * (rows - 1) + 1, self.stride * (cols - 1) + 1
        shifts = [
            x[i : i + row_span : self.stride, j : j + col_span : self.stride]
            for i in range(self.size)
            for j in range(self.size)
        ]
        return self.linear(jnp.concatenate(shifts, axis=-1))


class QNetwork(eqx.Module):
    layers: eqx.nn.Sequential

    def __init__(self, obs_shape: tuple[int, ...], num_actions: int, key: jax.Array):
        keys = jax.random.split(key, 3)
        if len(obs_shape) == 3:  # (height, width, channels): Young & Tian's MinAtar DQN, conv 16×3×3 → 128
            height, width, channels = obs_shape
            self.layers = eqx.nn.Sequential(
                [
                    PatchConv(channels, 16, size=3, key=keys[0]),
                    eqx.nn.Lambda(jax.nn.relu),
                    eqx.nn.Lambda(jnp.ravel),
                    Dense(16 * (height - 2) * (width - 2), 128, key=keys[1]),
                    eqx.nn.Lambda(jax.nn.relu),
                    Dense(128, num_actions, key=keys[2]),
                ]
            )
        else:  # CleanRL's DQN MLP
            self.layers = eqx.nn.Sequential(
                [
                    eqx.nn.Lambda(jnp.ravel),
                    Dense(int(np.prod(obs_shape)), 120, key=keys[0]),
                    eqx.nn.Lambda(jax.nn.relu),
                    Dense(120, 84, key=keys[1]),
                    eqx.nn.Lambda(jax.nn.relu),
                    Dense(84, num_actions, key=keys[2]),
                ]
            )

    def __call__(self, obs: jax.Array) -> jax.Array:
        return self.layers(obs.astype(jnp.float32))


# ----------------------------------------------------------------------------------------------
# The algorithm's math
# ----------------------------------------------------------------------------------------------


def soft_value(q: jax.Array, log_prior: jax.Array, beta: jax.Array) -> jax.Array:
    """V(s) = logsumexp_a(log ρ(a) + β Q(s, a)) / β over the last axis, accurate for every β.

    Both forms below are centred on the prior mean Q̄ = Σ ρ Q and exact in real arithmetic. Where
    β|Q − Q̄| < 1, log1p/expm1 keep the rounding error near eps·|Q − Q̄|, whereas logsumexp(·)/β would
    divide float32 rounding by a tiny β; beyond that, logsumexp (which cannot overflow) is as accurate."""
    prior = jnp.exp(log_prior)
    prior_mean = jnp.sum(prior * q, axis=-1, keepdims=True)
    centred = beta * (q - prior_mean)
    near = jnp.log1p(jnp.sum(prior * jnp.expm1(jnp.minimum(centred, 1.0)), axis=-1))
    far = jax.nn.logsumexp(log_prior + centred, axis=-1)
    return prior_mean[..., 0] + jnp.where(jnp.abs(centred).max(axis=-1) < 1.0, near, far) / beta


def policy_logits(q: jax.Array, log_prior: jax.Array, beta: jax.Array) -> jax.Array:
    """log π(a|s) up to a constant: π(a|s) ∝ ρ(a) exp(β Q(s, a))."""
    return log_prior + beta * q


def kl_to_prior(log_policy: jax.Array, log_prior: jax.Array) -> jax.Array:
    """KL(π(·|s) ‖ ρ) from the normalised log π; its mean over visited states estimates I(S; A)."""
    policy_terms = jnp.exp(log_policy) * (log_policy - log_prior)
    return jnp.sum(jnp.where(log_policy > -jnp.inf, policy_terms, 0.0), axis=-1)


def update_prior(prior: jax.Array, mean_policy: jax.Array, alpha: float, num_states: int) -> jax.Array:
    """ρ ← ρ + (1 − (1 − α)^N)(mean_k π(·|s_k) − ρ): N sequential steps ρ ← ρ + α(π − ρ) with the
    N states' policies in any order have this closed form when the policies are averaged, so α keeps its
    per-environment-step meaning whatever the number of parallel environments."""
    rate = -jnp.expm1(num_states * jnp.log1p(-alpha))
    prior = prior + rate * (mean_policy - prior)
    total = prior.sum()
    # a convex combination stays a distribution up to float32 rounding; renormalise only real drift
    return jnp.where(jnp.abs(total - 1.0) > 1e-5, prior / total, prior)


def update_beta(beta, loss, alpha: float, loss_floor: float, beta_min: float, beta_max: float) -> jax.Array:
    """β ← β + α_β (1 / max(L, floor) − β), clipped to [β_min, β_max]."""
    beta = beta + alpha * (1.0 / jnp.maximum(loss, loss_floor) - beta)
    return jnp.clip(beta, beta_min, beta_max)


def behaviour_action(key: jax.Array, greedy: jax.Array, log_prior: jax.Array, epsilon: jax.Array) -> jax.Array:
    """ε-greedy whose exploratory action is drawn from the prior ρ (uniform for sql and dqn)."""
    explore_key, draw_key = jax.random.split(key)
    explore = jax.random.uniform(explore_key, greedy.shape) < epsilon
    return jnp.where(explore, jax.random.categorical(draw_key, log_prior, shape=greedy.shape), greedy)


def linear_schedule(start: float, end: float, duration: int, t: jax.Array) -> jax.Array:
    return start + (end - start) * jnp.clip(t / duration, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# Training state
# ----------------------------------------------------------------------------------------------


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

    def add(self, position: jax.Array, obs, actions, rewards, next_obs, terminated) -> "Replay":
        def write(buffer, values):
            return jax.lax.dynamic_update_slice_in_dim(buffer, values.astype(buffer.dtype), position, axis=0)

        return Replay(
            *map(
                write,
                (self.obs, self.actions, self.rewards, self.next_obs, self.terminated),
                (obs, actions, rewards, next_obs, terminated),
            )
        )

    def sample(self, key: jax.Array, filled: jax.Array, batch_size: int) -> "Replay":
        indices = jax.random.randint(key, (batch_size,), 0, filled)
        return jax.tree.map(lambda buffer: buffer[indices], self)


class IntervalStats(eqx.Module):
    """Sums over the current logging interval, reduced to means when they are written."""

    return_sum: jax.Array
    length_sum: jax.Array
    episodes: jax.Array
    td_loss_sum: jax.Array
    q_sum: jax.Array
    updates: jax.Array
    kl_sum: jax.Array
    acting_states: jax.Array

    @staticmethod
    def zeros() -> "IntervalStats":
        return IntervalStats(*(jnp.zeros((), jnp.float32) for _ in range(8)))


class Hypers(eqx.Module):
    """The hyper-parameters a sweep varies (mirl_gymnax.py takes several values of each), as float32 arrays in the
    state rather than constants of the program, vmapped over like the seeds: one compiled program trains a grid."""

    learning_rate: jax.Array
    end_e: jax.Array
    alpha_rho: jax.Array
    alpha_beta: jax.Array
    beta_init: jax.Array
    beta_min: jax.Array


SWEPT_FLAGS = tuple(field.name for field in dataclasses.fields(Hypers))


class AgentState(eqx.Module):
    """Everything one seed carries through the scan; saved whole in checkpoints."""

    params: Any
    target_params: Any
    opt_state: Any
    replay: Replay
    env_state: Any
    obs: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array
    prior: jax.Array  # ρ
    beta: jax.Array  # β
    key: jax.Array
    stats: IntervalStats
    nan_step: jax.Array  # environment step of the first non-finite TD loss, -1 if none
    hypers: Hypers  # the run's configuration


# ----------------------------------------------------------------------------------------------
# The agent's steps: pure functions of (setup, state, iteration)
# ----------------------------------------------------------------------------------------------


class Setup(NamedTuple):
    """What the steps need besides the state: the Args and the static objects built from them once."""

    args: Args
    env: Any
    env_params: Any
    network: QNetwork  # the Q-network's structure; its parameters live in the state
    optimizer: Callable[[jax.Array], optax.GradientTransformation]  # of a run's learning rate
    obs_dtype: Any  # of the replay's observations


def make_setup(args: Args, env, env_params) -> Setup:
    num_actions = env.action_space(env_params).n
    obs_shape = env.observation_space(env_params).shape
    _, network = eqx.partition(QNetwork(obs_shape, num_actions, jax.random.key(0)), eqx.is_array)
    return Setup(args, env, env_params, network, make_optimizer(args), replay_obs_dtype(args.env_id, env, env_params))


def updates_per_learn(args: Args) -> int:
    """Gradient steps per learning phase: one per --train-frequency environment steps of all environments."""
    return max(1, args.num_envs // args.train_frequency)


def learn_period(args: Args) -> int:
    """Environment steps (of one environment) between learning phases."""
    return max(args.train_frequency, args.num_envs)


def log_every(args: Args) -> int:
    """Iterations between TensorBoard writes."""
    return max(1, args.log_interval // args.num_envs)


# Logging intervals per compiled chunk, after which the host writes their records and shows progress: an interval
# of a gymnax loop can take a tenth of a second, so the return to the host is made rare
INTERVALS_PER_CHUNK = 10


def live_seeds_only(states: AgentState, scalars: dict, bar_charts: dict) -> tuple[dict, dict]:
    """The interval's metrics with NaN for seeds whose TD loss has gone non-finite (the logger writes nothing
    for NaN): their learner no longer counts, and their curves end where the run will stop."""
    dead = states.nan_step >= 0
    return jax.tree.map(
        lambda x: jnp.where(dead.reshape((-1,) + (1,) * (x.ndim - 1)), jnp.nan, x), (scalars, bar_charts)
    )


def make_optimizer(args: Args) -> Callable[[jax.Array], optax.GradientTransformation]:
    """Adam at a run's learning rate (a traced value: it may be swept), decaying linearly to 0 over the run's
    gradient steps with --anneal-lr. Its state's structure does not depend on the rate."""
    num_updates = (args.total_timesteps - args.learning_starts) // learn_period(args) * updates_per_learn(args)

    def adam(learning_rate: jax.Array) -> optax.GradientTransformation:
        return optax.adam(optax.linear_schedule(learning_rate, 0.0, num_updates) if args.anneal_lr else learning_rate)

    return adam


def q_values(setup: Setup, params, obs: jax.Array) -> jax.Array:
    return jax.vmap(eqx.combine(params, setup.network))(obs)


def greedy_logits(setup: Setup, q: jax.Array, prior: jax.Array, beta: jax.Array) -> jax.Array:
    """What the greedy action maximises: log π = log ρ + βQ (mirl, sql), or Q (dqn)."""
    return policy_logits(q, jnp.log(prior), beta) if setup.args.algo != "dqn" else q


def epsilon_at(setup: Setup, hypers: Hypers, iteration: jax.Array) -> jax.Array:
    args = setup.args
    return linear_schedule(
        args.start_e, hypers.end_e, args.exploration_fraction * args.total_timesteps, iteration * args.num_envs
    )


def choose(setup: Setup, state: AgentState, iteration: jax.Array) -> tuple[AgentState, jax.Array]:
    """Behave on the current observations (ε-greedy on argmax π, exploring from ρ) and update ρ from the
    acting states."""
    args = setup.args
    key, action_key = jax.random.split(state.key)
    log_prior = jnp.log(state.prior)
    logits = greedy_logits(setup, q_values(setup, state.params, state.obs), state.prior, state.beta)
    epsilon = epsilon_at(setup, state.hypers, iteration)
    actions = behaviour_action(action_key, jnp.argmax(logits, axis=-1), log_prior, epsilon)
    prior, stats = state.prior, state.stats
    if args.algo != "dqn":  # one log-softmax serves ρ's update and the logged I(S; A)
        log_policy = jax.nn.log_softmax(logits, axis=-1)
        stats = eqx.tree_at(lambda s: s.kl_sum, stats, stats.kl_sum + jnp.sum(kl_to_prior(log_policy, log_prior)))
        if args.algo == "mirl":  # sql and dqn keep ρ uniform
            prior = update_prior(prior, jnp.exp(log_policy).mean(axis=0), state.hypers.alpha_rho, args.num_envs)
    stats = eqx.tree_at(lambda s: s.acting_states, stats, stats.acting_states + args.num_envs)
    return dataclasses.replace(state, prior=prior, key=key, stats=stats), actions


def observe(setup: Setup, state: AgentState, actions: jax.Array, iteration: jax.Array) -> AgentState:
    """Step every environment with `actions`, store the transitions, and count finished episodes."""
    args = setup.args
    key, env_key = jax.random.split(state.key)
    step = jax.vmap(setup.env.step, in_axes=(0, 0, 0, None))
    obs, env_state, rewards, terminated, truncated, info = step(
        jax.random.split(env_key, args.num_envs), state.env_state, actions, setup.env_params
    )
    # gymnax auto-resets: `obs` of a finished episode is the next episode's first one, and the transition's
    # next observation is the true final one; truncation is not termination, so the target bootstraps there
    replay = state.replay.add(
        (iteration * args.num_envs) % args.buffer_size,
        state.obs,
        actions,
        rewards,
        info["final_observation"],
        terminated,
    )
    done = terminated | truncated
    episode_return = state.episode_return + rewards
    episode_length = state.episode_length + 1
    stats = state.stats
    stats = eqx.tree_at(
        lambda s: (s.return_sum, s.length_sum, s.episodes),
        stats,
        (
            stats.return_sum + jnp.sum(jnp.where(done, episode_return, 0.0)),
            stats.length_sum + jnp.sum(jnp.where(done, episode_length, 0.0)),
            stats.episodes + jnp.sum(done),
        ),
    )
    return dataclasses.replace(
        state,
        replay=replay,
        env_state=env_state,
        obs=obs,
        episode_return=jnp.where(done, 0.0, episode_return),
        episode_length=jnp.where(done, 0.0, episode_length),
        key=key,
        stats=stats,
    )


def td_target(setup: Setup, next_q: jax.Array, rewards, terminated, prior: jax.Array, beta: jax.Array) -> jax.Array:
    """y = r + γ(1 − terminated)·V(s'): V the soft value with the prior (mirl, sql), the max (dqn)."""
    if setup.args.algo != "dqn":
        next_value = soft_value(next_q, jnp.log(prior), beta)
    else:
        next_value = next_q.max(axis=-1)
    return rewards + setup.args.gamma * (1.0 - terminated) * next_value


def apply_td_step(setup: Setup, state: AgentState, grads, loss: jax.Array, q_mean: jax.Array, iteration) -> AgentState:
    """Adam on the TD loss's gradients, then β from the same minibatch loss. A non-finite loss is recorded with
    its step and the host stops the run at the chunk's end, before anything is saved or evaluated: cheaper than
    masking every step's update, which made a CartPole run measurably slower."""
    args, hypers = setup.args, state.hypers
    updates, opt_state = setup.optimizer(hypers.learning_rate).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    beta = state.beta
    if args.algo != "dqn":
        beta = update_beta(beta, loss, hypers.alpha_beta, args.td_loss_floor, hypers.beta_min, args.beta_max)
    env_steps = (iteration + 1) * args.num_envs
    nan_step = jnp.where((state.nan_step < 0) & ~jnp.isfinite(loss), env_steps, state.nan_step)
    stats = eqx.tree_at(
        lambda s: (s.td_loss_sum, s.q_sum, s.updates),
        state.stats,
        (state.stats.td_loss_sum + loss, state.stats.q_sum + q_mean, state.stats.updates + 1),
    )
    return dataclasses.replace(state, params=params, opt_state=opt_state, beta=beta, stats=stats, nan_step=nan_step)


def learn(setup: Setup, state: AgentState, iteration: jax.Array) -> AgentState:
    """One gradient step on a replay minibatch (see apply_td_step)."""
    args = setup.args
    key, sample_key = jax.random.split(state.key)
    filled = jnp.minimum((iteration + 1) * args.num_envs, args.buffer_size)
    batch = state.replay.sample(sample_key, filled, args.batch_size)
    next_q = q_values(setup, state.target_params, batch.next_obs)
    target = td_target(setup, next_q, batch.rewards, batch.terminated, state.prior, state.beta)

    def td_loss(params):
        q_taken = jnp.take_along_axis(q_values(setup, params, batch.obs), batch.actions[:, None], axis=-1)[:, 0]
        error = q_taken - target
        loss = optax.huber_loss(error).mean() if args.huber else jnp.mean(error**2)
        return loss, q_taken.mean()

    (loss, q_mean), grads = jax.value_and_grad(td_loss, has_aux=True)(state.params)
    return apply_td_step(setup, dataclasses.replace(state, key=key), grads, loss, q_mean, iteration)


def learn_and_sync(setup: Setup, state: AgentState, iteration: jax.Array) -> AgentState:
    """After the environments' step: learn every --train-frequency steps once --learning-starts is past, and
    copy the Q-network into the target network every --target-network-frequency steps. `iteration` is
    shared by all seeds (not vmapped), so these branches stay branches under vmap."""
    args = setup.args
    env_steps = (iteration + 1) * args.num_envs
    learning = env_steps > args.learning_starts

    def learn_phase(state):
        return jax.lax.fori_loop(0, updates_per_learn(args), lambda _, s: learn(setup, s, iteration), state)

    state = jax.lax.cond(learning & (env_steps % learn_period(args) == 0), learn_phase, lambda s: s, state)
    sync = learning & (env_steps % args.target_network_frequency < args.num_envs)
    target_params = jax.lax.cond(sync, lambda: state.params, lambda: state.target_params)
    return dataclasses.replace(state, target_params=target_params)


def iterate(setup: Setup, state: AgentState, iteration: jax.Array) -> AgentState:
    """One seed, one step of all its environments: behave, step and store, learn."""
    state, actions = choose(setup, state, iteration)
    return learn_and_sync(setup, observe(setup, state, actions, iteration), iteration)


def interval_metrics(setup: Setup, states: AgentState, iteration: jax.Array) -> tuple[dict, dict]:
    """Per-seed scalars and bar charts of the logging interval that ends at `iteration`."""
    stats = states.stats
    scalars = {
        "charts/episodic_return": nan_mean(stats.return_sum, stats.episodes),
        "charts/episodic_length": nan_mean(stats.length_sum, stats.episodes),
        "charts/epsilon": epsilon_at(setup, states.hypers, iteration),
        "losses/td_loss": nan_mean(stats.td_loss_sum, stats.updates),
        "losses/q_values": nan_mean(stats.q_sum, stats.updates),
    }
    if setup.args.algo == "dqn":
        return scalars, {}
    scalars["mirl/beta"] = states.beta
    scalars["mirl/prior_entropy"] = -jnp.sum(states.prior * jnp.log(states.prior), axis=-1)
    scalars["mirl/kl_pi_prior"] = nan_mean(stats.kl_sum, stats.acting_states)
    return scalars, {"mirl/prior": states.prior}


# ----------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------


class Trainer(NamedTuple):
    init: Callable  # (key, Hypers, or None for the flags' single configuration) -> AgentState (one run)
    run: Callable  # (states, first_iteration, Chunk) -> (states, Records): seeds on the leading axis of states
    evaluate: Callable  # (states, a key per run) -> greedy episode returns, (runs, eval_episodes)
    train: Callable  # (keys, Hypers or None) -> (states, Records): the whole run as one call, for use as a library


def make_train(args: Args, env, env_params) -> Trainer:
    """Wires the steps into one scan over iterations, vmapped over seeds (one seed runs without the axis). Every
    --log-interval steps the loop records each seed's metrics (a common.logger.Record); `run` returns them."""
    setup = make_setup(args, env, env_params)

    def init(key: jax.Array, hypers: Hypers | None = None) -> AgentState:
        hypers = hypers if hypers is not None else only_configuration(args)
        network_key, env_key, loop_key = jax.random.split(key, 3)
        obs_shape, num_actions = env.observation_space(env_params).shape, env.action_space(env_params).n
        params, _ = eqx.partition(QNetwork(obs_shape, num_actions, network_key), eqx.is_array)
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(env_key, args.num_envs), env_params)
        return AgentState(
            params=params,
            target_params=params,
            opt_state=setup.optimizer(hypers.learning_rate).init(params),
            replay=Replay.empty(args.buffer_size, obs_shape, setup.obs_dtype),
            env_state=env_state,
            obs=obs,
            episode_return=jnp.zeros(args.num_envs),
            episode_length=jnp.zeros(args.num_envs),
            prior=jnp.full(num_actions, 1.0 / num_actions, jnp.float32),
            beta=hypers.beta_init,
            key=loop_key,
            stats=IntervalStats.zeros(),
            nan_step=jnp.asarray(-1, jnp.int32),
            hypers=hypers,
        )

    def run(states: AgentState, first_iteration: jax.Array, chunk: Chunk) -> tuple[AgentState, Record]:
        """Advance all seeds (leading axis of `states`) by `chunk.length` iterations from `first_iteration`."""

        def end_interval(states: AgentState, iteration: jax.Array) -> tuple[AgentState, Record]:
            scalars, bar_charts = live_seeds_only(states, *interval_metrics(setup, states, iteration))
            states = dataclasses.replace(states, stats=jax.vmap(lambda _: IntervalStats.zeros())(states.nan_step))
            return states, Record((iteration + 1) * args.num_envs, scalars, bar_charts)

        def iterate_one(state: AgentState, iteration: jax.Array) -> AgentState:
            return iterate(setup, state, iteration)

        if not without_seed_axis(states):
            iterate_seeds = jax.vmap(iterate_one, in_axes=(0, None))
            return scan_logged(iterate_seeds, states, first_iteration, chunk, log_every(args), end_interval)

        def take_seed(tree):
            return jax.tree.map(lambda x: x[0], tree)

        def put_seed(tree):
            return jax.tree.map(lambda x: x[None], tree)

        def end_interval_one(state: AgentState, iteration: jax.Array) -> tuple[AgentState, Record]:
            states, record = end_interval(put_seed(state), iteration)
            return take_seed(states), record

        state, records = scan_logged(
            iterate_one, take_seed(states), first_iteration, chunk, log_every(args), end_interval_one
        )
        return put_seed(state), records

    def evaluate_seed(state: AgentState, key: jax.Array) -> jax.Array:
        """Greedy episodes (argmax π for mirl/sql, argmax Q for dqn) in parallel environments."""
        reset_key, step_key = jax.random.split(key)
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(reset_key, args.eval_episodes), env_params
        )

        def step(carry, key):
            obs, env_state, returns, running = carry
            logits = greedy_logits(setup, q_values(setup, state.params, obs), state.prior, state.beta)
            obs, env_state, rewards, terminated, truncated, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(key, args.eval_episodes), env_state, jnp.argmax(logits, axis=-1), env_params
            )
            returns = returns + jnp.where(running, rewards, 0.0)
            return (obs, env_state, returns, running & ~(terminated | truncated)), None

        carry = (obs, env_state, jnp.zeros(args.eval_episodes), jnp.ones(args.eval_episodes, jnp.bool_))
        max_steps = int(env_params.max_steps_in_episode)
        return jax.lax.scan(step, carry, jax.random.split(step_key, max_steps))[0][2]

    def evaluate(states: AgentState, keys: jax.Array) -> jax.Array:
        return jax.vmap(evaluate_seed)(states, keys)

    def train(keys: jax.Array, hypers: Hypers | None = None) -> tuple[AgentState, Record]:
        num_iterations = args.total_timesteps // args.num_envs
        return run(jax.vmap(init)(keys, hypers), jnp.asarray(0, jnp.int32), Chunk(num_iterations, log_phase=0))

    return Trainer(init=init, run=run, evaluate=evaluate, train=train)


def without_seed_axis(states: AgentState) -> bool:
    """Whether `run` takes the seed axis off for the whole loop: for one seed, since vmap over a batch of one
    is slower on XLA:CPU, and taking the seed out and back in every iteration makes it copy the replay buffer
    every iteration (benchmarks/cpu_workarounds.py)."""
    return states.nan_step.shape[0] == 1


# ----------------------------------------------------------------------------------------------
# Sweeps: every combination of the swept flags' values, each with every seed
# ----------------------------------------------------------------------------------------------


class Run(NamedTuple):
    """One agent trained by the program: a seed under one configuration of the swept flags."""

    seed: int
    config: dict[str, float]  # a value for each of SWEPT_FLAGS
    name: str  # its TensorBoard sub-run: seed_1, or in a sweep alpha_rho=0.0001,learning_rate=0.001/seed_1


def swept(args: Args) -> tuple[str, ...]:
    """The swept flags given more than one value."""
    return tuple(name for name in SWEPT_FLAGS if len(getattr(args, name)) > 1)


def grid_runs(args: Args) -> list[Run]:
    """Configuration-major: all seeds of the first configuration, then of the next, the last flag of
    SWEPT_FLAGS varying fastest. Every configuration trains the same seeds."""
    runs = []
    for values in itertools.product(*(getattr(args, name) for name in SWEPT_FLAGS)):
        config = dict(zip(SWEPT_FLAGS, values, strict=True))
        directory = ",".join(f"{name}={config[name]!r}" for name in swept(args))
        for seed in range(args.seed, args.seed + args.num_seeds):
            runs.append(Run(seed, config, f"{directory}/seed_{seed}" if directory else f"seed_{seed}"))
    return runs


def stacked_hypers(runs: list[Run]) -> Hypers:
    """The runs' configurations as one Hypers whose arrays have the runs on their leading axis."""
    return Hypers(**{name: np.asarray([run.config[name] for run in runs], np.float32) for name in SWEPT_FLAGS})


def only_configuration(args: Args) -> Hypers:
    """The flags' values as one run's Hypers, where no flag is swept."""
    if swept(args):
        raise ValueError(f"{', '.join(map(flag, swept(args)))} have several values: pass each run's Hypers")
    return jax.tree.map(lambda x: jnp.asarray(x[0]), stacked_hypers(grid_runs(dataclasses.replace(args, num_seeds=1))))


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def check_args(args: Args) -> None:
    """Refuse, before anything is built, flags that cannot make a run."""
    problems = out_of_range(
        args,
        positive=(
            "num_seeds", "num_processes", "total_timesteps", "num_envs", "batch_size", "buffer_size",
            "train_frequency", "target_network_frequency", "checkpoint_interval", "log_interval", "learning_rate",
            "td_loss_floor", "eval_episodes", "beta_max",
        ),
        non_negative=("cpu_devices", "keep_checkpoints"),
        unit_interval=("gamma", "start_e", "end_e", "alpha_rho", "alpha_beta"),
        fraction=("exploration_fraction",),
        finite=("beta_init", "beta_min"),
    )  # fmt: skip
    if problems:  # the rules below assume these
        raise UserError("; ".join(problems))
    if args.total_timesteps % args.num_envs:
        problems.append(
            f"--total-timesteps ({args.total_timesteps}) must be a multiple of --num-envs ({args.num_envs})"
        )
    if args.train_frequency % args.num_envs and args.num_envs % args.train_frequency:
        problems.append(
            f"--train-frequency ({args.train_frequency}) and --num-envs ({args.num_envs}) must divide one another"
        )
    if args.buffer_size % args.num_envs:
        problems.append(f"--buffer-size ({args.buffer_size}) must be a multiple of --num-envs ({args.num_envs})")
    if args.checkpoint_interval % args.num_envs:
        problems.append(
            f"--checkpoint-interval ({args.checkpoint_interval}) must be a multiple of --num-envs ({args.num_envs})"
        )
    if args.process_id is not None and not 0 <= args.process_id < args.num_processes:
        problems.append(
            f"--process-id ({args.process_id}) must lie in 0 … --num-processes − 1 ({args.num_processes - 1})"
        )
    if args.learning_starts < args.batch_size:
        problems.append(f"--learning-starts ({args.learning_starts}) must be at least --batch-size ({args.batch_size})")
    if args.learning_starts >= args.total_timesteps:
        problems.append(
            f"--learning-starts ({args.learning_starts}) must be below --total-timesteps ({args.total_timesteps}): "
            "the run would never learn"
        )
    if not (
        0 < min(args.beta_min) and max(args.beta_min) <= min(args.beta_init) and max(args.beta_init) <= args.beta_max
    ):
        problems.append("need 0 < --beta-min <= --beta-init <= --beta-max (for every value swept)")
    problems += [
        f"{flag(name)} lists a value twice"
        for name in SWEPT_FLAGS
        if len(set(getattr(args, name))) < len(getattr(args, name))
    ]
    unused = {"dqn": ("alpha_rho", "alpha_beta", "beta_init", "beta_min"), "sql": ("alpha_rho",)}.get(args.algo, ())
    problems += [
        f"{flag(name)} has no effect with --algo {args.algo}: sweeping it would train the same agent several times"
        for name in swept(args)
        if name in unused
    ]
    if problems:
        raise UserError("; ".join(problems))


def report_evaluation(args: Args, run_name: str, runs: list[Run], eval_returns: np.ndarray) -> None:
    """One line per configuration: the mean and spread over seeds of the greedy returns."""
    seeds = [run.seed for run in runs[: args.num_seeds]]
    for first in range(0, len(runs), args.num_seeds):
        config = runs[first].name.rpartition("/")[0]
        means = eval_returns[first : first + args.num_seeds].mean(axis=1)
        print(
            f"{run_name}{'/' + config if config else ''}: greedy eval/episodic_return over {args.eval_episodes} "
            f"episodes per seed: {means.mean():.1f} ± {means.std():.1f} "
            f"(seeds {seeds}: {np.round(means.astype(float), 1).tolist()})"
        )


# what a resumed run may change besides the logging and checkpoint flags (common.cli)
RESUMABLE = ("checkpoint_interval", "eval_episodes", "num_processes", "process_id", "coordinator_address")


def main(args: Args) -> dict:
    """Train (or resume) and evaluate; returns the final states and evaluation returns."""
    header = None
    if args.resume:
        args, header, _ = start_resume(
            Args,
            args,
            SCRIPT,
            RESUMABLE,
            "total_timesteps",
            lambda header, saved: header["iteration"] * saved.num_envs,
            ": from here on, ε and the learning rate follow the schedules of a run of that length",
        )
    check_args(args)
    args = dataclasses.replace(
        args, cpu_devices=split_host_cpu(args.cpu_devices, len(grid_runs(args)), args.num_processes)
    )
    join_processes(args.num_processes, args.process_id, args.coordinator_address)
    run_name = header["run_name"] if header else make_run_name(args.env_id, args.exp_name or args.algo, args.seed)
    first_iteration = header["iteration"] if header else 0
    env, env_params = make_env(args.env_id, args.full_action_set)
    run_dir = Path("runs") / run_name
    runs = grid_runs(args)
    num_configs = len(runs) // args.num_seeds
    run_labels = [run.name for run in runs] if swept(args) else [run.seed for run in runs]  # in error messages
    mesh = seed_mesh(len(runs))
    announce_placement(mesh, len(runs))

    obs_shape = env.observation_space(env_params).shape
    obs_bytes = int(np.prod(obs_shape)) * np.dtype(replay_obs_dtype(args.env_id, env, env_params)).itemsize
    replay_bytes = len(runs) * args.buffer_size * (2 * obs_bytes + 4 + 4 + 1)
    configs = f"{plural(num_configs, 'configuration')} × " if swept(args) else ""
    check_fits(
        f"the replay buffers ({configs}{plural(args.num_seeds, 'seed')} × {args.buffer_size} transitions × "
        f"{2 * obs_bytes + 9} bytes)",
        replay_bytes,
        list(mesh.devices.flat),
        "lower --buffer-size or --num-seeds" + (", or sweep fewer values" if swept(args) else ""),
    )

    trainer = make_train(args, env, env_params)

    def init(seed: jax.Array, hypers: Hypers) -> AgentState:
        return trainer.init(jax.random.key(seed), hypers)

    # the inputs are host values, the same in every process: each process's devices build their own runs
    seeds = np.asarray([run.seed for run in runs], np.int32)
    states = init_or_restore(jax.vmap(init), args.resume, seeds, stacked_hypers(runs), sharding=seed_sharding(mesh))

    if args.track and is_lead_process():
        start_tracking(args, run_name, args.wandb_project_name, args.wandb_entity)
    total_iterations = args.total_timesteps // args.num_envs
    logger = RunLogger(run_dir, args, [run.name for run in runs], args.total_timesteps, first_iteration * args.num_envs)

    run = jax.jit(trainer.run, static_argnums=2, donate_argnums=0)
    checkpoint_every = args.checkpoint_interval // args.num_envs
    last_checkpoint = args.resume
    schedule = chunks(first_iteration, total_iterations, log_every(args), INTERVALS_PER_CHUNK, (checkpoint_every,))
    for first, chunk in schedule:
        iteration = first + chunk.length
        steps = (first * args.num_envs, iteration * args.num_envs)
        states = logger.run_chunk(run, steps, states, np.int32(first), chunk)
        stop = non_finite_stop(
            host_value(states.nan_step), run_labels, "the TD loss", "environment step", last_checkpoint, args.save_model
        )
        if stop is not None:
            logger.close()
            raise stop
        if args.save_model and (iteration % checkpoint_every == 0 or iteration == total_iterations):
            header = {"script": SCRIPT, "args": dataclasses.asdict(args), "run_name": run_name, "iteration": iteration}
            last_checkpoint = logger.save_checkpoint(iteration * args.num_envs, states, header, args.keep_checkpoints)

    def evaluate(states: AgentState, seed: jax.Array) -> jax.Array:
        # seed k plays the same evaluation episodes in every configuration, as in a run of its own
        keys = jax.random.split(jax.random.key(seed), args.num_seeds)
        return trainer.evaluate(states, jnp.concatenate([keys] * num_configs))

    eval_returns = host_value(jax.jit(evaluate)(states, np.int32(args.seed)))
    if is_lead_process():  # the one that writes the logs and reports
        for writer, returns in zip(logger.writers, eval_returns, strict=True):
            writer.add_scalar("eval/episodic_return", float(returns.mean()), args.total_timesteps)
        report_evaluation(args, run_name, runs, eval_returns)
    logger.close()
    return {
        "states": states,
        "eval_returns": eval_returns,
        "runs": runs,
        "run_dir": run_dir,
        "last_checkpoint": last_checkpoint,
    }


if __name__ == "__main__":
    run_script(main, Args, SCRIPT)
