"""MISA on D4RL and Minari datasets: offline actor-critic regularized by a lower bound on the mutual information
between dataset states and actions (Ma, Kang, Xu, Lin & Yan, "Mutual Information Regularized Offline Reinforcement
Learning", NeurIPS 2023), with the biased-gradient ablation, CQL(H) and behaviour cloning as `--variant`s of one
learner. Defaults follow the authors' official code (sail-sg/MISA, JAX/Flax on JaxCQL), per-domain settings included;
every deviation is a flag.

The equations, each a pure function below:
- critics   L_Q = mean (Q(s, a) − y)² + w · (logsumexp_j Q(s, a_j) − log B − Q(s, a)), a_j ~ π(·|s), with
            y = r + γ (1 − d) min_k Q̄_k(s', a'), a' ~ π(·|s')  (cql: its importance-weighted set instead)
- actor     L_π = w_bc · mean(α log π(ã|s) − log π(a|s)) − mean min_k Q(s, ã) + 0.1 · mean log π(x|s), the x drawn
            by Hamiltonian Monte Carlo from p(x|s) ∝ π(x|s) exp(min_k Q(s, x))  (the unbiased gradient of the bound)
- α         L_α = −log α · mean(log π(ã|s) − |A|); Polyak targets; optionally a Lagrange multiplier on the bound

The dataset sits on the device once, `--num-seeds N` seeds are vmapped over it, gradient steps run in one
`jax.lax.scan`. Reading order: flags, equations, networks, one gradient step, `make_train`; then the run. The HMC
sampler is common.hmc's, as the official code's is tfp's.
"""

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from common import datasets
from common.checkpoint import load_checkpoint, read_header
from common.cli import RunFlags, run_script, saved_args
from common.cpu import unroll_threefry_on_cpu
from common.devices import on_lead_process
from common.errors import not_multiples, out_of_range
from common.experiment import Evaluation, Experiment, MemoryNeed, Start, run_experiment
from common.flax_layers import Dense, LayerNorm, output_init
from common.hmc import HMCConfig, hmc_sample
from common.logger import Record
from common.loop import Chunk, scan_logged

SCRIPT = os.path.basename(__file__)
unroll_threefry_on_cpu()  # the same random bits, faster on a CPU


# Per-domain settings of the official launch scripts; a flag left at None takes these
DOMAIN_DEFAULTS = {
    "locomotion": dict(total_steps=1_200_000, q_lr=3e-4, layer_norm=False, bc_weight=0.5, auto_alpha=True),
    "antmaze": dict(total_steps=2_000_000, q_lr=1e-4, layer_norm=True, bc_weight=0.5, auto_alpha=True),
    "kitchen": dict(total_steps=1_000_000, q_lr=1e-4, layer_norm=True, bc_weight=3.0, auto_alpha=True),
    "adroit": dict(total_steps=1_000_000, q_lr=3e-4, layer_norm=True, bc_weight=5.0, auto_alpha=False),
}


