"""One gradient step of misa_d4rl.py against the official MISA code (sail-sg/MISA, algos/misa.py), in
the five configurations of `tests/reference/misa_official.npz` (made by `pack_misa_official.py` from
one official step each; see that file). The kit's networks get the official initial parameters, its
random draws are replaced by the official ones, and the Args come from the flags a user would type.
Losses, the TD target, the regularisers, every group's gradient, the parameters after Adam and the
Polyak targets must agree to float32 rounding."""

import functools
import json
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tyro

import misa_d4rl as misa
from common.hmc import HMCConfig, hmc_sample

REFERENCE = Path(__file__).with_name("reference") / "misa_official.npz"
OBS_DIM, ACTION_DIM, BATCH = 17, 6, 256
RTOL = 1e-5

# folder of the reference -> the flags that select the same official configuration
CONFIGS = {
    "misa": "--variant misa",
    "cql": "--variant cql",
    "cql_lagrange": "--variant cql --lagrange True",
    "misa_lagrange": "--variant misa --lagrange True --add-positive False",
    "misa_lagrange_addpos": "--variant misa --lagrange True --add-positive True",
}


class Reference:
    """Arrays of the packed reference by their original names (`<config>/grad/...`, `batch/...`)."""

    def __init__(self, path: Path):
        self.file = np.load(path)
        self.index = json.loads(str(self.file["index"]))

    def __getitem__(self, name: str) -> np.ndarray:
        return self.file["blob/" + self.index[name]]

    def updated(self, config: str, kind: str, path: str) -> np.ndarray:
        """A parameter after the step (`kind` new_params or new_target), undoing the XOR packing."""
        before = np.atleast_1d(self[("init/params/" if kind == "new_params" else "init/target/") + path])
        bits = self[f"{config}/{kind}_xor/{path}"] ^ before.view(np.uint32)
        return bits.view(np.float32).reshape(
            np.shape(self["init/" + ("params/" if kind == "new_params" else "target/") + path])
        )


@pytest.fixture(scope="module")
def reference():
    return Reference(REFERENCE)


# ----------------------------------------------------------------------------------------------
# Official parameter trees <-> the kit's modules
# ----------------------------------------------------------------------------------------------


def dense_paths(official_prefix: str):
    """(kit accessor, official path) of the weights and biases of an MLP's three Dense layers."""
    layers = (lambda m: m.net.hidden[0], lambda m: m.net.hidden[1], lambda m: m.net.output)
    return [
        (lambda m, layer=layer, name=name: getattr(layer(m), name), f"{official_prefix}/Dense_{index}/{official}")
        for index, layer in enumerate(layers)
        for name, official in (("weight", "kernel"), ("bias", "bias"))
    ]


def policy_paths():
    """(kit accessor, official path under `params/`) for every policy parameter."""
    return [
        *dense_paths("policy/params/base_network"),
        (lambda p: p.log_std_multiplier, "policy/params/log_std_multiplier_module/value"),
        (lambda p: p.log_std_offset, "policy/params/log_std_offset_module/value"),
    ]


def critic_paths():
    """(kit accessor into stacked critics, official path under `qf{k}/`) for one critic."""
    return dense_paths("params/FullyConnectedNetwork_0")


def load_policy(get) -> misa.Policy:
    policy = misa.Policy(OBS_DIM, ACTION_DIM, 256, False, jax.random.key(0))
    for accessor, path in policy_paths():
        policy = eqx.tree_at(accessor, policy, jnp.asarray(get(path), jnp.float32))
    return policy


def load_critics(get) -> misa.Critic:
    critics = eqx.filter_vmap(lambda k: misa.Critic(OBS_DIM, ACTION_DIM, 256, False, k))(
        jax.random.split(jax.random.key(0))
    )
    for accessor, path in critic_paths():
        stacked = np.stack([get(f"qf1/{path}"), get(f"qf2/{path}")])
        critics = eqx.tree_at(accessor, critics, jnp.asarray(stacked, jnp.float32))
    return critics


def initial_state(reference: Reference) -> tuple[misa.Params, misa.Critic]:
    def get(path):
        return reference["init/params/" + path]

    params = misa.Params(
        policy=load_policy(get),
        critics=load_critics(get),
        log_alpha=jnp.asarray(get("log_alpha/params/value"), jnp.float32),
        log_alpha_prime=jnp.asarray(get("log_alpha_prime/params/value"), jnp.float32),
    )
    return params, load_critics(lambda path: reference["init/target/" + path])


