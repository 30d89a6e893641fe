"""MIRL on gymnax: soft Q-learning with a learned marginal action prior ρ and an adaptive inverse temperature β
(Grau-Moya, Leibfried & Vrancx, "Soft Q-Learning with Mutual-Information Regularization", ICLR 2019), with SQL
(uniform prior) and DQN (hard max) as `--algo` special cases.

The equations, each a pure function below:
- soft value      V(s) = logsumexp_a(log ρ(a) + β Q(s, a)) / β, the TD target y = r + γ(1 − terminated) V(s')
- policy          π(a|s) ∝ ρ(a) exp(β Q(s, a)); acting is ε-greedy on argmax π, exploring from ρ
- prior           ρ ← ρ + α_ρ (π(·|s) − ρ) per acting state
- temperature     β ← β + α_β (c / L − β) per gradient step, L the minibatch TD loss (c = 1, the published rule)

Acting, the environments, the replay, ρ, β, target syncs and gradient steps are one `jax.lax.scan` on the device;
`--num-seeds N` trains N seeds at once (vmapped), and each combination of the "swept" flags' values trains in the
same program. Reading order: flags, network, equations, state, steps, `make_train`; then what common.experiment needs.
"""

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from common.cli import RunFlags, run_script
from common.cpu import Dense, PatchConv, unroll_threefry_on_cpu
from common.devices import host_value
from common.envs import episode_returns, make_env, redundancy_problems, replay_obs_dtype
from common.errors import not_multiples, out_of_range
from common.experiment import Evaluation, Experiment, MemoryNeed, Start, run_experiment
from common.logger import Record, live_seeds_only
from common.loop import Chunk, interval_problems, scan_tallied_over_seeds
from common.replay import Replay, loop_problems
from common.sweep import Run, grid_runs, stacked_values, sweep_problems

SCRIPT = os.path.basename(__file__)
unroll_threefry_on_cpu()  # the same random bits, faster on a CPU


@dataclass(frozen=True)
class Args(RunFlags):
    # the run's flags (seeds, devices, checkpoints, logging) are common.cli.RunFlags'
    log_interval: int = 5_000
    """environment steps (per seed) between TensorBoard writes"""
    checkpoint_interval: int = 100_000
    """environment steps (per seed) between checkpoints (with --save-model)"""
    env_id: str = "CartPole-v1"
    """the id of a discrete-action gymnax environment"""
    full_action_set: bool = False
    """MinAtar: the engine's 6 actions instead of the game's minimal set (many then do the same thing)"""
    redundant_actions: int = 0
    """K extra actions, each an exact copy of --copied-action: what a uniform prior wastes, a learned one can leave"""
    copied_action: int | None = None
    """the action the redundant ones copy (default: the game's no-op; needed where it has none, as in CartPole)"""
    algo: Literal["mirl", "sql", "dqn"] = "mirl"
    """mirl: learned prior ρ, adaptive β; sql: uniform prior, adaptive β; dqn: hard max backup"""
    total_timesteps: int = 500_000
    """environment steps per seed"""
    num_envs: int = 10
    """parallel environments per seed"""
    learning_rate: tuple[float, ...] = (2.5e-4,)
    """Adam learning rate; swept: several values train every combination of the swept flags with every seed"""
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
    """ε at the end of the exploration phase; swept"""
    exploration_fraction: float = 0.5
    """fraction of --total-timesteps over which ε decays linearly"""
    learning_starts: int = 10_000
    """environment steps before learning starts"""
    train_frequency: int = 10
    """environment steps per gradient step"""
    huber: bool = False
    """Huber instead of squared TD error; β's rule reads the loss, so Huber's 0.5·e² (|e| ≤ 1) doubles β's target c/L"""
    alpha_rho: tuple[float, ...] = (4e-5,)
    """prior step size α_ρ, per environment step (mirl only; sql and dqn keep ρ uniform); swept"""
    alpha_beta: tuple[float, ...] = (2e-4,)
    """β step size α_β, per gradient step (0 keeps β fixed at --beta-init; mirl and sql); swept"""
    beta_init: tuple[float, ...] = (1.0,)
    """initial inverse temperature β; swept"""
    beta_min: tuple[float, ...] = (1e-2,)
    """lower clip for β; swept"""
    beta_max: float = 1e3
    """upper clip for β"""
    beta_scale: tuple[float, ...] = (1.0,)
    """c in β's rule: β moves towards c / L (1: the published rule; L and 1/β need not share a scale); swept"""
    td_loss_floor: float = 1e-3
    """β moves towards c/max(L, floor): a near-zero loss must not send β to infinity"""
    eval_episodes: int = 10
    """greedy evaluation episodes per seed at the end"""

    RESUMABLE: ClassVar = ("checkpoint_interval", "eval_episodes")
    EXTENSION_NOTE: ClassVar = ": from here on, ε and the learning rate follow the schedules of a run of that length"

    def steps_per_iteration(self) -> int:
        return self.num_envs

    def num_runs(self) -> int:
        return len(grid_runs(self, SWEPT_FLAGS))

    def problems(self) -> list[str]:
        return flag_problems(self, super().problems())  # at the end, with the command line


