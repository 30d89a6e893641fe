"""MIRL on Atari from pixels: soft Q-learning with a learned marginal action prior ρ and an adaptive inverse
temperature β (Grau-Moya, Leibfried & Vrancx, ICLR 2019), with SQL and DQN as `--algo` special cases, on envpool's
Atari games with the DeepMind preprocessing.

The equations are mirl_gymnax.py's, line for line (a test keeps them so): the soft value V(s) = logsumexp_a(log ρ(a)
+ β Q(s, a)) / β in the TD target, the policy π ∝ ρ exp(βQ), the prior update ρ ← ρ + α_ρ (π − ρ) and the
temperature update β ← β + α_β (c/L − β), c = 1 in the published rule. envpool's XLA interface puts the environment
step inside the compiled program: acting, storing, sampling, learning, ρ, β and ε are one `jax.lax.scan`, and
`--num-seeds N` trains N seeds from one envpool per device. The replay (common.replay.FrameReplay) stores each frame
once and rebuilds the stacks when it samples. Reading order: flags, network, equations, state, steps, `make_train`;
then what common.experiment needs.
"""

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro

from common.atari import EnvStep, check_env_id, open_pools, reset_pools, sharded_env_step
from common.cli import RunFlags, run_script
from common.cpu import Dense, PatchConv, unroll_threefry_on_cpu
from common.devices import shard_seeds
from common.errors import not_multiples, out_of_range
from common.experiment import Evaluation, Experiment, MemoryNeed, Start, run_experiment
from common.logger import Record, live_seeds_only
from common.loop import Chunk, interval_problems, scan_tallied
from common.replay import FrameReplay, loop_problems

SCRIPT = os.path.basename(__file__)
unroll_threefry_on_cpu()  # the same random bits, faster on a CPU


@dataclass(frozen=True)
class Args(RunFlags):
    # the run's flags (seeds, devices, checkpoints, logging) are common.cli.RunFlags', but for the processes: the
    # envpools live in one
    num_processes: tyro.conf.Suppress[int] = 1
    process_id: tyro.conf.Suppress[int | None] = None
    coordinator_address: tyro.conf.Suppress[str | None] = None
    checkpoint_interval: int = 1_000_000
    """environment steps (per seed) between checkpoints (with --save-model); the games restart on --resume"""
    eval_interval: int = 1_000_000
    """environment steps (per seed) between evaluations; there is always one at the end"""
    eval_episodes: int = 10
    """evaluation games per seed (full games, true score)"""
    eval_epsilon: float = 0.05
    """ε of the evaluation policy: a strictly greedy agent can wait forever to serve after losing a life"""
    env_id: str = "Breakout-v5"
    """an envpool Atari game id"""
    num_envs: int = 4
    """parallel environments per seed"""
    max_episode_steps: int = 27_000
    """agent steps (4 frames each: 30 minutes of play) after which a game is cut, in training and evaluation"""
    repeat_action_probability: float = 0.0
    """sticky actions (0.25 is Machado et al.'s protocol); 0 is the DeepMind setup"""
    episodic_life: bool = True
    """training only: a lost life ends the episode for the learner (the reported score is the whole game's)"""
    reward_clip: bool = True
    """training only: learn from the sign of the reward (the reported score is unclipped)"""

    # Algorithm
    algo: Literal["mirl", "sql", "dqn"] = "mirl"
    """mirl: learned prior ρ, adaptive β; sql: uniform prior, adaptive β; dqn: hard max backup"""
    total_timesteps: int = 10_000_000
    """environment steps per seed (agent steps: each is 4 frames)"""
    learning_rate: float = 1e-4
    """Adam learning rate"""
    anneal_lr: bool = False
    """decay the learning rate linearly to 0 over the gradient steps"""
    buffer_size: int = 1_000_000
    """replay capacity in transitions (per seed); each takes one 84×84 frame plus 8 bytes"""
    gamma: float = 0.99
    """discount factor"""
    target_network_frequency: int = 10_000
    """environment steps between hard copies of the Q-network into the target network (the paper's 1e4)"""
    batch_size: int = 32
    """minibatch size"""
    start_e: float = 1.0
    """ε at the start"""
    end_e: float = 0.01
    """ε at the end of the exploration phase"""
    exploration_fraction: float = 0.10
    """fraction of --total-timesteps over which ε decays linearly"""
    learning_starts: int = 80_000
    """environment steps before learning starts"""
    train_frequency: int = 4
    """environment steps per gradient step"""
    huber: bool = False
    """Huber instead of squared TD error; β's rule reads the loss, so Huber's 0.5·e² (|e| ≤ 1) doubles β's target c/L"""
    alpha_rho: float = 2e-6
    """prior step size α_ρ, per environment step (the paper's Atari value; mirl only)"""
    alpha_beta: float = 3.3e-6
    """β step size α_β, per gradient step (the paper's Atari value; 0 keeps β fixed at --beta-init)"""
    beta_init: float = 100.0
    """initial inverse temperature β: near 1/L for clipped rewards, so the entropy bonus log|A|/β stays small"""
    beta_min: float = 1.0
    """lower clip for β: the entropy bonus per step stays below log|A| ≤ 2.9, the scale of a clipped reward"""
    beta_max: float = 1e3
    """upper clip for β"""
    beta_scale: float = 1.0
    """c in β's rule: β moves towards c / L (1: the published rule; L and 1/β need not share a scale)"""
    td_loss_floor: float = 1e-3
    """β moves towards c/max(L, floor): a near-zero loss (sparse rewards) must not send β to infinity"""

    RESUMABLE: ClassVar = ("checkpoint_interval", "eval_interval", "eval_episodes", "eval_epsilon")
    EXTENSION_NOTE: ClassVar = ": from here on, ε and the learning rate follow the schedules of a run of that length"

    def steps_per_iteration(self) -> int:
        return self.num_envs

    def problems(self) -> list[str]:
        return flag_problems(self, super().problems())  # at the end, with the command line


