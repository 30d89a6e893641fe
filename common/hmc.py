"""Hamiltonian Monte Carlo as MISA's official code runs it (tfp.mcmc.HamiltonianMonteCarlo inside
tfp.mcmc.SimpleStepSizeAdaptation): independent chains, an identity mass matrix, a Metropolis–Hastings correction,
and one step size for all chains, adapted multiplicatively during the first transitions. tests/test_misa_official.py
holds its chains to blackjax's HMC, tests/test_misa_math.py its adaptation to tfp's rule."""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp


class HMCConfig(NamedTuple):
    burn_in: int
    samples: int
    leapfrog_steps: int
    step_size: float
    adaptation_steps: int
    target_acceptance: float


def hmc_sample(log_density: Callable, initial: jax.Array, key: jax.Array, config: HMCConfig):
    """Independent chains, one per row of `initial` [chains, dim], targeting `log_density` (→ [chains]).

    Identity mass matrix and Metropolis–Hastings correction; a proposal with a non-finite density or
    gradient is rejected. The step size, shared by the chains, adapts during the first `adaptation_steps`
    transitions as the official code's tfp SimpleStepSizeAdaptation does (`adapt_step_size`). Returns the
    `samples` states after `burn_in` [samples, chains, dim], each chain's acceptance rate over the kept
    transitions [chains] and the final step size."""

    def value_and_grad(x):
        value, pullback = jax.vjp(log_density, x)
        return value, pullback(jnp.ones_like(value))[0]

    def transition(carry, inputs):
        x, log_p, grad, step_size = carry
        index, key = inputs
        momentum_key, accept_key = jax.random.split(key)
        momentum = jax.random.normal(momentum_key, x.shape)
        new_x, new_momentum, new_grad = x, momentum + 0.5 * step_size * grad, grad
        for leapfrog in range(config.leapfrog_steps):
            new_x = new_x + step_size * new_momentum
            new_log_p, new_grad = value_and_grad(new_x)
            last = leapfrog == config.leapfrog_steps - 1
            new_momentum = new_momentum + (0.5 if last else 1.0) * step_size * new_grad
        kinetic = 0.5 * jnp.sum(jnp.square(momentum), axis=-1)
        new_kinetic = 0.5 * jnp.sum(jnp.square(new_momentum), axis=-1)
        log_ratio = new_log_p - new_kinetic - (log_p - kinetic)
        finite = jnp.isfinite(log_ratio) & jnp.all(jnp.isfinite(new_grad), axis=-1)
        log_ratio = jnp.where(finite, log_ratio, -jnp.inf)
        accepted = jnp.log(jax.random.uniform(accept_key, log_p.shape)) < log_ratio
        keep = accepted[:, None]
        x, grad = jnp.where(keep, new_x, x), jnp.where(keep, new_grad, grad)
        log_p = jnp.where(accepted, new_log_p, log_p)
        step_size = adapt_step_size(step_size, log_ratio, index, config)
        return (x, log_p, grad, step_size), (x, accepted)

    log_p, grad = value_and_grad(initial)
    total = config.burn_in + config.samples
    carry = (initial, log_p, grad, jnp.asarray(config.step_size, jnp.float32))
    inputs = (jnp.arange(total), jax.random.split(key, total))
    (_, _, _, step_size), (states, accepted) = jax.lax.scan(transition, carry, inputs)
    return states[config.burn_in :], jnp.mean(accepted[config.burn_in :], axis=0), step_size


def adapt_step_size(step_size: jax.Array, log_ratio: jax.Array, index: jax.Array, config: HMCConfig) -> jax.Array:
    """tfp's SimpleStepSizeAdaptation after transition `index`: while index < adaptation_steps, the step size
    is multiplied by 1.01 if the acceptance probability min(1, exp(log_ratio)) averaged over the chains
    exceeds the target, and divided by 1.01 otherwise."""
    acceptance = jnp.mean(jnp.exp(jnp.minimum(log_ratio, 0.0)))
    adapted = jnp.where(acceptance > config.target_acceptance, step_size * 1.01, step_size / 1.01)
    return jnp.where(index < config.adaptation_steps, adapted, step_size)
