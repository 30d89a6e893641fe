"""Mutation check: does the suite notice when an equation breaks?

Each mutant below is a one-line change to an update equation of one of the three scripts (TD targets,
soft value, policy logits, ρ and β updates, ε schedule, replay add/sample validity, frame stacking,
regularisers, actor losses, α and α' updates, Polyak, HMC acceptance, ...). For each, this script
copies the repository to a scratch folder, applies the change there, runs only the tests that cover
that equation, and counts the mutant as killed when they fail. The working tree is never touched.

    python tests/mutation_check.py              # all mutants (about 15 minutes on 2 cores)
    python tests/mutation_check.py -k misa      # those whose name contains "misa"

It exits non-zero if a mutant survives or a mutation no longer applies (its line was edited: update
the list). Not part of the suite: run it after changing an equation or its tests.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]


class Mutant(NamedTuple):
    name: str
    file: str
    original: str  # must occur exactly once in the file
    mutated: str
    tests: tuple[str, ...]


GYMNAX_STEPS = ("tests/test_mirl_steps.py",)
GYMNAX_MATH = ("tests/test_mirl_math.py",)
ATARI = ("tests/test_frame_replay.py", "tests/test_mirl_math.py::test_atari_script_has_the_same_math")
MISA = ("tests/test_misa_official.py", "tests/test_misa_math.py")
HMC = (
    "tests/test_misa_math.py",
    "tests/test_misa_official.py",
    "-k",
    "hmc or adaptation",
)  # the samples are injected elsewhere

MUTANTS = [
    # mirl_gymnax: targets, soft value, policy, prior, β, ε, behaviour, replay, learning schedule
    Mutant(
        "gymnax: TD target drops (1 − terminated)",
        "mirl_gymnax.py",
        "return rewards + setup.args.gamma * (1.0 - terminated) * next_value",
        "return rewards + setup.args.gamma * next_value",
        GYMNAX_STEPS,
    ),
    Mutant(
        "gymnax: TD target ignores γ",
        "mirl_gymnax.py",
        "return rewards + setup.args.gamma * (1.0 - terminated) * next_value",
        "return rewards + 0.99 * (1.0 - terminated) * next_value",
        GYMNAX_STEPS,
    ),
    Mutant(
        "gymnax: TD target bootstraps from the hard max for mirl",
        "mirl_gymnax.py",
        'if setup.args.algo != "dqn":\n        next_value = soft_value(',
        "if False:\n        next_value = soft_value(",
        GYMNAX_STEPS,
    ),
    Mutant(
        "gymnax: soft value not divided by β",
        "mirl_gymnax.py",
        "return prior_mean[..., 0] + jnp.where(jnp.abs(centred).max(axis=-1) < 1.0, near, far) / beta",
        "return prior_mean[..., 0] + jnp.where(jnp.abs(centred).max(axis=-1) < 1.0, near, far)",
        GYMNAX_MATH,
    ),
    Mutant(
        "gymnax: soft value without the prior",
        "mirl_gymnax.py",
        "far = jax.nn.logsumexp(log_prior + centred, axis=-1)",
        "far = jax.nn.logsumexp(centred, axis=-1)",
        GYMNAX_MATH,
    ),
    Mutant(
        "gymnax: policy logits without log ρ",
        "mirl_gymnax.py",
        "return log_prior + beta * q",
        "return beta * q",
        GYMNAX_MATH + GYMNAX_STEPS,
    ),
    Mutant(
        "gymnax: greedy on Q for mirl",
        "mirl_gymnax.py",
        'return policy_logits(q, jnp.log(prior), beta) if setup.args.algo != "dqn" else q',
        "return q",
        GYMNAX_STEPS,
    ),
    Mutant(
        "gymnax: KL(π‖ρ) without log ρ",
        "mirl_gymnax.py",
        "policy_terms = jnp.exp(log_policy) * (log_policy - log_prior)",
        "policy_terms = jnp.exp(log_policy) * log_policy",
        GYMNAX_MATH,
    ),
    Mutant(
        "gymnax: ρ rate ignores the number of states",
        "mirl_gymnax.py",
        "rate = -jnp.expm1(num_states * jnp.log1p(-alpha))",
        "rate = alpha",
        GYMNAX_MATH,
    ),
    Mutant(
        "gymnax: ρ moves away from π",
        "mirl_gymnax.py",
        "prior = prior + rate * (mean_policy - prior)",
        "prior = prior + rate * (prior - mean_policy)",
        GYMNAX_MATH,
    ),
    Mutant(
        "gymnax: ρ updated for sql too",
        "mirl_gymnax.py",
        'if args.algo == "mirl":  # sql and dqn keep ρ uniform',
        'if args.algo != "dqn":  # sql and dqn keep ρ uniform',
        GYMNAX_STEPS,
    ),
    Mutant(
        "gymnax: β rule without −β",
        "mirl_gymnax.py",
        "beta = beta + alpha * (scale / jnp.maximum(loss, loss_floor) - beta)",
        "beta = beta + alpha * (scale / jnp.maximum(loss, loss_floor))",
        GYMNAX_MATH,
    ),
    Mutant(
        "gymnax: β rule without the loss floor",
        "mirl_gymnax.py",
        "beta = beta + alpha * (scale / jnp.maximum(loss, loss_floor) - beta)",
        "beta = beta + alpha * (scale / loss - beta)",
        GYMNAX_MATH,
    ),
    Mutant(
        "gymnax: β rule without its scale c",
        "mirl_gymnax.py",
        "beta = beta + alpha * (scale / jnp.maximum(loss, loss_floor) - beta)",
        "beta = beta + alpha * (1.0 / jnp.maximum(loss, loss_floor) - beta)",
        GYMNAX_MATH,
    ),
    Mutant(
        "gymnax: the learning step ignores --beta-scale",
        "mirl_gymnax.py",
        "beta, loss, hypers.alpha_beta, hypers.beta_scale, args.td_loss_floor, hypers.beta_min, args.beta_max",
        "beta, loss, hypers.alpha_beta, 1.0, args.td_loss_floor, hypers.beta_min, args.beta_max",
        GYMNAX_STEPS,
    ),
    Mutant(
        "envs: a redundant action plays action 0, not the copied one",
        "common/envs.py",
        "return jnp.where(action < self.game_actions, action, self.copied)",
        "return jnp.where(action < self.game_actions, action, 0)",
        ("tests/test_redundant_actions.py",),
    ),
    Mutant(
        "envs: the last original action counts as a copy",
        "common/envs.py",
        "return jnp.where(action < self.game_actions, action, self.copied)",
        "return jnp.where(action < self.game_actions - 1, action, self.copied)",
        ("tests/test_redundant_actions.py",),
    ),
    Mutant(
        "gymnax: ρ's mass on the copies counts one action too many",
        "mirl_gymnax.py",
        'scalars["mirl/prior_on_copies"] = states.prior[..., -setup.args.redundant_actions :].sum(axis=-1)',
        'scalars["mirl/prior_on_copies"] = states.prior[..., -setup.args.redundant_actions - 1 :].sum(axis=-1)',
        ("tests/test_redundant_actions.py",),
    ),
    Mutant(
        "loop: a step's several tallied entries summed first, not one after the other",
        "common/loop.py",
        "running = running + value[:, entry]",
        "running = running + (value.sum(axis=1) if entry == 0 else 0.0)",
        ("tests/test_loop.py",),
    ),
    Mutant(
        "gymnax: an episode's end tallied in every environment",
        "mirl_gymnax.py",
        '"charts/episodic_return": (jnp.sum(jnp.where(done, episode_return, 0.0)), jnp.sum(done)),',
        '"charts/episodic_return": (jnp.sum(jnp.where(done, episode_return, 0.0)), done.size),',
        GYMNAX_STEPS,
    ),
    Mutant(
        "gymnax: ε schedule over the whole run",
        "mirl_gymnax.py",
        "args.start_e, hypers.end_e, args.exploration_fraction * args.total_timesteps, iteration * args.num_envs",
        "args.start_e, hypers.end_e, args.total_timesteps, iteration * args.num_envs",
        GYMNAX_STEPS,
    ),
    Mutant(
        "gymnax: ε schedule not clipped",
        "mirl_gymnax.py",
        "return start + (end - start) * jnp.clip(t / duration, 0.0, 1.0)",
        "return start + (end - start) * t / duration",
        GYMNAX_MATH + GYMNAX_STEPS,
    ),
    Mutant(
        "gymnax: exploration draws uniformly, not from ρ",
        "mirl_gymnax.py",
        "jax.random.categorical(draw_key, log_prior, shape=greedy.shape)",
        "jax.random.randint(draw_key, greedy.shape, 0, log_prior.shape[-1])",
        GYMNAX_MATH,
    ),
    Mutant(
        "gymnax: next observation of a finished episode is the reset one",
        "mirl_gymnax.py",
        'state.obs, actions, rewards, info["final_observation"], terminated)',
        "state.obs, actions, rewards, obs, terminated)",
        GYMNAX_STEPS,
    ),
    Mutant(
        "gymnax: truncation stored as termination",
        "mirl_gymnax.py",
        'state.obs, actions, rewards, info["final_observation"], terminated)',
        'state.obs, actions, rewards, info["final_observation"], terminated | truncated)',
        GYMNAX_STEPS,
    ),
    Mutant(
        "gymnax: sampling from unfilled replay slots",
        "mirl_gymnax.py",
        "filled = jnp.minimum((iteration + 1) * args.num_envs, args.buffer_size)",
        "filled = args.buffer_size",
        GYMNAX_STEPS,
    ),
    Mutant(
        "gymnax: explores with probability 1 − ε",
        "mirl_gymnax.py",
        "explore = jax.random.uniform(explore_key, greedy.shape) < epsilon",
        "explore = jax.random.uniform(explore_key, greedy.shape) > epsilon",
        GYMNAX_STEPS,
    ),
    Mutant(
        "gymnax: choose explores uniformly, not from ρ",
        "mirl_gymnax.py",
        "actions = behaviour_action(action_key, jnp.argmax(logits, axis=-1), log_prior, epsilon)",
        "actions = behaviour_action(action_key, jnp.argmax(logits, axis=-1), 0 * log_prior, epsilon)",
        GYMNAX_STEPS,
    ),
    Mutant(
        "gymnax: replay samples one slot short",
        "common/replay.py",
        "indices = jax.random.randint(key, (batch_size,), 0, filled)",
        "indices = jax.random.randint(key, (batch_size,), 0, filled - 1)",
        GYMNAX_MATH,
    ),
    Mutant(
        "gymnax: absolute instead of squared TD error",
        "mirl_gymnax.py",
        "loss = optax.huber_loss(error).mean() if args.huber else jnp.mean(error**2)",
        "loss = optax.huber_loss(error).mean() if args.huber else jnp.mean(jnp.abs(error))",
        GYMNAX_STEPS,
    ),
    Mutant(
        "gymnax: a later non-finite loss overwrites the first one's step",
        "mirl_gymnax.py",
        "nan_step = jnp.where((state.nan_step < 0) & ~jnp.isfinite(loss), env_steps, state.nan_step)",
        "nan_step = jnp.where(~jnp.isfinite(loss), env_steps, state.nan_step)",
        GYMNAX_STEPS,
    ),
    Mutant(
        "gymnax: Adam at another learning rate than the run's",
        "mirl_gymnax.py",
        "updates, opt_state = setup.optimizer(hypers.learning_rate).update(grads, state.opt_state, state.params)",
        "updates, opt_state = setup.optimizer(2 * hypers.learning_rate).update(grads, state.opt_state, state.params)",
        GYMNAX_STEPS,
    ),
    Mutant(
        "common: a sweep's configurations given to the wrong runs",
        "common/sweep.py",
        "[run.config[name] for run in runs]",
        "[run.config[name] for run in runs[::-1]]",
        ("tests/test_mirl_gymnax.py", "-k", "a_sweep"),
    ),
    Mutant(
        "gymnax: learning from --learning-starts itself",
        "mirl_gymnax.py",
        "learning = env_steps > args.learning_starts",
        "learning = env_steps >= args.learning_starts",
        GYMNAX_STEPS,
    ),
    Mutant(
        "gymnax: the learning rate's decay one phase short when --learning-starts is off the period",
        "mirl_gymnax.py",
        "return max(0, args.total_timesteps // period - args.learning_starts // period) * updates_per_learn(args)",
        "return (args.total_timesteps - args.learning_starts) // period * updates_per_learn(args)",
        ("tests/test_bad_input.py", "-k", "target_rule"),
    ),
    Mutant(
        "gymnax: target copied one iteration too often",
        "mirl_gymnax.py",
        "sync = learning & (env_steps % args.target_network_frequency < args.num_envs)",
        "sync = learning & (env_steps % args.target_network_frequency <= args.num_envs)",
        GYMNAX_STEPS,
    ),
    Mutant(
        "common: an empty interval reports 0",
        "common/loop.py",
        "return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)",
        "return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)",
        ("tests/test_loop.py",),
    ),
    Mutant(
        "loop: one seed vmapped over a batch of one, not run without its seed axis",
        "common/loop.py",
        "if jax.tree.leaves(states)[0].shape[0] != 1:",
        "if jax.tree.leaves(states)[0].shape[0] != 0:",
        ("tests/test_loop.py",),
    ),
    Mutant(
        "common: a chunk's records out of order",
        "common/loop.py",
        "records.append(stacked)",
        "records.append(jax.tree.map(lambda x: x[::-1], stacked))",
        ("tests/test_loop.py",),
    ),
    Mutant(
        "common: chunks as long as the checkpoint interval",
        "common/loop.py",
        "length = min(total_iterations - iteration, intervals * log_every, *until_end)",
        "length = min(total_iterations - iteration, 10**9, *until_end)",
        ("tests/test_loop.py",),
    ),
    Mutant(
        "common: every row gets the chunk's last record",
        "common/logger.py",
        "scalars = {tag: values[index] for tag, values in records.scalars.items()}",
        "scalars = {tag: values[-1] for tag, values in records.scalars.items()}",
        ("tests/test_common.py",),
    ),
    Mutant(
        "common: SPS timed from the first chunk's start",
        "common/logger.py",
        "sps = (steps[1] - steps[0]) / seconds",
        "sps = (steps[1] - steps[0]) / (time.perf_counter() - self.started[1])",
        ("tests/test_common.py",),
    ),
    Mutant(
        "common: more CPU devices than cores",
        "common/devices.py",
        "for count in range(1, min(runs, cores) + 1) if runs % count == 0",
        "for count in range(1, runs + 1) if runs % count == 0",
        ("tests/test_common.py::test_cpu_devices_for_divides_the_runs_one_device_per_core_at_most",),
    ),
    Mutant(
        "common: the chosen CPU split not recorded with the run",
        "common/experiment.py",
        "args, cpu_devices=split_host_cpu(args.cpu_devices, args.num_runs(), args.num_processes)",
        "args, cpu_devices=split_host_cpu(args.cpu_devices, args.num_runs(), args.num_processes) * 0",
        (
            "tests/test_mirl_gymnax.py::test_by_default_the_cpu_splits_one_device_per_core_as_the_seeds_divide_and_the_run_records_it",
        ),
    ),
    # mirl_atari: its frame replay (common/replay.py) and learner; a change to a shared step breaks the copy test
    Mutant(
        "atari: every replay row valid",
        "mirl_atari.py",
        "valid=~state.after_done,",
        "valid=jnp.ones_like(state.after_done),",
        ATARI,
    ),
    Mutant(
        "atari: a row before a reset still valid",
        "common/replay.py",
        "valid = self.valid[rows, envs] & ~self.first[next_rows, envs]",
        "valid = self.valid[rows, envs]",
        ATARI,
    ),
    Mutant(
        "atari: frame stacks ignore resets",
        "common/replay.py",
        "frame_lags = jnp.minimum(lags[::-1][None, :], reset_lag[:, None])",
        "frame_lags = jnp.broadcast_to(lags[::-1][None, :], (rows.shape[0], self.stack_size))",
        ATARI,
    ),
    Mutant(
        "atari: the newest row (no next yet) sampled",
        "common/replay.py",
        "count = jnp.where(full, self.num_rows - self.stack_size, rows_written - 1)",
        "count = jnp.where(full, self.num_rows - self.stack_size, rows_written)",
        ATARI,
    ),
    Mutant(
        "atari: invalid transitions weighted",
        "mirl_atari.py",
        "weights = batch.valid.astype(jnp.float32) / jnp.maximum(batch.valid.sum(), 1)",
        "weights = jnp.full(batch.valid.shape, 1.0 / batch.valid.shape[0])",
        ATARI,
    ),
    Mutant(
        "atari: its TD target drops (1 − terminated)",
        "mirl_atari.py",
        "return rewards + setup.args.gamma * (1.0 - terminated) * next_value",
        "return rewards + setup.args.gamma * next_value",
        ATARI,
    ),
    Mutant(
        "atari: its β rule without −β",
        "mirl_atari.py",
        "beta = beta + alpha * (scale / jnp.maximum(loss, loss_floor) - beta)",
        "beta = beta + alpha * (scale / jnp.maximum(loss, loss_floor))",
        ATARI,
    ),
    # misa_d4rl: critic, regularisers, actor, temperatures, Polyak, HMC
    Mutant(
        "misa: TD target drops (1 − d)",
        "misa_d4rl.py",
        "return batch.rewards + (1.0 - batch.terminals) * args.gamma * next_q",
        "return batch.rewards + args.gamma * next_q",
        MISA,
    ),
    Mutant(
        "misa: TD target from the larger target critic",
        "misa_d4rl.py",
        "next_q = twin_q(target_critics, batch.next_observations, next_actions).min(axis=0)",
        "next_q = twin_q(target_critics, batch.next_observations, next_actions).max(axis=0)",
        MISA,
    ),
    Mutant(
        "misa: absolute TD error",
        "misa_d4rl.py",
        "td_losses = jnp.mean(jnp.square(q_data - target), axis=-1)",
        "td_losses = jnp.mean(jnp.abs(q_data - target), axis=-1)",
        MISA,
    ),
    Mutant(
        "misa: regulariser without −log B",
        "misa_d4rl.py",
        "regularizers = logsumexp_regularizer(scores, q_data, math.log(batch.rewards.shape[-1]))",
        "regularizers = logsumexp_regularizer(scores, q_data, 0.0)",
        MISA,
    ),
    Mutant(
        "misa: regulariser without −Q(s, a)",
        "misa_d4rl.py",
        "return jnp.mean(jax.nn.logsumexp(scores, axis=-2) - shift - q_data, axis=-1)",
        "return jnp.mean(jax.nn.logsumexp(scores, axis=-2) - shift, axis=-1)",
        MISA,
    ),
    Mutant(
        "misa: --add-positive ignored",
        "misa_d4rl.py",
        "    if args.add_positive:\n        return jnp.concatenate",
        "    if False:\n        return jnp.concatenate",
        MISA,
    ),
    Mutant(
        "misa: data action in the cql set",
        "misa_d4rl.py",
        "return cql_scores(q_uniform, q_next, next_log_pi, q_current, current_log_pi, batch.actions.shape[-1])",
        "return jnp.concatenate([cql_scores(q_uniform, q_next, next_log_pi, q_current, current_log_pi, "
        "batch.actions.shape[-1]), q_data[:, None]], axis=1)",
        MISA,
    ),
    Mutant(
        "misa: cql uniform density of one dimension",
        "misa_d4rl.py",
        "uniform_log_density = action_dim * math.log(0.5)",
        "uniform_log_density = math.log(0.5)",
        MISA,
    ),
    Mutant(
        "misa: cql π(·|s') samples not importance-weighted",
        "misa_d4rl.py",
        "q_uniform - uniform_log_density, q_next - next_log_pi, q_current - current_log_pi",
        "q_uniform - uniform_log_density, q_next, q_current - current_log_pi",
        MISA,
    ),
    Mutant(
        "misa: Lagrange penalty without the gap",
        "misa_d4rl.py",
        "penalties = lagrange_multiplier(log_alpha_prime) * args.regularizer_weight * (regularizers - args.lagrange_gap)",  # noqa: E501
        "penalties = lagrange_multiplier(log_alpha_prime) * args.regularizer_weight * regularizers",
        MISA,
    ),
    Mutant(
        "misa: α' loss not halved",
        "misa_d4rl.py",
        "return -0.5 * jnp.sum(lagrange_multiplier(log_alpha_prime) * args.regularizer_weight * gaps)",
        "return -jnp.sum(lagrange_multiplier(log_alpha_prime) * args.regularizer_weight * gaps)",
        MISA,
    ),
    Mutant(
        "misa: α outside the behaviour-cloning weight",
        "misa_d4rl.py",
        "return bc_weight * jnp.mean(alpha * log_pi - data_log_pi) - jnp.mean(q_new)",
        "return jnp.mean(alpha * log_pi) - bc_weight * jnp.mean(data_log_pi) - jnp.mean(q_new)",
        MISA,
    ),
    Mutant(
        "misa: cql actor without entropy",
        "misa_d4rl.py",
        "return jnp.mean(alpha * log_pi - q_new)",
        "return jnp.mean(-q_new)",
        MISA,
    ),
    Mutant(
        "misa: HMC term with the wrong sign",
        "misa_d4rl.py",
        "loss = loss + args.mcmc_weight * mcmc_term",
        "loss = loss - args.mcmc_weight * mcmc_term",
        MISA,
    ),
    Mutant(
        "misa: α loss towards +|A|",
        "misa_d4rl.py",
        "return -log_alpha * jnp.mean(log_pi + target_entropy)",
        "return -log_alpha * jnp.mean(log_pi - target_entropy)",
        MISA,
    ),
    Mutant(
        "misa: reparameterised sample scaled by log σ",
        "misa_d4rl.py",
        "pre_tanh = mean + jnp.exp(log_std) * noise",
        "pre_tanh = mean + log_std * noise",
        MISA,
    ),
    Mutant(
        "misa: tanh correction with the wrong sign",
        "misa_d4rl.py",
        "return jnp.sum(gaussian - log_one_minus_tanh_squared(pre_tanh), axis=-1)",
        "return jnp.sum(gaussian + log_one_minus_tanh_squared(pre_tanh), axis=-1)",
        MISA,
    ),
    Mutant(
        "misa: Polyak rate 0.1 % off",
        "misa_d4rl.py",
        "lambda new, old: args.tau * new + (1.0 - args.tau) * old",
        "lambda new, old: 1.001 * args.tau * new + (1.0 - 1.001 * args.tau) * old",
        ("tests/test_misa_official.py",),
    ),
    Mutant(
        "misa: Polyak keeps all of the old target",
        "misa_d4rl.py",
        "lambda new, old: args.tau * new + (1.0 - args.tau) * old",
        "lambda new, old: args.tau * new + old",
        MISA,
    ),
    Mutant(
        "misa: HMC acceptance without kinetic energy",
        "common/hmc.py",
        "log_ratio = new_log_p - new_kinetic - (log_p - kinetic)",
        "log_ratio = new_log_p - log_p",
        HMC,
    ),
    Mutant(
        "misa: HMC accepts the unlikely moves",
        "common/hmc.py",
        "accepted = jnp.log(jax.random.uniform(accept_key, log_p.shape)) < log_ratio",
        "accepted = jnp.log(jax.random.uniform(accept_key, log_p.shape)) > log_ratio",
        HMC,
    ),
    Mutant(
        "misa: HMC leapfrog ends with a full momentum step",
        "common/hmc.py",
        "new_momentum = new_momentum + (0.5 if last else 1.0) * step_size * new_grad",
        "new_momentum = new_momentum + step_size * new_grad",
        HMC,
    ),
    Mutant(
        "misa: HMC target from the larger critic",
        "misa_d4rl.py",
        "q = twin_q(params.critics, observations, actions).min(axis=0)",
        "q = twin_q(params.critics, observations, actions).max(axis=0)",
        HMC,
    ),
    Mutant(
        "misa: HMC target without log π",
        "misa_d4rl.py",
        "return log_prob_of_actions(actions, mean, log_std) + q",
        "return q",
        HMC,
    ),
    Mutant(
        "misa: HMC chains start at 0, not at the data actions",
        "misa_d4rl.py",
        "samples, acceptance, step_size = hmc_sample(log_density, batch.actions, key, hmc_config(args))",
        "samples, acceptance, step_size = hmc_sample(log_density, 0 * batch.actions, key, hmc_config(args))",
        HMC,
    ),
    Mutant(
        "misa: HMC adaptation on unclipped acceptance ratios",
        "common/hmc.py",
        "acceptance = jnp.mean(jnp.exp(jnp.minimum(log_ratio, 0.0)))",
        "acceptance = jnp.mean(jnp.exp(log_ratio))",
        HMC,
    ),
    Mutant(
        "misa: HMC adaptation grows at the target",
        "common/hmc.py",
        "adapted = jnp.where(acceptance > config.target_acceptance,",
        "adapted = jnp.where(acceptance >= config.target_acceptance,",
        HMC,
    ),
    Mutant(
        "misa: HMC step size shrinks by 0.99",
        "common/hmc.py",
        "step_size * 1.01, step_size / 1.01",
        "step_size * 1.01, step_size * 0.99",
        HMC,
    ),
]


def copy_repository(destination: Path) -> None:
    ignore = shutil.ignore_patterns(".venv", ".git", "runs", "data", "__pycache__", ".pytest_cache", ".ruff_cache")
    shutil.copytree(ROOT, destination, ignore=ignore, dirs_exist_ok=True)


def run_mutant(mutant: Mutant, workdir: Path, env: dict) -> str:
    """'killed', 'survived' or 'stale' (the original line is not in the file exactly once)."""
    path = workdir / mutant.file
    source = path.read_text()
    if source.count(mutant.original) != 1:
        return "stale"
    path.write_text(source.replace(mutant.original, mutant.mutated))
    try:
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutant.tests]
        done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    finally:
        path.write_text(source)
    return "killed" if done.returncode != 0 else "survived"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", default="", help="only the mutants whose name contains this")
    repeated = [name for name, count in Counter(m.name for m in MUTANTS).items() if count > 1]
    if repeated:  # results are kept by name: a repeated one would hide a mutant's outcome
        raise SystemExit(f"mutant names must differ: {repeated}")
    selected = [m for m in MUTANTS if parser.parse_args().k in m.name]
    results = {}
    with tempfile.TemporaryDirectory(prefix="mirl-jax-mutants-") as scratch:
        workdir = Path(scratch) / "repo"
        copy_repository(workdir)
        # one compilation cache for all mutants: unchanged programs compile once
        env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(Path(scratch) / "jax-cache"), PYTHONPATH=str(workdir))
        start = time.perf_counter()
        for index, mutant in enumerate(selected, 1):
            began = time.perf_counter()
            results[mutant.name] = outcome = run_mutant(mutant, workdir, env)
            print(
                f"[{index:2}/{len(selected)}] {outcome:8} {time.perf_counter() - began:5.0f} s  {mutant.name}",
                flush=True,
            )
    killed = sum(outcome == "killed" for outcome in results.values())
    print(f"{killed}/{len(results)} mutants killed in {(time.perf_counter() - start) / 60:.1f} min")
    for name, outcome in results.items():
        if outcome != "killed":
            print(f"  {outcome}: {name}")
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