# --- Network: the Nature DQN CNN (common.cpu: its convolutions as patch matmuls, the same functions)
def scale_pixels(obs: jax.Array) -> jax.Array:
    """envpool's (stack, height, width) uint8 frames to (height, width, stack) floats in [0, 1]."""
    return jnp.transpose(obs.astype(jnp.float32) / 255.0, (1, 2, 0))


class QNetwork(eqx.Module):
    """Mnih et al. (2015): conv 32·8×8/4, 64·4×4/2, 64·3×3/1, dense 512, on (stack, height, width) pixels."""

    layers: eqx.nn.Sequential

    def __init__(self, obs_shape: tuple[int, int, int], num_actions: int, key: jax.Array):
        channels, height, width = obs_shape
        keys = jax.random.split(key, 5)
        relu, layers = eqx.nn.Lambda(jax.nn.relu), [eqx.nn.Lambda(scale_pixels)]
        for (out_channels, size, stride), conv_key in zip(((32, 8, 4), (64, 4, 2), (64, 3, 1)), keys, strict=False):
            layers += [PatchConv(channels, out_channels, size=size, stride=stride, key=conv_key), relu]
            channels, height, width = out_channels, (height - size) // stride + 1, (width - size) // stride + 1
        layers += [eqx.nn.Lambda(jnp.ravel), Dense(channels * height * width, 512, key=keys[3]), relu]
        self.layers = eqx.nn.Sequential([*layers, Dense(512, num_actions, key=keys[4])])

    def __call__(self, obs: jax.Array) -> jax.Array:
        return self.layers(obs)


# --- The algorithm's math (mirl_gymnax.py's; tests/test_mirl_math.py checks both)
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


class AgentState(eqx.Module):
    """Everything one seed carries through the scan; saved whole in checkpoints."""

    params: Any
    target_params: Any
    opt_state: Any
    replay: FrameReplay
    obs: jax.Array  # (envs, stack, 84, 84): what the agent acts on next
    obs_first: jax.Array  # (envs,): `obs` is a fresh reset
    after_done: jax.Array  # (envs,): the last step ended an episode, so the next one is an auto-reset
    game_return: jax.Array  # (envs,): unclipped score of the game in progress
    prior: jax.Array  # ρ
    beta: jax.Array  # β
    key: jax.Array
    nan_step: jax.Array  # environment step of the first non-finite TD loss, -1 if none
    hypers: Hypers  # the run's configuration