@dataclass(frozen=True)
class Args(RunFlags):
    # the run's flags (seeds, devices, checkpoints, logging) are common.cli.RunFlags'
    log_interval: int | None = None
    """gradient steps between TensorBoard writes; must divide --eval-interval and --total-steps (default: their gcd
    with 1000)"""
    env_id: str = "hopper-medium-v2"
    """a D4RL dataset (hopper-medium-v2, antmaze-umaze-v2, pen-human-v1, ...) or Minari id (mujoco/hopper/medium-v0)"""
    dataset_path: str | None = None
    """a D4RL-format HDF5 file to read instead of D4RL's cache (also: a file made by `python -m common.make_dataset`)"""
    action_clip: float = 0.999
    """dataset actions are clipped to ±this, so that their tanh-Gaussian log-probability is finite"""
    normalize_obs: bool = False
    """standardise each observation dimension by the dataset's mean and std + 1e-3 (not the official obs_norm)"""
    variant: Literal["misa", "misa-biased", "cql", "bc"] = "misa"
    """misa: MI regulariser with the HMC gradient term; misa-biased: without it; cql: CQL(H); bc: behaviour cloning"""
    total_steps: int | None = None
    """gradient steps per seed (default by domain: locomotion 1.2M, antmaze 2M, kitchen and adroit 1M)"""
    batch_size: int = 256
    """transitions per gradient step, drawn uniformly with replacement"""
    hidden_size: int = 256
    """width of the two hidden layers of the policy and of each critic"""
    policy_lr: float = 1e-4
    """Adam learning rate of the policy (and of log α)"""
    q_lr: float | None = None
    """Adam learning rate of the critics (and of log α'); default by domain: 1e-4 antmaze and kitchen, else 3e-4"""
    layer_norm: bool | None = None
    """LayerNorm after each hidden layer; default by domain: off for locomotion, on elsewhere"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 5e-3
    """Polyak rate of the target critics"""
    bc_weight: float | None = None
    """weight of the actor's behaviour-cloning term; default by domain: 0.5, kitchen 3.0, adroit 5.0"""
    auto_alpha: bool | None = None
    """learn the entropy temperature α towards entropy −|A|; default by domain: on, except adroit (fixed)"""
    fixed_alpha: float = 1.0
    """α when it is not learned"""
    regularizer_weight: float = 5.0
    """weight of the critics' logsumexp regulariser (CQL's min_q_weight)"""
    num_action_samples: int = 50
    """policy samples per state in the regulariser's logsumexp (cql: this many from each of its three sources)"""
    lagrange: bool | None = None
    """tune the regulariser's weight α' by dual descent to --lagrange-gap (official `lagrange`; default: antmaze)"""
    add_positive: bool | None = None
    """misa: the data action's Q(s, a) joins the logsumexp set (official `add_positive`; default: antmaze)"""
    lagrange_gap: float = 3.0
    """target value of the regulariser when --lagrange is on"""
    log_alpha_prime_init: float = 1.0
    """initial log of the Lagrange multiplier α'"""
    mcmc_weight: float = 0.1
    """weight of the actor's HMC ("unbiased gradient") term (misa only)"""
    hmc_burn_in: int = 5
    """HMC transitions discarded before the kept samples"""
    hmc_samples: int = 50
    """HMC transitions kept per chain (one chain per state in the batch)"""
    hmc_leapfrog_steps: int = 2
    """leapfrog steps per HMC transition"""
    hmc_step_size: float = 1.0
    """initial leapfrog step size"""
    hmc_adaptation_steps: int | None = None
    """first transitions whose step size moves ×/÷ 1.01 towards the target acceptance (default: int(0.8·burn-in))"""
    hmc_target_acceptance: float = 0.75
    """the acceptance rate the step size adapts towards"""
    hmc_diagnostics: bool = False
    """log misa/hmc_grad_ratio: ‖the HMC term's policy gradient‖ / ‖the rest's‖ (one more backward pass per sample)"""
    eval_interval: int | None = None
    """gradient steps between evaluations, and checkpoints with --save-model (default by domain: 10k, antmaze 50k)"""
    eval_episodes: int | None = None
    """deterministic evaluation episodes per seed (default by domain: 10, antmaze 100); 0 skips evaluation"""

    BUDGET: ClassVar = "total_steps"
    RESUMABLE: ClassVar = ("eval_interval", "eval_episodes", "dataset_path", "hmc_diagnostics")

    def __post_init__(self):
        """The flags left at None from the dataset's domain: parsed Args hold no None (so make Args of another
        dataset or variant anew, not with dataclasses.replace). Saved Args hold them all: no dataset is read."""
        if any(getattr(self, name) is None for name in DERIVED_FLAGS):
            for name, value in domain_defaults(self, datasets.dataset_domain(self.env_id, self.dataset_path)).items():
                object.__setattr__(self, name, value)

    def problems(self) -> list[str]:
        return flag_problems(self, super().problems())  # at the end, with the command line


# --- The equations: the tanh-Gaussian policy's log-density and the losses' terms
def log_one_minus_tanh_squared(pre_tanh: jax.Array) -> jax.Array:
    """log(1 − tanh(u)²) = 2(log 2 − u − softplus(−2u)), finite for every u."""
    return 2.0 * (math.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))