# --- Network: an MLP for vector observations, the MinAtar CNN for images (common.cpu: layers laid out for XLA:CPU)
class QNetwork(eqx.Module):
    """Q(s, ·): CleanRL's DQN MLP (120, 84) for vector observations; for (height, width, channels) images Young &
    Tian's MinAtar DQN, conv 16×3×3 → 128."""

    layers: eqx.nn.Sequential

    def __init__(self, obs_shape: tuple[int, ...], num_actions: int, key: jax.Array):
        keys = jax.random.split(key, 3)
        relu, flatten = eqx.nn.Lambda(jax.nn.relu), eqx.nn.Lambda(jnp.ravel)
        if len(obs_shape) == 3:
            height, width, channels = obs_shape
            hidden = [PatchConv(channels, 16, size=3, key=keys[0]), relu, flatten]
            hidden += [Dense(16 * (height - 2) * (width - 2), 128, key=keys[1]), relu]
            features = 128
        else:
            hidden = [
                flatten,
                Dense(int(np.prod(obs_shape)), 120, key=keys[0]),
                relu,
                Dense(120, 84, key=keys[1]),
                relu,
            ]
            features = 84
        self.layers = eqx.nn.Sequential([*hidden, Dense(features, num_actions, key=keys[2])])

    def __call__(self, obs: jax.Array) -> jax.Array:
        return self.layers(obs.astype(jnp.float32))


# --- The algorithm's math
def soft_value(q: jax.Array, log_prior: jax.Array, beta: jax.Array) -> jax.Array:
    """V(s) = logsumexp_a(log ρ(a) + β Q(s, a)) / β over the last axis, accurate for every β.

    Both forms below are centred on the prior mean Q̄ = Σ ρ Q and exact in real arithmetic. Where
    β|Q − Q̄| < 1, log1p/expm1 keep the rounding error near eps·|Q − Q̄|, whereas logsumexp(·)/β would
    divide float32 rounding by a tiny β; beyond that, logsumexp (which cannot overflow) is as accurate. The near
    form needs Σ ρ = 1 (update_prior keeps it); the clamp at 1 only keeps the branch `where` discards finite. A
    change to V is checked most simply against the plain form above."""
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
    """KL(π(·|s) ‖ ρ) from the normalised log π. Its mean over visited states is I(S; A) + KL(marginal ‖ ρ):
    I(S; A) where ρ is the policy's state marginal (mirl's ρ tracks it), an upper bound on it otherwise."""
    policy_terms = jnp.exp(log_policy) * (log_policy - log_prior)
    return jnp.sum(jnp.where(log_policy > -jnp.inf, policy_terms, 0.0), axis=-1)


def update_prior(prior: jax.Array, mean_policy: jax.Array, alpha: jax.Array, num_states: int) -> jax.Array:
    """ρ ← ρ + (1 − (1 − α)^N)(mean_k π(·|s_k) − ρ): the order-free form of N sequential steps ρ ← ρ + α(π − ρ),
    exact for N steps towards the N states' mean policy, so α keeps its per-environment-step meaning whatever
    the number of parallel environments."""
    rate = -jnp.expm1(num_states * jnp.log1p(-alpha))
    prior = prior + rate * (mean_policy - prior)
    total = prior.sum()
    # a convex combination stays a distribution up to float32 rounding; renormalise only real drift
    return jnp.where(jnp.abs(total - 1.0) > 1e-5, prior / total, prior)