def reference_batch(reference: Reference) -> misa.Batch:
    return misa.Batch(
        observations=jnp.asarray(reference["batch/observations"]),
        actions=jnp.asarray(reference["batch/actions"]),
        rewards=jnp.asarray(reference["batch/rewards"]),
        next_observations=jnp.asarray(reference["batch/next_observations"]),
        terminals=jnp.asarray(reference["batch/dones"]),
    )


def noise_of(actions: np.ndarray, policy: misa.Policy, observations: jax.Array) -> jax.Array:
    """The standard normal draw that makes the kit's policy sample `actions` [B, (N,) A] at `observations`:
    (atanh(a) − mean)/std, in float64 so that only the official sample's own float32 rounding remains."""
    mean, log_std = (np.asarray(x, np.float64) for x in policy(observations))
    if actions.ndim == 3:  # official [B, N, A] -> the kit's sample-first [N, B, A]
        actions = np.transpose(actions, (1, 0, 2))
    return jnp.asarray((np.arctanh(actions.astype(np.float64)) - mean) / np.exp(log_std), jnp.float32)


def official_draws(reference: Reference, config: str, policy: misa.Policy, batch: misa.Batch) -> misa.Draws:
    aux = f"{config}/aux/"
    cql = config.startswith("cql")
    return misa.Draws(
        actor=noise_of(reference[aux + "new_actions"], policy, batch.observations),
        next=noise_of(reference[aux + "new_next_actions"], policy, batch.next_observations),
        current=noise_of(reference[aux + "current_actions"], policy, batch.observations),
        next_state=noise_of(reference[aux + "next_actions"], policy, batch.next_observations) if cql else None,
        uniform=jnp.asarray(np.transpose(reference[aux + "random_actions"], (1, 0, 2))) if cql else None,
    )


def official_mcmc(reference: Reference, config: str) -> jax.Array | None:
    if config.startswith("cql"):
        return None
    return jnp.asarray(np.transpose(reference[f"{config}/aux/mcmc_action_samples"], (1, 0, 2)))


def args_for(flags: str) -> misa.Args:
    return tyro.cli(misa.Args, args=flags.split())  # hopper-medium-v2's domain (locomotion) fills the rest


# ----------------------------------------------------------------------------------------------
# Comparisons
# ----------------------------------------------------------------------------------------------


def assert_close(got, expected, exact, what: str, bounded_rounding: bool = True):
    """`got` (the kit in float32) equals the official float32 value up to float32 rounding: within RTOL of
    the array's scale, or within three times the kit's own rounding error where that is larger (an error
    that must itself stay below 1e-4 of the scale, unless `bounded_rounding` is off). The
    rounding error is measured against `exact`, the kit's same computation in float64, so it does not
    grow with a wrong formula. Some gradients need it: the critics' output-layer gradient sums 256×50
    nearly cancelling terms, and both implementations sit about 3e-5 of its scale from the exact value."""
    got, expected, exact = (np.asarray(x, np.float64) for x in (got, expected, exact))
    expected = expected.reshape(got.shape)
    scale = np.abs(expected).max()
    rounding = np.abs(got - exact).max() / max(scale, 1e-30)
    assert rounding < 1e-4 or not bounded_rounding, (
        f"{what}: the kit's own float32 error is {rounding:.1e} of the scale"
    )
    tolerance = max(RTOL, 3 * rounding) * scale
    np.testing.assert_allclose(
        got, expected, rtol=RTOL, atol=tolerance, err_msg=f"{what} (kit rounding {rounding:.1e})"
    )


def adam_first_step(grad, lr):
    """optax.adam's first update for gradient g: −lr·g/(|g| + ε) (bias correction undoes (1 − β))."""
    grad = np.asarray(grad, np.float64)
    return -lr * grad / (np.abs(grad) + 1e-8)