def tanh_gaussian_log_prob(pre_tanh: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """log π(tanh(u)) for the pre-tanh value u, summed over the action axis (change of variables)."""
    gaussian = -0.5 * jnp.square((pre_tanh - mean) / jnp.exp(log_std)) - log_std - 0.5 * math.log(2.0 * math.pi)
    return jnp.sum(gaussian - log_one_minus_tanh_squared(pre_tanh), axis=-1)


def log_prob_of_actions(actions: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """log π(a) of given actions; non-finite where |a| ≥ 1 (outside tanh's range)."""
    return tanh_gaussian_log_prob(jnp.arctanh(actions), mean, log_std)


def policy_sample(noise: jax.Array, mean: jax.Array, log_std: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Reparameterised tanh-Gaussian samples from standard normal `noise` (any leading axes broadcast
    against mean and log std), and their log-probabilities."""
    pre_tanh = mean + jnp.exp(log_std) * noise
    return jnp.tanh(pre_tanh), tanh_gaussian_log_prob(pre_tanh, mean, log_std)


def logsumexp_regularizer(scores: jax.Array, q_data: jax.Array, shift: float) -> jax.Array:
    """mean_b(logsumexp_j scores[..., j, b] − shift − Q(s_b, a_b)): the critic's push-down on the sampled
    actions' values against the data action's. For MISA it is minus the MI lower bound's critic term.
    The official code subtracts shift = log B (its batch size) in every variant: a constant, so the
    critics' gradients do not see it, but the Lagrange multiplier compares the shifted value with its gap."""
    return jnp.mean(jax.nn.logsumexp(scores, axis=-2) - shift - q_data, axis=-1)


def cql_scores(q_uniform, q_next, next_log_pi, q_current, current_log_pi, action_dim: int) -> jax.Array:
    """CQL(H)'s importance-weighted set along the sample axis (−2): Q − log density of uniform actions
    (density 0.5^|A| on [−1, 1]^|A|), of π(·|s') samples and of π(·|s) samples, all scored at the state s."""
    uniform_log_density = action_dim * math.log(0.5)
    return jnp.concatenate([q_uniform - uniform_log_density, q_next - next_log_pi, q_current - current_log_pi], axis=-2)


def actor_objective(alpha, log_pi, q_new, data_log_pi: jax.Array | None, bc_weight: float) -> jax.Array:
    """MISA: w·mean(α log π(ã|s) − log π(a|s)) − mean Q(s, ã), the entropy term inside the behaviour-cloning
    weight as in the official code; CQL (no data term): mean(α log π(ã|s) − Q(s, ã))."""
    if data_log_pi is None:
        return jnp.mean(alpha * log_pi - q_new)
    return bc_weight * jnp.mean(alpha * log_pi - data_log_pi) - jnp.mean(q_new)


def lagrange_multiplier(log_alpha_prime: jax.Array) -> jax.Array:
    """α' = clip(exp(log α'), 0, 1e6), as the official code bounds it."""
    return jnp.clip(jnp.exp(log_alpha_prime), 0.0, 1e6)


# --- Networks, initialised like Flax's defaults (the official code's)
class MLP(eqx.Module):
    """Two hidden Dense layers (optionally LayerNorm before the activation) and a small-init output."""

    hidden: tuple[Dense, Dense]
    norms: tuple[LayerNorm, LayerNorm] | None
    output: Dense
    activation: Callable = eqx.field(static=True)

    def __init__(self, in_size: int, out_size: int, hidden_size: int, layer_norm: bool, activation, key):
        keys = jax.random.split(key, 3)
        self.hidden = (Dense(in_size, hidden_size, keys[0]), Dense(hidden_size, hidden_size, keys[1]))
        self.norms = (LayerNorm(hidden_size), LayerNorm(hidden_size)) if layer_norm else None
        self.output = Dense(hidden_size, out_size, keys[2], output_init)
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        for index, layer in enumerate(self.hidden):
            x = layer(x)
            if self.norms is not None:
                x = self.norms[index](x)
            x = self.activation(x)
        return self.output(x)


class Policy(eqx.Module):
    """Tanh-Gaussian policy; log std = multiplier·raw + offset with two trainable scalars."""

    net: MLP
    log_std_multiplier: jax.Array
    log_std_offset: jax.Array

    def __init__(self, obs_dim: int, action_dim: int, hidden_size: int, layer_norm: bool, key: jax.Array):
        self.net = MLP(obs_dim, 2 * action_dim, hidden_size, layer_norm, jax.nn.relu, key)
        self.log_std_multiplier = jnp.asarray(1.0, jnp.float32)  # strongly typed, as the optimiser returns it
        self.log_std_offset = jnp.asarray(-1.0, jnp.float32)

    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean, raw_log_std = jnp.split(self.net(obs), 2, axis=-1)
        log_std = self.log_std_multiplier * raw_log_std + self.log_std_offset
        return jnp.clip(mean, -9.0, 9.0), jnp.clip(log_std, -5.0, 2.0)


class Critic(eqx.Module):
    net: MLP

    def __init__(self, obs_dim: int, action_dim: int, hidden_size: int, layer_norm: bool, key: jax.Array):
        self.net = MLP(obs_dim + action_dim, 1, hidden_size, layer_norm, jax.nn.elu, key)

    def __call__(self, obs: jax.Array, actions: jax.Array) -> jax.Array:
        return self.net(jnp.concatenate([obs, actions], axis=-1))[..., 0]


def twin_q(critics: Critic, obs: jax.Array, actions: jax.Array) -> jax.Array:
    """Q1 and Q2 (stacked on a leading axis of size 2 in `critics`) → [2, ...]."""
    return eqx.filter_vmap(lambda critic: critic(obs, actions))(critics)


# --- One gradient step: pure functions of (Args, parameters, batch, random draws)
class Batch(NamedTuple):
    observations: jax.Array
    actions: jax.Array
    rewards: jax.Array
    next_observations: jax.Array
    terminals: jax.Array


class Params(eqx.Module):
    """The four parameter groups; each is differentiated only through its own loss."""

    policy: Policy
    critics: Critic  # Q1 and Q2 stacked on a leading axis
    log_alpha: jax.Array
    log_alpha_prime: jax.Array


GROUPS = ("policy", "critics", "log_alpha", "log_alpha_prime")


class Draws(NamedTuple):
    """The random numbers of one gradient step but the HMC chains', drawn before the losses so that each
    loss is a deterministic function of the parameters (a test injects the official code's draws here).
    Policy samples are reparameterised: standard normal noise, turned into actions by `policy_sample`."""

    actor: jax.Array  # [B, A]: the actor's sample ã ~ π(·|s) (also α's)
    next: jax.Array  # [B, A]: a' ~ π(·|s') of the TD target
    current: jax.Array  # [N, B, A]: the regulariser's samples from π(·|s)
    next_state: jax.Array | None  # [N, B, A]: cql's samples from π(·|s')
    uniform: jax.Array | None  # [N, B, A] uniform on [−1, 1]: cql's uniform actions


def draw(args: Args, key: jax.Array, batch_size: int, action_dim: int) -> Draws:
    actor_key, next_key, current_key, next_state_key, uniform_key = jax.random.split(key, 5)
    one, many = (batch_size, action_dim), (args.num_action_samples, batch_size, action_dim)
    cql = args.variant == "cql"
    return Draws(
        actor=jax.random.normal(actor_key, one),
        next=jax.random.normal(next_key, one),
        current=jax.random.normal(current_key, many),
        next_state=jax.random.normal(next_state_key, many) if cql else None,
        uniform=jax.random.uniform(uniform_key, many, minval=-1.0, maxval=1.0) if cql else None,
    )


def alpha_of(args: Args, log_alpha: jax.Array) -> jax.Array:
    return jnp.exp(log_alpha) if args.auto_alpha else jnp.asarray(args.fixed_alpha, jnp.float32)


def td_target(args: Args, policy: Policy, target_critics: Critic, batch: Batch, noise: jax.Array) -> jax.Array:
    """y = r + (1 − d)·γ·min_k Q̄_k(s', a'), a' ~ π(·|s'): no entropy term (the official backup)."""
    next_actions, _ = policy_sample(noise, *policy(batch.next_observations))
    next_q = twin_q(target_critics, batch.next_observations, next_actions).min(axis=0)
    return batch.rewards + (1.0 - batch.terminals) * args.gamma * next_q


def regularizer_scores(args: Args, critics: Critic, policy: Policy, batch: Batch, draws: Draws, q_data) -> jax.Array:
    """Each critic's logsumexp set [2, K, B]. misa: Q(s, ·) at N samples of π(·|s), and with
    --add-positive the data action's Q(s, a) too; cql: the importance-weighted uniform, π(·|s') and
    π(·|s) samples, all scored at s (the data action never)."""
    obs = jnp.broadcast_to(batch.observations, (args.num_action_samples, *batch.observations.shape))
    current_actions, current_log_pi = policy_sample(draws.current, *policy(batch.observations))
    q_current = twin_q(critics, obs, current_actions)
    if args.variant == "cql":
        next_actions, next_log_pi = policy_sample(draws.next_state, *policy(batch.next_observations))
        q_uniform, q_next = twin_q(critics, obs, draws.uniform), twin_q(critics, obs, next_actions)
        return cql_scores(q_uniform, q_next, next_log_pi, q_current, current_log_pi, batch.actions.shape[-1])
    if args.add_positive:
        return jnp.concatenate([q_current, q_data[:, None]], axis=1)
    return q_current


def critic_loss(critics: Critic, args: Args, policy: Policy, target_critics: Critic, log_alpha_prime, batch, draws):
    """Σ_k L_Qk, each critic's mean squared TD error plus its weighted logsumexp regulariser (with
    --lagrange: α'·w·(regulariser − gap)). Only `critics` is differentiated; returns the per-critic
    losses and regularisers [2] beside the sum."""
    target = td_target(args, policy, target_critics, batch, draws.next)
    q_data = twin_q(critics, batch.observations, batch.actions)  # [2, B]
    td_losses = jnp.mean(jnp.square(q_data - target), axis=-1)
    scores = regularizer_scores(args, critics, policy, batch, draws, q_data)
    regularizers = logsumexp_regularizer(scores, q_data, math.log(batch.rewards.shape[-1]))
    if args.lagrange:
        penalties = lagrange_multiplier(log_alpha_prime) * args.regularizer_weight * (regularizers - args.lagrange_gap)
    else:
        penalties = args.regularizer_weight * regularizers
    losses = td_losses + penalties
    metrics = {
        "losses/qf1_loss": td_losses[0],
        "losses/qf2_loss": td_losses[1],
        "losses/regularizer": regularizers.mean(),
        "losses/q_data": q_data.mean(),
        "losses/td_target": target.mean(),
    }
    return jnp.sum(losses), (losses, regularizers, metrics)


def actor_loss(policy: Policy, args: Args, critics: Critic, log_alpha, batch: Batch, noise, mcmc_actions):
    """The policy's loss for the variant, plus `--mcmc-weight`·mean log π(x|s) over the HMC samples x
    when given (misa). Only `policy` is differentiated; returns log π(ã|s) for α's loss."""
    mean, log_std = policy(batch.observations)
    data_log_pi = log_prob_of_actions(batch.actions, mean, log_std)
    actions, log_pi = policy_sample(noise, mean, log_std)
    metrics = {"losses/log_pi": log_pi.mean(), "losses/data_log_pi": data_log_pi.mean()}
    if args.variant == "bc":
        return -data_log_pi.mean(), (log_pi, metrics)
    q_new = twin_q(critics, batch.observations, actions).min(axis=0)
    data_term = None if args.variant == "cql" else data_log_pi
    loss = actor_objective(alpha_of(args, log_alpha), log_pi, q_new, data_term, args.bc_weight)
    if mcmc_actions is not None:
        mcmc_term = log_prob_of_actions(mcmc_actions, mean, log_std).mean()
        loss = loss + args.mcmc_weight * mcmc_term
        metrics["misa/mcmc_log_pi"] = mcmc_term
    return loss, (log_pi, metrics)


def hmc_gradient_ratio(args: Args, policy: Policy, policy_grad: Policy, batch: Batch, mcmc_actions) -> jax.Array:
    """‖∇ of --mcmc-weight·mean log π(x|s) over the HMC samples x‖ / ‖∇ of the rest of the actor's loss‖, the
    rest being the whole loss's gradient `policy_grad` minus the HMC term's (the loss is their sum)."""

    def hmc_term(policy):
        mean, log_std = policy(batch.observations)
        return args.mcmc_weight * log_prob_of_actions(mcmc_actions, mean, log_std).mean()

    hmc_grad = jax.grad(hmc_term)(policy)
    rest = jax.tree.map(jnp.subtract, policy_grad, hmc_grad)
    return optax.global_norm(hmc_grad) / optax.global_norm(rest)


def temperature_loss(log_alpha: jax.Array, log_pi: jax.Array, target_entropy: float) -> jax.Array:
    """L_α = −log α · mean(log π(ã|s) + target entropy), with the actor's own sample ã (a constant here)."""
    return -log_alpha * jnp.mean(log_pi + target_entropy)


def lagrange_loss(log_alpha_prime: jax.Array, args: Args, regularizers: jax.Array) -> jax.Array:
    """Dual descent on α': −½ Σ_k α'·w·(regulariser_k − gap), so α' grows while the regularisers exceed the gap."""
    gaps = jax.lax.stop_gradient(regularizers) - args.lagrange_gap
    return -0.5 * jnp.sum(lagrange_multiplier(log_alpha_prime) * args.regularizer_weight * gaps)


def improved_policy_log_density(params: Params, observations: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """a [B, A] ↦ log π(a|s) + min_k Q_k(s, a) [B]: the one-step improved policy's log-density at the states
    `observations` [B, obs_dim], up to its normaliser (a constant per state, which HMC does not need)."""
    mean, log_std = params.policy(observations)

    def log_density(actions: jax.Array) -> jax.Array:
        q = twin_q(params.critics, observations, actions).min(axis=0)
        return log_prob_of_actions(actions, mean, log_std) + q

    return log_density


def hmc_config(args: Args) -> HMCConfig:
    return HMCConfig(*(getattr(args, f"hmc_{name}") for name in HMCConfig._fields))


def mcmc_actions(args: Args, params: Params, batch: Batch, key: jax.Array) -> tuple[jax.Array, dict]:
    """HMC samples [S, B, A] of p(a|s) ∝ π(a|s) exp(min Q(s, a)), one chain per batch state started at its
    data action, with the current (pre-update) parameters; computed once per step and held constant."""
    log_density = improved_policy_log_density(params, batch.observations)
    samples, acceptance, step_size = hmc_sample(log_density, batch.actions, key, hmc_config(args))
    distance = jnp.linalg.norm(samples - batch.actions, axis=-1)  # [S, B]: how far each sample is from its start
    metrics = {
        "misa/hmc_acceptance": acceptance.mean(),
        "misa/hmc_step_size": step_size,
        "misa/hmc_distance_to_data": distance.mean(),  # in the learner's [−1, 1] action units
        "misa/hmc_moved_fraction": (distance > 0).mean(),  # samples that are not the data action itself
    }
    return jax.lax.stop_gradient(samples), metrics


def gradients(
    args: Args, params: Params, target_critics: Critic, batch: Batch, draws: Draws, mcmc: jax.Array | None
) -> tuple[Params, dict, dict]:
    """Every group's loss differentiated w.r.t. that group only, all at the same pre-update parameters.
    Returns the gradients (zero for the groups this configuration does not train), the losses that were
    differentiated, and the metrics."""
    grads = jax.tree.map(jnp.zeros_like, params)
    (policy_loss, (log_pi, metrics)), policy_grad = jax.value_and_grad(actor_loss, has_aux=True)(
        params.policy, args, params.critics, params.log_alpha, batch, draws.actor, mcmc
    )
    grads = eqx.tree_at(lambda g: g.policy, grads, policy_grad)
    losses = {"policy": policy_loss}
    metrics = {**metrics, "losses/policy_loss": policy_loss}
    if args.hmc_diagnostics and mcmc is not None:
        metrics["misa/hmc_grad_ratio"] = hmc_gradient_ratio(args, params.policy, policy_grad, batch, mcmc)
    if args.variant != "bc":
        (_, (critic_losses, regularizers, critic_metrics)), critic_grad = jax.value_and_grad(critic_loss, has_aux=True)(
            params.critics, args, params.policy, target_critics, params.log_alpha_prime, batch, draws
        )
        grads = eqx.tree_at(lambda g: g.critics, grads, critic_grad)
        losses["critics"] = critic_losses
        metrics.update(critic_metrics, **{"losses/alpha": alpha_of(args, params.log_alpha)})
        if args.lagrange:
            losses["log_alpha_prime"], grad = jax.value_and_grad(lagrange_loss)(
                params.log_alpha_prime, args, regularizers
            )
            grads = eqx.tree_at(lambda g: g.log_alpha_prime, grads, grad)
            metrics["losses/alpha_prime_loss"] = losses["log_alpha_prime"]
            metrics["losses/alpha_prime"] = lagrange_multiplier(params.log_alpha_prime)
        if args.auto_alpha:
            target_entropy = -float(batch.actions.shape[-1])
            losses["log_alpha"], grad = jax.value_and_grad(temperature_loss)(params.log_alpha, log_pi, target_entropy)
            grads = eqx.tree_at(lambda g: g.log_alpha, grads, grad)
            metrics["losses/alpha_loss"] = losses["log_alpha"]
    return grads, losses, metrics


def make_optimizers(args: Args) -> Params:
    """One Adam per parameter group (Adam is elementwise, so Q1 and Q2 sharing one is the same as two)."""
    return Params(
        policy=optax.adam(args.policy_lr),
        critics=optax.adam(args.q_lr),
        log_alpha=optax.adam(args.policy_lr),
        log_alpha_prime=optax.adam(args.q_lr),
    )


def init_opt_state(args: Args, params: Params) -> tuple:
    optimizers = make_optimizers(args)
    return tuple(getattr(optimizers, name).init(getattr(params, name)) for name in GROUPS)


def apply_gradients(
    args: Args, params: Params, opt_state: tuple, target_critics: Critic, grads: Params
) -> tuple[Params, tuple, Critic]:
    """Adam on each group, then the target critics' Polyak step towards the new critics."""
    optimizers = make_optimizers(args)
    new_groups, new_opt_state = [], []
    for name, group_opt_state in zip(GROUPS, opt_state, strict=True):
        updates, group_opt_state = getattr(optimizers, name).update(getattr(grads, name), group_opt_state)
        new_groups.append(optax.apply_updates(getattr(params, name), updates))
        new_opt_state.append(group_opt_state)
    new_params = Params(*new_groups)
    target_critics = jax.tree.map(
        lambda new, old: args.tau * new + (1.0 - args.tau) * old, new_params.critics, target_critics
    )
    return new_params, tuple(new_opt_state), target_critics


# --- Learner state and the training loop
class TrainState(eqx.Module):
    params: Params
    target_critics: Critic
    opt_state: tuple
    key: jax.Array
    nan_step: jax.Array  # gradient step of the first non-finite loss, -1 if none


class Trainer(NamedTuple):
    init: Callable
    run: Callable
    actions: Callable


def make_train(args: Args, obs_dim: int, action_dim: int) -> Trainer:
    """The learner: `run` returns each seed's training metrics averaged over every --log-interval steps (a
    common.logger.Record)."""

    def init(key: jax.Array) -> TrainState:
        policy_key, critic_key, loop_key = jax.random.split(key, 3)
        critics = eqx.filter_vmap(lambda k: Critic(obs_dim, action_dim, args.hidden_size, args.layer_norm, k))(
            jax.random.split(critic_key, 2)
        )
        params = Params(
            policy=Policy(obs_dim, action_dim, args.hidden_size, args.layer_norm, policy_key),
            critics=critics,
            log_alpha=jnp.asarray(0.0, jnp.float32),
            log_alpha_prime=jnp.asarray(args.log_alpha_prime_init, jnp.float32),
        )
        return TrainState(params, critics, init_opt_state(args, params), loop_key, jnp.asarray(-1, jnp.int32))

    def update(state: TrainState, dataset: Batch, step: jax.Array) -> tuple[TrainState, dict]:
        """One gradient step on a fresh batch: gradients, Adam, Polyak; a non-finite loss leaves the learner
        as it was and records the step (the host stops the run at the chunk's end)."""
        key, batch_key, draws_key, mcmc_key = jax.random.split(state.key, 4)
        size = dataset.rewards.shape[0]
        batch = jax.tree.map(lambda x: x[jax.random.randint(batch_key, (args.batch_size,), 0, size)], dataset)
        draws = draw(args, draws_key, args.batch_size, action_dim)
        mcmc, metrics = (None, {})
        if args.variant == "misa":
            mcmc, metrics = mcmc_actions(args, state.params, batch, mcmc_key)
        grads, losses, loss_metrics = gradients(args, state.params, state.target_critics, batch, draws, mcmc)
        new = apply_gradients(args, state.params, state.opt_state, state.target_critics, grads)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(loss)) for loss in losses.values()]))
        params, opt_state, target_critics = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old), new, (state.params, state.opt_state, state.target_critics)
        )
        nan_step = jnp.where((state.nan_step < 0) & ~finite, step, state.nan_step)
        return TrainState(params, target_critics, opt_state, key, nan_step), {**metrics, **loss_metrics}

    def run(states: TrainState, dataset: Batch, first_step: jax.Array, chunk: Chunk) -> tuple[TrainState, Record]:
        """Advance all seeds (leading axis of `states`) by `chunk.length` gradient steps, whole --log-interval
        blocks, with a Record of the metrics' means over each."""
        if chunk.log_phase or chunk.length % args.log_interval:
            raise ValueError(f"a chunk of {chunk} is not whole --log-interval ({args.log_interval}) blocks")

        def step(states: TrainState, step_index: jax.Array) -> tuple[TrainState, dict]:
            return jax.vmap(update, in_axes=(0, None, None))(states, dataset, step_index)

        def end_interval(states: TrainState, last_step: jax.Array, metrics: dict) -> tuple[TrainState, Record]:
            return states, Record(last_step + 1, jax.tree.map(lambda m: m.mean(axis=0), metrics), {})

        return scan_logged(step, states, first_step, chunk, args.log_interval, end_interval)

    def actions(policies: Policy, obs: jax.Array) -> jax.Array:
        """Deterministic actions tanh(mean) for every seed: policies [seeds, ...], obs [seeds, n, obs_dim]."""
        return jax.vmap(lambda policy, o: jnp.tanh(policy(o)[0]))(policies, obs)

    return Trainer(init=init, run=run, actions=actions)