def update_beta(beta, loss, alpha, scale, loss_floor: float, beta_min, beta_max: float) -> jax.Array:
    """β ← β + α_β (c / max(L, floor) − β), clipped to [β_min, β_max]; c = `scale`."""
    beta = beta + alpha * (scale / jnp.maximum(loss, loss_floor) - beta)
    return jnp.clip(beta, beta_min, beta_max)


def behaviour_action(key: jax.Array, greedy: jax.Array, log_prior: jax.Array, epsilon: jax.Array) -> jax.Array:
    """ε-greedy whose exploratory action is drawn from the prior ρ (uniform for sql and dqn)."""
    explore_key, draw_key = jax.random.split(key)
    explore = jax.random.uniform(explore_key, greedy.shape) < epsilon
    return jnp.where(explore, jax.random.categorical(draw_key, log_prior, shape=greedy.shape), greedy)


def linear_schedule(start: float, end: float, duration: int, t: jax.Array) -> jax.Array:
    return start + (end - start) * jnp.clip(t / duration, 0.0, 1.0)


# --- Training state
class Hypers(eqx.Module):
    """The swept flags' values of one run, as float32 arrays in the state rather than constants of the program,
    vmapped over like the seeds: one compiled program trains a grid. A new swept flag (mirl_gymnax.py): a field
    here, a tuple in Args, its range in `flag_problems`; the steps read it from `state.hypers`, not `args`."""

    learning_rate: jax.Array
    end_e: jax.Array
    alpha_rho: jax.Array
    alpha_beta: jax.Array
    beta_init: jax.Array
    beta_min: jax.Array
    beta_scale: jax.Array


SWEPT_FLAGS = tuple(field.name for field in dataclasses.fields(Hypers))


def stacked_hypers(runs: list[Run]) -> Hypers:
    """The runs' configurations as one Hypers whose arrays have the runs on their leading axis."""
    return Hypers(**stacked_values(runs))


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
    nan_step: jax.Array  # environment step of the first non-finite TD loss, -1 if none
    hypers: Hypers  # the run's configuration


# --- The agent's steps: pure functions of (setup, state, iteration)
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
    """Environment steps (all environments together) between learning phases."""
    return max(args.train_frequency, args.num_envs)