def only_configuration(args: Args) -> Hypers:
    """The flags' values as the run's Hypers (mirl_atari.py sweeps nothing: on Atari one run is big enough)."""
    return Hypers(
        **{field.name: jnp.asarray(getattr(args, field.name), jnp.float32) for field in dataclasses.fields(Hypers)}
    )


def fresh_games(obs: jax.Array) -> dict:
    """The per-environment fields of one seed's AgentState for games that have just been reset."""
    num_envs = obs.shape[0]
    return {
        "obs": obs,
        "obs_first": jnp.ones(num_envs, jnp.bool_),
        "after_done": jnp.zeros(num_envs, jnp.bool_),
        "game_return": jnp.zeros(num_envs),
    }


# --- The agent's steps: pure functions of (setup, state, iteration). Those without an Atari part are
# the same as mirl_gymnax.py's, line for line (a test keeps them so).
class Setup(NamedTuple):
    """What the steps need besides the state: the Args and the static objects built from them once."""

    args: Args
    network: QNetwork  # the Q-network's structure; its parameters live in the state
    optimizer: Callable[[jax.Array], optax.GradientTransformation]  # of a run's learning rate


def make_setup(args: Args, num_actions: int, obs_shape: tuple[int, int, int]) -> Setup:
    _, network = eqx.partition(QNetwork(obs_shape, num_actions, jax.random.key(0)), eqx.is_array)
    return Setup(args, network, make_optimizer(args))


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