def assert_polyak_close(target, official_target, official_new, before, grad, official_grad, args, index: int):
    """The Polyak targets τ·new + (1 − τ)·old, from the same old targets. Element by element: the new critics'
    allowance in assert_updated_close (RTOL, and what the gradients' rounding implies for Adam's step where |g| is
    near its ε), scaled by τ, plus 2 ulps of the target for the average's own float32 rounding. As a whole: the
    step τ·(new − old) is ~1e-6, inside those ulps, so τ is checked on the leaf's steps together, whose ratio to
    the official steps must be 1 within 1e-4 (they are within 1e-5; a τ 0.01 % off fails), over the elements Adam
    does not amplify."""
    target, official_target, before = (
        np.asarray(x, np.float64).reshape(np.shape(target)) for x in (target, official_target, before)
    )
    official_new = np.asarray(official_new, np.float64).reshape(target.shape)
    implied = np.abs(adam_first_step(grad, args.q_lr) - adam_first_step(official_grad, args.q_lr)).reshape(target.shape)
    ulps = 2 * np.spacing(np.abs(official_target).astype(np.float32)).astype(np.float64)
    tolerance = ulps + args.tau * (RTOL * np.abs(official_new) + 1e-9 + 2 * implied)
    difference = np.abs(target - official_target)
    assert (difference <= tolerance).all(), (
        f"Polyak target, leaf {index}: {np.count_nonzero(difference > tolerance)} elements beyond rounding, the "
        f"largest {difference.max():.2e}"
    )
    steady = implied < 1e-3 * args.q_lr  # Adam's step set by the gradient's sign, the same on both sides
    moved, official_moved = target[steady] - before[steady], official_target[steady] - before[steady]
    ratio = np.dot(moved, official_moved) / np.dot(official_moved, official_moved)
    assert abs(ratio - 1) < 1e-4, f"Polyak step, leaf {index}: the kit's steps are {ratio:.5f}× the official ones"


def assert_updated_close(got, expected, kit_grad, official_grad, lr, what: str):
    """The parameters after one Adam step, within RTOL. The one exemption: where |g| is tiny (near Adam's
    ε), the gradients' own float32 rounding, already accepted by assert_close, moves lr·g/(|g| + ε) by up
    to 2·lr; such elements are compared through their gradients, and here only up to what that rounding
    implies for the step."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64).reshape(np.shape(got))
    implied = np.abs(adam_first_step(kit_grad, lr) - adam_first_step(official_grad, lr)).reshape(got.shape)
    difference = np.abs(got - expected)
    within = difference <= RTOL * np.abs(expected) + 1e-9
    explained = difference <= RTOL * np.abs(expected) + 1e-9 + 2 * implied
    assert explained.all(), f"{what}: {np.count_nonzero(~explained)} elements differ beyond rounding"
    official_grad = np.abs(np.asarray(official_grad, np.float64)).reshape(got.shape)
    exempt = official_grad[~within]
    assert (exempt <= 1e-3 * official_grad.max()).all(), f"{what}: exempted gradients not tiny: {exempt}"


# ----------------------------------------------------------------------------------------------
# The test
# ----------------------------------------------------------------------------------------------


def kit_step(args: misa.Args, params, target, batch, draws, mcmc) -> dict:
    """The kit's losses, gradients, regularisers, TD target and updated parameters for one step."""
    grads, losses, _ = jax.jit(misa.gradients, static_argnums=0)(args, params, target, batch, draws, mcmc)
    _, (_, regularizers, _) = misa.critic_loss(
        params.critics, args, params.policy, target, params.log_alpha_prime, batch, draws
    )
    new_params, _, new_target = misa.apply_gradients(args, params, misa.init_opt_state(args, params), target, grads)
    return dict(
        grads=grads,
        losses=losses,
        regularizers=regularizers,
        td_target=misa.td_target(args, params.policy, target, batch, draws.next),
        new_params=new_params,
        new_target=new_target,
    )


@pytest.fixture(scope="module")
def kit_steps(reference):
    """config -> the Args, and the kit's step in float32 and (as a measure of float32 rounding) in float64
    from the same inputs; each configuration computed when a test first asks for it."""
    params, target = initial_state(reference)
    batch = reference_batch(reference)

    @functools.cache
    def step_for(config: str) -> dict:
        args = args_for(CONFIGS[config])
        draws, mcmc = official_draws(reference, config, params.policy, batch), official_mcmc(reference, config)
        result = {"args": args, "f32": kit_step(args, params, target, batch, draws, mcmc)}
        jax.config.update("jax_enable_x64", True)
        try:
            to64 = lambda tree: jax.tree.map(lambda x: jnp.asarray(np.asarray(x), jnp.float64), tree)  # noqa: E731
            step = kit_step(args, to64(params), to64(target), to64(batch), to64(draws), to64(mcmc))
            result["f64"] = jax.tree.map(np.asarray, step)
        finally:
            jax.config.update("jax_enable_x64", False)
        return result

    return step_for