def gradient_steps(args: Args) -> int:
    """The run's gradient steps: a learning phase at each multiple of learn_period past --learning-starts."""
    period = learn_period(args)
    return max(0, args.total_timesteps // period - args.learning_starts // period) * updates_per_learn(args)


def make_optimizer(args: Args) -> Callable[[jax.Array], optax.GradientTransformation]:
    """Adam at a run's learning rate (a traced value: it may be swept), decaying linearly to 0 over the run's
    gradient steps with --anneal-lr. Its state's structure does not depend on the rate."""

    def adam(learning_rate: jax.Array) -> optax.GradientTransformation:
        if not args.anneal_lr:
            return optax.adam(learning_rate)
        return optax.adam(optax.linear_schedule(learning_rate, 0.0, gradient_steps(args)))

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


def choose(setup: Setup, state: AgentState, iteration: jax.Array) -> tuple[AgentState, jax.Array, dict]:
    """Behave on the current observations (ε-greedy on argmax π, exploring from ρ) and update ρ from the
    acting states. Returns the state, the actions and the step's tally (see interval_metrics)."""
    args = setup.args
    key, action_key = jax.random.split(state.key)
    log_prior = jnp.log(state.prior)
    logits = greedy_logits(setup, q_values(setup, state.params, state.obs), state.prior, state.beta)
    epsilon = epsilon_at(setup, state.hypers, iteration)
    actions = behaviour_action(action_key, jnp.argmax(logits, axis=-1), log_prior, epsilon)
    prior, tally = state.prior, {}
    if args.algo != "dqn":  # one log-softmax serves ρ's update and the logged KL(π ‖ ρ)
        log_policy = jax.nn.log_softmax(logits, axis=-1)
        tally["mirl/kl_pi_prior"] = (jnp.sum(kl_to_prior(log_policy, log_prior)), args.num_envs)
        if args.algo == "mirl":  # sql and dqn keep ρ uniform
            prior = update_prior(prior, jnp.exp(log_policy).mean(axis=0), state.hypers.alpha_rho, args.num_envs)
    return dataclasses.replace(state, prior=prior, key=key), actions, tally


def observe(setup: Setup, state: AgentState, actions: jax.Array, iteration: jax.Array) -> tuple[AgentState, dict]:
    """Step every environment with `actions` and store the transitions; tally the episodes that end."""
    args = setup.args
    key, env_key = jax.random.split(state.key)
    step = jax.vmap(setup.env.step, in_axes=(0, 0, 0, None))
    obs, env_state, rewards, terminated, truncated, info = step(
        jax.random.split(env_key, args.num_envs), state.env_state, actions, setup.env_params
    )
    # gymnax auto-resets: `obs` of a finished episode is the next episode's first one, and the transition's
    # next observation is the true final one; truncation is not termination, so the target bootstraps there
    position = (iteration * args.num_envs) % args.buffer_size
    replay = state.replay.add(position, state.obs, actions, rewards, info["final_observation"], terminated)
    done = terminated | truncated
    episode_return = state.episode_return + rewards
    episode_length = state.episode_length + 1
    tally = {
        "charts/episodic_return": (jnp.sum(jnp.where(done, episode_return, 0.0)), jnp.sum(done)),
        "charts/episodic_length": (jnp.sum(jnp.where(done, episode_length, 0.0)), jnp.sum(done)),
    }
    state = dataclasses.replace(state, replay=replay, env_state=env_state, obs=obs, key=key)
    return dataclasses.replace(
        state, episode_return=jnp.where(done, 0.0, episode_return), episode_length=jnp.where(done, 0.0, episode_length)
    ), tally


def td_target(setup: Setup, next_q: jax.Array, rewards, terminated, prior: jax.Array, beta: jax.Array) -> jax.Array:
    """y = r + γ(1 − terminated)·V(s'): V the soft value with the prior (mirl, sql), the max (dqn)."""
    if setup.args.algo != "dqn":
        next_value = soft_value(next_q, jnp.log(prior), beta)
    else:
        next_value = next_q.max(axis=-1)
    return rewards + setup.args.gamma * (1.0 - terminated) * next_value


def apply_td_step(setup: Setup, state: AgentState, grads, loss: jax.Array, q_mean: jax.Array, iteration):
    """Adam on the TD loss's gradients, then β from the same minibatch loss; tallies the loss and the mean Q. A
    non-finite loss is recorded with its step and the host stops the run at the chunk's end, before anything is
    saved or evaluated: cheaper than masking every step's update, which made a CartPole run measurably slower."""
    args, hypers = setup.args, state.hypers
    updates, opt_state = setup.optimizer(hypers.learning_rate).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    beta = state.beta
    if args.algo != "dqn":
        beta = update_beta(
            beta, loss, hypers.alpha_beta, hypers.beta_scale, args.td_loss_floor, hypers.beta_min, args.beta_max
        )
    env_steps = (iteration + 1) * args.num_envs
    nan_step = jnp.where((state.nan_step < 0) & ~jnp.isfinite(loss), env_steps, state.nan_step)
    tally = {"losses/td_loss": (loss, 1), "losses/q_values": (q_mean, 1)}
    return dataclasses.replace(state, params=params, opt_state=opt_state, beta=beta, nan_step=nan_step), tally


def learn(setup: Setup, state: AgentState, iteration: jax.Array) -> tuple[AgentState, dict]:
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


def learn_and_sync(setup: Setup, state: AgentState, iteration: jax.Array) -> tuple[AgentState, dict]:
    """After the environments' step: learn every --train-frequency steps once --learning-starts is past, and
    copy the Q-network into the target network every --target-network-frequency steps; tallies each gradient
    step (zeros where none is taken). `iteration` is shared by all seeds (not vmapped), so these branches stay
    branches under vmap."""
    args = setup.args
    env_steps = (iteration + 1) * args.num_envs
    learning = env_steps > args.learning_starts

    def learn_phase(state):
        return jax.lax.scan(lambda s, _: learn(setup, s, iteration), state, length=updates_per_learn(args))

    def no_learning(state):
        return state, jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(learn_phase, state)[1])

    state, tally = jax.lax.cond(learning & (env_steps % learn_period(args) == 0), learn_phase, no_learning, state)
    sync = learning & (env_steps % args.target_network_frequency < args.num_envs)
    target_params = jax.lax.cond(sync, lambda: state.params, lambda: state.target_params)
    return dataclasses.replace(state, target_params=target_params), tally