# --- The run around the algorithm: data, evaluation, flag checks, and what common.experiment needs
DERIVED_FLAGS = (*DOMAIN_DEFAULTS["locomotion"], "lagrange", "add_positive", "hmc_adaptation_steps", "eval_interval")
DERIVED_FLAGS += ("eval_episodes", "log_interval")


def domain_defaults(args: Args, domain: str) -> dict:
    """Values for the flags left at None, from the dataset's domain."""
    defaults = dict(
        DOMAIN_DEFAULTS[domain],
        lagrange=domain == "antmaze" and args.variant != "bc",
        add_positive=domain == "antmaze" and args.variant in ("misa", "misa-biased"),
        hmc_adaptation_steps=int(0.8 * args.hmc_burn_in),
        eval_interval=50_000 if domain == "antmaze" else 10_000,
        eval_episodes=100 if domain == "antmaze" else 10,
    )
    defaults = {name: value for name, value in defaults.items() if getattr(args, name) is None}
    if args.log_interval is None:
        eval_interval = defaults.get("eval_interval", args.eval_interval)
        defaults["log_interval"] = math.gcd(1_000, eval_interval, defaults.get("total_steps", args.total_steps))
    return defaults


def load_policy(path: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """The deterministic policy of the first seed in a checkpoint, as a NumPy function from observations
    [n, obs_dim] to actions [n, action_dim] in the environment's box (for `common.make_dataset`)."""
    header = read_header(path)
    args = saved_args(Args, header, path, SCRIPT)
    trainer = make_train(args, header["obs_dim"], header["action_dim"])
    like = eqx.filter_eval_shape(jax.vmap(trainer.init), jax.vmap(jax.random.key)(jnp.arange(args.num_seeds)))
    policy = jax.tree.map(lambda x: x[:1], load_checkpoint(path, like).params.policy)
    scale, box = datasets.ObsScaler.from_header(header), datasets.ActionBox.from_header(header)
    act = jax.jit(trainer.actions)

    def policy_fn(obs: np.ndarray) -> np.ndarray:
        return box.from_unit(np.asarray(act(policy, scale(obs)[None]))[0])

    return policy_fn


def flag_problems(args: Args, problems: list[str]) -> list[str]:
    """What makes the flags unable to make a run, added to the run flags' `problems` (domain defaults filled in)."""
    positive = "total_steps batch_size hidden_size policy_lr q_lr num_action_samples eval_interval"
    non_negative = "eval_episodes bc_weight fixed_alpha regularizer_weight mcmc_weight"
    finite = "lagrange_gap log_alpha_prime_init"
    problems += out_of_range(args, positive, non_negative, unit_interval="gamma", fraction="tau", finite=finite)
    if args.variant == "misa":
        positive, non_negative = "hmc_samples hmc_leapfrog_steps hmc_step_size", "hmc_burn_in hmc_adaptation_steps"
        problems += out_of_range(args, positive, non_negative, unit_interval="hmc_target_acceptance")
    if problems:  # the rules below assume these
        return problems
    problems += not_multiples(args, ("eval_interval", "total_steps"), of="log_interval")
    if not 0.0 < args.action_clip < 1.0:
        problems.append("--action-clip must lie in (0, 1): tanh-Gaussian log-probabilities are infinite at ±1")
    if args.lagrange and args.variant == "bc":
        problems.append("--lagrange tunes the critics' regulariser; --variant bc trains no critics")
    if args.add_positive and args.variant not in ("misa", "misa-biased"):
        problems.append(
            f"--add-positive puts the data action in the misa regulariser's set; --variant {args.variant} has no "
            "such set (the official code applies it to misa only)"
        )
    return problems


def build(start: Start) -> Experiment:
    """The seeds' learners on the dataset, evaluated every --eval-interval steps, for common.experiment."""
    args = start.args
    data, info = datasets.load_dataset(args.env_id, args.dataset_path)
    envs = datasets.make_eval_envs(info, args.num_seeds * args.eval_episodes) if args.eval_episodes > 0 else None
    if envs is not None:
        datasets.check_against_env(data, info, envs)
    box = datasets.action_box(info, data.actions, args.action_clip)
    seeds = args.seeds()
    arrays, scale_obs = datasets.training_arrays(data, info, box, args.action_clip, args.normalize_obs)
    dataset = Batch(**dataclasses.asdict(arrays))
    obs_dim, action_dim = dataset.observations.shape[1], dataset.actions.shape[1]
    trainer = make_train(args, obs_dim, action_dim)
    act = jax.jit(trainer.actions)

    def evaluate(states: TrainState, step: int) -> Evaluation | None:
        policies = on_lead_process(states.params.policy)  # process 0 gathers every seed's; the others get None
        if envs is None or policies is None:
            return None
        env_seeds = datasets.evaluation_seeds(seeds, step, args.eval_episodes)
        returns = datasets.evaluate_policies(act, policies, len(seeds), envs, scale_obs, box, env_seeds).mean(axis=1)
        normalized = datasets.normalized_score(info, returns)  # the headline where the dataset has reference scores
        scores = {"eval/normalized_score": normalized} if normalized is not None else {}
        headline = "eval/normalized_score" if scores else "eval/episodic_return"
        return Evaluation({**scores, "eval/episodic_return": returns}, headline, {"returns": returns})

    rows, dataset_bytes = len(dataset.rewards), sum(x.nbytes for x in dataset)
    return Experiment(
        name=args.variant,
        init=jax.vmap(lambda seed: trainer.init(jax.random.key(seed))),
        init_inputs=(np.asarray(seeds, np.int32),),
        advance=trainer.run,
        run_inputs=(dataset,),
        evaluate=evaluate,
        evaluate_every=args.eval_interval,
        memory=(MemoryNeed(f"the dataset ({rows:,} transitions)", dataset_bytes * start.mesh.size, ""),),
        header=dict(obs_dim=obs_dim, action_dim=action_dim, dataset_rows=rows, **scale_obs.header(), **box.header()),
        loss="a loss",
        step_unit="gradient step",
        keep_best=True,
        whole_intervals=True,
        same_on_resume=("dataset_rows",),
    )


def main(args: Args) -> dict:
    """Train (or resume), evaluating every --eval-interval steps; returns the final states, scores and run directory."""
    return run_experiment(args, SCRIPT, build)


if __name__ == "__main__":
    run_script(main, Args, SCRIPT)