@pytest.mark.parametrize("config", CONFIGS)
def test_losses_and_targets_match_the_official_step(config, reference, kit_steps):
    step = kit_steps(config)
    kit, exact, loss = step["f32"], step["f64"], f"{config}/loss/"

    def check(name, got, expected):
        assert_close(got(kit), expected, got(exact), name)

    check("policy loss", lambda k: k["losses"]["policy"], reference[loss + "policy"])
    check("Q1 loss", lambda k: k["losses"]["critics"][0], reference[loss + "qf1"])
    check("Q2 loss", lambda k: k["losses"]["critics"][1], reference[loss + "qf2"])
    check("α loss", lambda k: k["losses"]["log_alpha"], reference[loss + "log_alpha"])
    if "lagrange" in config:
        check("α' loss", lambda k: k["losses"]["log_alpha_prime"], reference[loss + "log_alpha_prime"])
    else:
        assert "log_alpha_prime" not in kit["losses"]
    check("TD target", lambda k: k["td_target"], reference[f"{config}/aux/td_target"])
    official_diffs = np.stack([reference[f"{config}/aux/qf{k}_diff"] for k in (1, 2)])
    check("regularisers (the official cql/qf_diff)", lambda k: k["regularizers"], official_diffs)


@pytest.mark.parametrize("config", CONFIGS)
def test_gradients_and_updates_match_the_official_step(config, reference, kit_steps):
    step = kit_steps(config)
    args, kit, exact = step["args"], step["f32"], step["f64"]
    for group, load, lr in [("policy", load_policy, args.policy_lr), ("critics", load_critics, args.q_lr)]:
        leaves = zip(
            jax.tree.leaves(getattr(kit["grads"], group)),
            jax.tree.leaves(getattr(exact["grads"], group)),
            jax.tree.leaves(load(lambda path: reference[f"{config}/grad/{path}"])),
            jax.tree.leaves(getattr(kit["new_params"], group)),
            jax.tree.leaves(load(lambda path: reference.updated(config, "new_params", path))),
            strict=True,
        )
        for index, (grad, exact_grad, official_grad, new, official_new) in enumerate(leaves):
            assert_close(grad, official_grad, exact_grad, f"{group} gradient, leaf {index}")
            assert_updated_close(new, official_new, grad, official_grad, lr, f"{group} after Adam, leaf {index}")
    leaves = zip(
        jax.tree.leaves(kit["new_target"]),
        jax.tree.leaves(load_critics(lambda path: reference.updated(config, "new_target", path))),
        jax.tree.leaves(load_critics(lambda path: reference.updated(config, "new_params", path))),
        jax.tree.leaves(load_critics(lambda path: reference["init/target/" + path])),
        jax.tree.leaves(kit["grads"].critics),
        jax.tree.leaves(load_critics(lambda path: reference[f"{config}/grad/{path}"])),
        strict=True,
    )
    for index, (target, official_target, official_new, before, grad, official_grad) in enumerate(leaves):
        assert_polyak_close(target, official_target, official_new, before, grad, official_grad, args, index)
    scalars = [("log_alpha", args.policy_lr)] + ([("log_alpha_prime", args.q_lr)] if "lagrange" in config else [])
    for name, lr in scalars:
        official_grad = reference[f"{config}/grad/{name}/params/value"]
        grad = getattr(kit["grads"], name)
        assert_close(grad, official_grad, getattr(exact["grads"], name), f"{name} gradient")
        official_new = reference.updated(config, "new_params", f"{name}/params/value")
        assert_updated_close(
            getattr(kit["new_params"], name), official_new, grad, official_grad, lr, f"{name} after Adam"
        )


# ----------------------------------------------------------------------------------------------
# The hand-written HMC against an independent sampler
# ----------------------------------------------------------------------------------------------


def assert_paired_means_agree(ours: np.ndarray, theirs: np.ndarray, what: str):
    """Per-chain statistics [chains, ...] of two samplers run from the same starts on the same targets:
    the mean of their differences is within 3 standard errors of 0 (chains are independent)."""
    difference = np.asarray(ours, np.float64) - np.asarray(theirs, np.float64)
    standard_error = difference.std(axis=0, ddof=1) / np.sqrt(len(difference))
    z = np.abs(difference.mean(axis=0)) / np.maximum(standard_error, 1e-12)  # no spread and no difference: 0
    assert (z < 3).all(), f"{what}: |mean difference| / standard error = {np.round(z, 2)}"