def iterate(setup: Setup, state: AgentState, iteration: jax.Array) -> tuple[AgentState, dict]:
    """One seed, one step of all its environments: behave, step and store, learn; with the step's tally. The order
    is the paper's: ρ moves in `choose`, so each TD target sees this step's ρ, and the β that the gradient steps
    before it left. `iteration` counts vector steps: iteration·num_envs environment steps came before it, and
    (iteration + 1)·num_envs are done once it ends (the count the learning and target schedules use)."""
    state, actions, acting = choose(setup, state, iteration)
    state, episodes = observe(setup, state, actions, iteration)
    state, learning = learn_and_sync(setup, state, iteration)
    return state, acting | episodes | learning


def interval_metrics(setup: Setup, states: AgentState, iteration: jax.Array, means: dict) -> tuple[dict, dict]:
    """Per-seed scalars and bar charts of the logging interval that ends at `iteration`: the means of what the steps
    tallied over it (a new mean: an entry `tag: (total, count)` in a step's tally) and values of the state."""
    scalars = means | {"charts/epsilon": epsilon_at(setup, states.hypers, iteration)}
    if setup.args.algo == "dqn":
        return scalars, {}
    scalars["mirl/beta"] = states.beta
    scalars["mirl/prior_entropy"] = -jnp.sum(states.prior * jnp.log(states.prior), axis=-1)
    if setup.args.redundant_actions:  # the copies are the last actions
        scalars["mirl/prior_on_copies"] = states.prior[..., -setup.args.redundant_actions :].sum(axis=-1)
    return scalars, {"mirl/prior": states.prior}


# --- The training loop: the steps in one scan, vmapped over seeds
class Trainer(NamedTuple):
    init: Callable  # (key, Hypers) -> AgentState: one run
    run: Callable  # (states, first_iteration, Chunk) -> (states, Records): seeds on the leading axis of states
    evaluate: Callable  # (states, a key per run) -> greedy episode returns, (runs, eval_episodes)
    train: Callable  # (keys, stacked Hypers) -> (states, Records): whole runs in one call, for use as a library


def make_train(args: Args, env, env_params) -> Trainer:
    """Wires the steps into one scan over iterations, vmapped over seeds. Every --log-interval steps the loop
    records each seed's metrics (a common.logger.Record); `run` returns them."""
    setup = make_setup(args, env, env_params)

    def init(key: jax.Array, hypers: Hypers) -> AgentState:
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
            nan_step=jnp.asarray(-1, jnp.int32),
            hypers=hypers,
        )

    def run(states: AgentState, first_iteration: jax.Array, chunk: Chunk) -> tuple[AgentState, Record]:
        """Advance all seeds (leading axis of `states`) by `chunk.length` iterations from `first_iteration`, which
        starts a logging interval (an interval's means come from one chunk)."""

        def end_interval(states: AgentState, iteration: jax.Array, means: dict) -> tuple[AgentState, Record]:
            metrics = interval_metrics(setup, states, iteration, means)
            scalars, bar_charts = live_seeds_only(states.nan_step, metrics)
            return states, Record((iteration + 1) * args.num_envs, scalars, bar_charts)

        step = partial(iterate, setup)
        return scan_tallied_over_seeds(step, states, first_iteration, chunk, args.log_every(), end_interval)

    def evaluate(states: AgentState, keys: jax.Array) -> jax.Array:
        """Greedy episodes (argmax π for mirl/sql, argmax Q for dqn), --eval-episodes per seed, in parallel."""

        def greedy_returns(state: AgentState, key: jax.Array) -> jax.Array:
            def act(obs: jax.Array) -> jax.Array:
                return jnp.argmax(greedy_logits(setup, q_values(setup, state.params, obs), state.prior, state.beta), -1)

            return episode_returns(env, env_params, act, key, args.eval_episodes)

        return jax.vmap(greedy_returns)(states, keys)

    def train(keys: jax.Array, hypers: Hypers) -> tuple[AgentState, Record]:
        num_iterations = args.total_timesteps // args.num_envs
        return run(jax.vmap(init)(keys, hypers), jnp.asarray(0, jnp.int32), Chunk(num_iterations, log_phase=0))

    return Trainer(init=init, run=run, evaluate=evaluate, train=train)