def observe(setup: Setup, state: AgentState, actions: jax.Array, step: EnvStep, iteration: jax.Array):
    """Store the environments' step and keep the true game score of finished games; tally the games that end."""
    replay = state.replay.add(
        iteration % state.replay.num_rows,
        frame=state.obs[:, -1],
        action=actions,
        reward=step.reward,
        terminated=step.terminated,
        first=state.obs_first,
        valid=~state.after_done,
    )
    game_return = state.game_return + step.score
    game_end = step.game_over | step.truncated
    tally = {
        "charts/episodic_return": (jnp.sum(jnp.where(game_end, game_return, 0.0)), jnp.sum(game_end)),
        "charts/episodic_length": (jnp.sum(jnp.where(game_end, step.elapsed, 0)), jnp.sum(game_end)),
    }
    return dataclasses.replace(
        state,
        replay=replay,
        obs=step.obs,
        obs_first=step.elapsed == 0,
        after_done=step.terminated | step.truncated,
        game_return=jnp.where(game_end, 0.0, game_return),
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
    """One gradient step on a replay minibatch (see apply_td_step); rows that are not valid transitions
    (FrameReplay.gather) get no weight."""
    args = setup.args
    key, sample_key = jax.random.split(state.key)
    batch = state.replay.gather(*state.replay.sample_indices(sample_key, iteration + 1, args.batch_size))
    next_q = q_values(setup, state.target_params, batch.next_obs)
    target = td_target(setup, next_q, batch.rewards, batch.terminated, state.prior, state.beta)
    weights = batch.valid.astype(jnp.float32) / jnp.maximum(batch.valid.sum(), 1)

    def td_loss(params):
        q_taken = jnp.take_along_axis(q_values(setup, params, batch.obs), batch.actions[:, None], axis=-1)[:, 0]
        error = q_taken - target
        loss = jnp.sum(weights * (optax.huber_loss(error) if args.huber else error**2))
        return loss, jnp.sum(weights * q_taken)

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


def interval_metrics(setup: Setup, states: AgentState, iteration: jax.Array, means: dict) -> tuple[dict, dict]:
    """Per-seed scalars and bar charts of the logging interval that ends at `iteration`: the means of what the steps
    tallied over it (a new mean: an entry `tag: (total, count)` in a step's tally) and values of the state."""
    scalars = means | {"charts/epsilon": epsilon_at(setup, states.hypers, iteration)}
    if setup.args.algo == "dqn":
        return scalars, {}
    scalars["mirl/beta"] = states.beta
    scalars["mirl/prior_entropy"] = -jnp.sum(states.prior * jnp.log(states.prior), axis=-1)
    return scalars, {"mirl/prior": states.prior}


# --- The training loop
class Trainer(NamedTuple):
    init: Callable  # (key, first obs (envs, ...)) -> AgentState (one seed)
    run: Callable  # (states, handles, first_iteration, Chunk) -> (states, Records)
    evaluate: Callable  # (states, handles, first obs (seeds, episodes, ...), key) -> (returns, handles)


def make_train(
    args: Args, num_actions: int, obs_shape: tuple[int, int, int], env_step: Callable, eval_step: Callable
) -> Trainer:
    """Wires the steps and envpool's step into one scan over iterations, the agent vmapped over seeds.
    `env_step`/`eval_step` step the training/evaluation pools (see sharded_env_step). Every --log-interval
    steps the loop records each seed's metrics (a common.logger.Record); `run` returns them."""
    setup = make_setup(args, num_actions, obs_shape)

    def init(key: jax.Array, obs: jax.Array) -> AgentState:
        hypers = only_configuration(args)
        network_key, loop_key = jax.random.split(key)
        params, _ = eqx.partition(QNetwork(obs_shape, num_actions, network_key), eqx.is_array)
        return AgentState(
            params=params,
            target_params=params,
            opt_state=setup.optimizer(hypers.learning_rate).init(params),
            replay=FrameReplay.empty(args.buffer_size, args.num_envs, obs_shape),
            **fresh_games(obs),
            prior=jnp.full(num_actions, 1.0 / num_actions, jnp.float32),
            beta=hypers.beta_init,
            key=loop_key,
            nan_step=jnp.asarray(-1, jnp.int32),
            hypers=hypers,
        )

    def observe_and_learn(state: AgentState, actions, step: EnvStep, iteration: jax.Array) -> tuple[AgentState, dict]:
        state, games = observe(setup, state, actions, step, iteration)
        state, learning = learn_and_sync(setup, state, iteration)
        return state, games | learning

    def run(states: AgentState, handles: jax.Array, first_iteration: jax.Array, chunk: Chunk):
        """Advance all seeds (leading axis of `states`) by `chunk.length` steps of their environments, whose pools
        `handles` name; the chunk starts a logging interval (an interval's means come from one chunk)."""

        def iterate(carry, iteration):
            states, handles = carry
            states, actions, acting = jax.vmap(choose, in_axes=(None, 0, None))(setup, states, iteration)
            handles, step = env_step(handles, actions)
            states, rest = jax.vmap(observe_and_learn, in_axes=(0, 0, 0, None))(states, actions, step, iteration)
            return (states, handles), acting | rest

        def end_interval(carry, iteration, means):
            states, handles = carry
            metrics = interval_metrics(setup, states, iteration, means)
            scalars, bar_charts = live_seeds_only(states.nan_step, metrics)
            return (states, handles), Record((iteration + 1) * args.num_envs, scalars, bar_charts)

        # envpool's handle orders the steps inside the chunk; its bytes stay the same, so the next chunk takes the same
        (states, _), records = scan_tallied(
            iterate, (states, handles), first_iteration, chunk, args.log_every(), end_interval
        )
        return states, records

    def evaluate(states: AgentState, handles: jax.Array, obs: jax.Array, key: jax.Array):
        """One whole game per evaluation environment (--eval-episodes per seed), ε-greedy on argmax π
        (argmax Q for dqn) with --eval-epsilon; returns the true scores, (seeds, episodes)."""

        def act(state, obs, key):
            logits = greedy_logits(setup, q_values(setup, state.params, obs), state.prior, state.beta)
            return behaviour_action(key, jnp.argmax(logits, axis=-1), jnp.log(state.prior), args.eval_epsilon)

        def not_finished(carry):
            steps, running = carry[0], carry[-1]
            return running.any() & (steps <= args.max_episode_steps)

        def step(carry):
            steps, handles, obs, key, returns, running = carry
            key, action_key = jax.random.split(key)
            actions = jax.vmap(act)(states, obs, jax.random.split(action_key, obs.shape[0]))
            handles, result = eval_step(handles, actions)
            returns = returns + jnp.where(running, result.score, 0.0)
            running = running & ~(result.game_over | result.truncated)
            return steps + 1, handles, result.obs, key, returns, running

        returns = jnp.zeros(obs.shape[:2])
        carry = (0, handles, obs, key, returns, jnp.ones(obs.shape[:2], jnp.bool_))
        _, handles, _, _, returns, _ = jax.lax.while_loop(not_finished, step, carry)
        return returns, handles

    return Trainer(init=init, run=run, evaluate=evaluate)


# --- The run around the algorithm: flag checks, and what common.experiment needs (common.atari: envpool's pools)
def flag_problems(args: Args, problems: list[str]) -> list[str]:
    """What makes the flags unable to make a run, added to the run flags' `problems`."""
    positive = "total_timesteps num_envs batch_size buffer_size train_frequency target_network_frequency eval_episodes "
    positive += "checkpoint_interval eval_interval learning_rate td_loss_floor beta_max max_episode_steps beta_scale"
    unit = "gamma start_e end_e alpha_rho alpha_beta eval_epsilon repeat_action_probability"
    problems += out_of_range(args, positive, unit_interval=unit, fraction="exploration_fraction")
    if problems:  # the rules below assume these
        return problems
    names = ("total_timesteps", "buffer_size", "checkpoint_interval", "eval_interval")
    problems += not_multiples(args, names, of="num_envs") + loop_problems(args)
    problems += interval_problems(args, ("eval_interval",) + ("checkpoint_interval",) * args.save_model)
    if args.buffer_size // args.num_envs <= 4:
        problems.append("--buffer-size must hold more than 4 steps of every environment (a frame stack and its next)")
    if args.learning_starts < 2 * args.num_envs:
        problems.append(f"--learning-starts ({args.learning_starts}) must be at least two steps of every environment")
    if not 0 < args.beta_min <= args.beta_init <= args.beta_max:
        problems.append("need 0 < --beta-min <= --beta-init <= --beta-max")
    if args.repeat_action_probability == 1:
        problems.append("--repeat-action-probability must be below 1: at 1 the agent's actions are never taken")
    return problems


def build(start: Start) -> Experiment:
    """The seeds' agents and their envpools (one training and one evaluation pool per device) for common.experiment."""
    args, mesh = start.args, start.mesh
    check_env_id(args.env_id)
    seeds = args.seeds()
    obs_shape = (4, 84, 84)
    pools, pool_steps, handles = open_pools(args, seeds, mesh, training=True)
    eval_pools, eval_pool_steps, eval_handles = open_pools(args, seeds, mesh, training=False)
    env_step = sharded_env_step(pool_steps, mesh, args.num_envs)
    eval_step = sharded_env_step(eval_pool_steps, mesh, args.eval_episodes)
    trainer = make_train(args, int(pools[0].action_space.n), obs_shape, env_step, eval_step)
    # envpool cannot save its emulators: a resumed run starts new games, everything else is restored
    obs = reset_pools(pools, args.num_seeds)
    evaluate_games = jax.jit(trainer.evaluate)

    def evaluate(states: AgentState, iteration: int) -> Evaluation:
        eval_obs = shard_seeds(jnp.asarray(reset_pools(eval_pools, args.num_seeds)), mesh)
        returns, _ = evaluate_games(states, eval_handles, eval_obs, jax.random.key(args.seed + iteration))
        returns = np.asarray(returns)
        scores = {"eval/episodic_return": returns.mean(axis=1)}
        return Evaluation(scores, "eval/episodic_return", {"eval_returns": returns})

    return Experiment(
        name=args.algo,
        init=jax.vmap(lambda seed, obs: trainer.init(jax.random.key(seed), obs)),
        init_inputs=(np.asarray(seeds, np.int32), obs),
        advance=trainer.run,
        run_inputs=(handles,),
        evaluate=evaluate,
        evaluate_every=args.eval_interval // args.num_envs,
        checkpoint_every=args.checkpoint_interval // args.num_envs if args.save_model else None,
        whole_intervals=True,
        memory=(MemoryNeed.replays(1, args.num_seeds, args.buffer_size, FrameReplay.bytes_per_transition(obs_shape)),),
        restored=lambda states: dataclasses.replace(
            states, **jax.vmap(fresh_games)(shard_seeds(jnp.asarray(obs), mesh))
        ),
        score_label=f"eval/episodic_return (true game score) over {args.eval_episodes} games per seed",
    )


def main(args: Args) -> dict:
    """Train (or resume) with evaluations; returns the final states, the last evaluation's returns and run directory."""
    return run_experiment(args, SCRIPT, build)


if __name__ == "__main__":
    run_script(main, Args, SCRIPT)