@pytest.mark.parametrize("step_size", [0.3, 0.1])
def test_hmc_agrees_with_blackjax_on_the_improved_policy(step_size, reference):
    """The kit's HMC and blackjax's, adaptation off, on the kit's own target (the one-step improved policy
    at the official initial parameters, one chain per reference state started at its data action, four
    copies of the batch): per-chain acceptance rates and sample means agree within 3 standard errors."""
    blackjax = pytest.importorskip("blackjax")
    params, _ = initial_state(reference)
    batch = reference_batch(reference)
    observations, starts = jnp.tile(batch.observations, (4, 1)), jnp.tile(batch.actions, (4, 1))
    config = HMCConfig(
        burn_in=5, samples=50, leapfrog_steps=2, step_size=step_size, adaptation_steps=0, target_acceptance=0.75
    )
    log_density = misa.improved_policy_log_density(params, observations)
    samples, acceptance, final_step_size = jax.jit(hmc_sample, static_argnums=(0, 3))(
        log_density, starts, jax.random.key(0), config
    )
    assert float(final_step_size) == pytest.approx(step_size)
    assert 0.2 < float(acceptance.mean()) < 0.999  # moves are proposed, accepted and rejected

    def blackjax_chain(observation, start, key):
        def one_chain_log_density(action):
            return misa.improved_policy_log_density(params, observation[None])(action[None])[0]

        kernel = blackjax.hmc(one_chain_log_density, step_size, jnp.ones(ACTION_DIM), num_integration_steps=2)

        def transition(state, key):
            state, info = kernel.step(key, state)
            return state, (state.position, info.is_accepted)

        keys = jax.random.split(key, config.burn_in + config.samples)
        _, (positions, accepted) = jax.lax.scan(transition, kernel.init(start), keys)
        return positions[config.burn_in :].mean(axis=0), accepted[config.burn_in :].mean()

    keys = jax.random.split(jax.random.key(1), len(starts))
    blackjax_means, blackjax_acceptance = jax.jit(jax.vmap(blackjax_chain))(observations, starts, keys)
    assert_paired_means_agree(acceptance, blackjax_acceptance, "acceptance rate")
    assert_paired_means_agree(samples.mean(axis=0), blackjax_means, "sample mean")


def test_hmc_target_is_the_improved_policy(reference):
    """log p(a|s) = log π(a|s) + min(Q1, Q2)(s, a) with the current critics, at the official parameters."""
    params, _ = initial_state(reference)
    batch = reference_batch(reference)
    actions = jnp.asarray(np.random.default_rng(0).uniform(-0.99, 0.99, size=(BATCH, ACTION_DIM)), jnp.float32)
    log_pi = misa.log_prob_of_actions(actions, *params.policy(batch.observations))
    q1, q2 = (jax.tree.map(lambda x, k=k: x[k], params.critics)(batch.observations, actions) for k in (0, 1))
    expected = log_pi + jnp.minimum(q1, q2)
    got = misa.improved_policy_log_density(params, batch.observations)(actions)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_hmc_chains_match_the_official_samples(reference):
    """The kit's HMC at the official settings (step size 1.0 adapted, 5 + 50 transitions, chains started at
    the data actions) on the official parameters and batch, against the official code's samples:
    per-chain means and the fraction of samples that left the start agree within 3 standard errors."""
    params, _ = initial_state(reference)
    batch = reference_batch(reference)
    args = args_for(CONFIGS["misa"])
    samples, metrics = jax.jit(misa.mcmc_actions, static_argnums=0)(args, params, batch, jax.random.key(0))
    official = np.transpose(reference["misa/aux/mcmc_action_samples"], (1, 0, 2))  # [samples, chains, A]
    start = np.asarray(batch.actions)
    moved, official_moved = (np.any(np.asarray(x) != start, axis=-1).mean(axis=0) for x in (samples, official))
    assert_paired_means_agree(moved, official_moved, "fraction of samples away from the start")
    assert_paired_means_agree(np.asarray(samples).mean(axis=0), official.mean(axis=0), "sample mean")
    assert float(metrics["misa/hmc_step_size"]) == pytest.approx(1.01**-4, rel=1e-6)  # nothing accepted early
    distance = np.linalg.norm(np.asarray(samples) - start, axis=-1)  # the logged distance and moved fraction
    assert float(metrics["misa/hmc_moved_fraction"]) == pytest.approx(moved.mean(), rel=1e-6)
    assert float(metrics["misa/hmc_distance_to_data"]) == pytest.approx(distance.mean(), rel=1e-5)