# --- The run around the algorithm: sweeps, flag checks, and what common.experiment needs
def flag_problems(args: Args, problems: list[str]) -> list[str]:
    """What makes the flags unable to make a run, added to the run flags' `problems`."""
    positive = "total_timesteps num_envs batch_size buffer_size train_frequency target_network_frequency "
    positive += "checkpoint_interval learning_rate td_loss_floor eval_episodes beta_max beta_scale"
    unit, fraction, finite = "gamma start_e end_e alpha_rho alpha_beta", "exploration_fraction", "beta_init beta_min"
    problems += out_of_range(
        args, positive, non_negative="redundant_actions", unit_interval=unit, fraction=fraction, finite=finite
    )
    if problems:  # the rules below assume these
        return problems
    problems += not_multiples(args, ("total_timesteps", "buffer_size", "checkpoint_interval"), of="num_envs")
    problems += loop_problems(args) + redundancy_problems(args.env_id, args.redundant_actions, args.copied_action)
    problems += interval_problems(args, ("checkpoint_interval",) if args.save_model else ())
    beta_min, beta_init = args.beta_min, args.beta_init
    if not (0 < min(beta_min) and max(beta_min) <= min(beta_init) and max(beta_init) <= args.beta_max):
        problems.append("need 0 < --beta-min <= --beta-init <= --beta-max (for every value swept)")
    unused = {"dqn": ("alpha_rho", "alpha_beta", "beta_init", "beta_min", "beta_scale"), "sql": ("alpha_rho",)}
    unused = unused.get(args.algo, ())
    return problems + sweep_problems(args, SWEPT_FLAGS, unused, f"with --algo {args.algo}")


# logging intervals per compiled chunk: a gymnax interval can take a tenth of a second, so return to the host rarely
INTERVALS_PER_CHUNK = 10


def build(start: Start) -> Experiment:
    """The runs of these flags (every configuration of the swept flags with every seed) for common.experiment."""
    args = start.args
    env, env_params = make_env(args.env_id, args.full_action_set, args.redundant_actions, args.copied_action)
    runs = grid_runs(args, SWEPT_FLAGS)
    trainer = make_train(args, env, env_params)
    num_configs = len(runs) // args.num_seeds
    obs_shape, obs_dtype = env.observation_space(env_params).shape, replay_obs_dtype(args.env_id, env, env_params)
    transition_bytes = Replay.bytes_per_transition(obs_shape, obs_dtype)

    @jax.jit
    def greedy_returns(states: AgentState, seed: jax.Array) -> jax.Array:
        # seed k plays the same evaluation episodes in every configuration, as in a run of its own
        keys = jax.random.split(jax.random.key(seed), args.num_seeds)
        return trainer.evaluate(states, jnp.concatenate([keys] * num_configs))

    def evaluate(states: AgentState, iteration: int) -> Evaluation:
        returns = host_value(greedy_returns(states, np.int32(args.seed)))
        scores = {"eval/episodic_return": returns.mean(axis=1)}
        return Evaluation(scores, "eval/episodic_return", {"eval_returns": returns, "runs": runs})

    return Experiment(
        name=args.algo,
        sub_runs=[run.name for run in runs],
        init=jax.vmap(lambda seed, hypers: trainer.init(jax.random.key(seed), hypers)),
        init_inputs=(np.asarray([run.seed for run in runs], np.int32), stacked_hypers(runs)),
        advance=trainer.run,
        evaluate=evaluate,
        checkpoint_every=args.checkpoint_interval // args.num_envs if args.save_model else None,
        intervals_per_chunk=INTERVALS_PER_CHUNK,
        whole_intervals=True,
        memory=(MemoryNeed.replays(num_configs, args.num_seeds, args.buffer_size, transition_bytes),),
        score_label=f"greedy eval/episodic_return over {args.eval_episodes} episodes per seed",
    )


def main(args: Args) -> dict:
    """Train (or resume) and evaluate; returns the final states, evaluation returns, runs and run directory."""
    return run_experiment(args, SCRIPT, build)


if __name__ == "__main__":
    run_script(main, Args, SCRIPT)
