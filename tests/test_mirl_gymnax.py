"""mirl_gymnax.py end to end, with tiny budgets: every algo runs, logs and evaluates; seeds differ;
runs reproduce, resume and shard exactly; bad input fails with a clear message; it learns."""

import dataclasses
import itertools
import os
import subprocess
import sys
from pathlib import Path

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_rows_close, leaves, run_sharded_and_single, scalars
from gymnax.environments import spaces

import mirl_gymnax
from common import plot
from common.checkpoint import read_header
from common.cli import parse
from common.devices import cpu_devices_for, usable_cores
from common.envs import CONTINUOUS_ENV_IDS
from common.errors import UserError
from common.replay import Replay
from common.sweep import grid_runs
from mirl_gymnax import SCRIPT, SWEPT_FLAGS, Args, main, make_env, make_train, replay_obs_dtype, stacked_hypers

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(
    total_timesteps=2_000,
    num_envs=4,
    buffer_size=1_000,
    learning_starts=400,
    batch_size=32,
    train_frequency=4,
    target_network_frequency=200,
    log_interval=200,
    checkpoint_interval=1_000,
    eval_episodes=2,
    alpha_rho=(1e-3,),
    alpha_beta=(1e-2,),
)


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_a_new_logged_mean_is_one_entry_in_a_steps_tally(monkeypatch):
    """What the README tells a fork: a tally entry `tag: (total, count)` is logged as its mean over each interval."""
    observe = mirl_gymnax.observe

    def observe_and_tally(setup, state, actions, iteration):
        state, tally = observe(setup, state, actions, iteration)
        return state, tally | {"charts/action_mean": (jnp.sum(actions), actions.shape[0])}

    monkeypatch.setattr(mirl_gymnax, "observe", observe_and_tally)
    logged = scalars(main(Args(**TINY))["run_dir"], 1)["charts/action_mean"]
    assert len(logged) == TINY["total_timesteps"] // TINY["log_interval"]
    assert all(0 < value < 1 for _, value in logged)  # CartPole's actions 0 and 1, both taken in every interval


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Breakout-MinAtar"])
@pytest.mark.parametrize("algo", ["mirl", "sql", "dqn"])
def test_smoke_runs_log_and_evaluate(env_id, algo):
    result = main(Args(env_id=env_id, algo=algo, num_seeds=2, **TINY))
    assert result["eval_returns"].shape == (2, 2) and np.isfinite(result["eval_returns"]).all()
    logged = scalars(result["run_dir"], 2)
    expected = {
        "charts/episodic_return",
        "charts/epsilon",
        "charts/SPS",
        "losses/td_loss",
        "losses/q_values",
        "eval/episodic_return",
    }
    if algo != "dqn":
        expected |= {"mirl/beta", "mirl/prior_entropy", "mirl/kl_pi_prior"}
    assert expected <= set(logged)
    assert len(logged["charts/epsilon"]) == TINY["total_timesteps"] // TINY["log_interval"]
    # returns are reported only for finished episodes: never a placeholder 0 before the first one ends
    assert all(value > 0 for _, value in logged["charts/episodic_return"]) or env_id != "CartPole-v1"
    prior = np.asarray(result["states"].prior)
    np.testing.assert_allclose(prior.sum(-1), 1.0, atol=1e-5)
    if algo == "mirl":
        assert not np.allclose(prior, prior[0, 0])  # ρ moved away from uniform
    else:
        np.testing.assert_array_equal(prior, np.full_like(prior, 1.0 / prior.shape[-1]))
    if algo == "dqn":
        np.testing.assert_array_equal(result["states"].beta, TINY.get("beta_init", 1.0))


def test_vmapped_seeds_differ():
    result = main(Args(num_seeds=3, **TINY))
    first_layer = np.asarray(jax.tree.leaves(result["states"].params)[0])
    assert not np.array_equal(first_layer[0], first_layer[1]) and not np.array_equal(first_layer[1], first_layer[2])
    actions = np.asarray(result["states"].replay.actions)
    assert not np.array_equal(actions[0], actions[1])  # different exploration, not only different init


def test_the_library_train_trains_and_records_what_the_script_logs():
    """make_train(...).train, the whole run as one call, trains the seeds the script trains in chunks, and its
    records are the curves the script writes: the same trajectories, and the same learner up to float32 rounding
    (a program of one chunk compiles a little differently from the script's chunks)."""
    args = Args(num_seeds=2, **TINY)
    script = main(args)
    env, env_params = make_env(args.env_id)
    keys = jax.vmap(jax.random.key)(jnp.asarray([args.seed, args.seed + 1]))
    hypers = stacked_hypers(grid_runs(args, SWEPT_FLAGS))
    states, records = jax.jit(make_train(args, env, env_params).train)(keys, hypers)
    np.testing.assert_array_equal(states.replay.actions, script["states"].replay.actions)
    np.testing.assert_allclose(states.beta, script["states"].beta, rtol=1e-5)
    assert records.step.tolist() == list(range(200, 2_001, 200))
    assert records.bar_charts["mirl/prior"].shape == (10, 2, 2)  # (intervals, seeds, actions)
    for seed, column in ((1, 0), (2, 1)):
        losses = records.scalars["losses/td_loss"][:, column]
        recorded = [(int(step), float(loss)) for step, loss in zip(records.step, losses, strict=True)]
        expected = [(step, pytest.approx(loss, rel=1e-5)) for step, loss in recorded if np.isfinite(loss)]
        assert scalars(script["run_dir"], seed)["losses/td_loss"] == expected


def test_same_seed_reproduces_bit_for_bit():
    first = main(Args(num_seeds=2, **TINY))
    second = main(Args(num_seeds=2, **TINY))
    for a, b in zip(leaves(first["states"]), leaves(second["states"]), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first["eval_returns"], second["eval_returns"])


def test_resume_reaches_the_uninterrupted_result():
    args = Args(num_seeds=2, save_model=True, keep_checkpoints=0, **TINY)
    uninterrupted = main(args)
    checkpoints = sorted((uninterrupted["run_dir"] / "checkpoints").glob("step_*.eqx"))
    assert [c.name for c in checkpoints] == ["step_000001000.eqx", "step_000002000.eqx"]
    header = read_header(checkpoints[0])
    assert header["iteration"] == 1_000 // TINY["num_envs"] and header["args"]["num_seeds"] == 2

    # on the command line, and as a library caller resumes: its flags again, --cpu-devices still 0 (choose),
    # which keeps the count the run recorded
    for resume_args in (
        parse(Args, SCRIPT, ["--resume", str(checkpoints[0])]),
        dataclasses.replace(args, resume=str(checkpoints[0])),
    ):
        resumed = main(resume_args)
        for a, b in zip(leaves(uninterrupted["states"]), leaves(resumed["states"]), strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(uninterrupted["eval_returns"], resumed["eval_returns"])


SHARDING_PROBE = """
import sys, numpy as np, jax
from mirl_gymnax import Args, main
states = main(Args(num_seeds=8, cpu_devices={{cpu_devices}}, **{tiny!r}))["states"]
print("devices", len(jax.devices()), "shards", len(states.beta.sharding.device_set))
np.savez(sys.argv[1], actions=states.replay.actions, obs=states.replay.obs, beta=states.beta, prior=states.prior,
         params=np.concatenate([np.asarray(x).reshape(8, -1) for x in jax.tree.leaves(states.params)], axis=1))
"""


def test_sharded_seeds_equal_unsharded(tmp_path):
    """8 seeds on 4 devices against 8 seeds on 1: the same trajectories, and the same numbers up to
    float32 rounding (XLA compiles a batch of 2 seeds a little differently from a batch of 8)."""
    sharded, single = run_sharded_and_single(SHARDING_PROBE.format(tiny=TINY), 4, tmp_path)
    np.testing.assert_array_equal(sharded["actions"], single["actions"])
    np.testing.assert_array_equal(sharded["obs"], single["obs"])
    assert_rows_close(sharded, single, ("beta", "prior", "params"))


CHOSEN_SPLIT_PROBE = """
import jax
from common.checkpoint import read_header
from mirl_gymnax import Args, main
result = main(Args(num_seeds=2, save_model=True, **{tiny!r}))
recorded = read_header(result["last_checkpoint"])["args"]["cpu_devices"]
print("devices", len(jax.devices()), "shards", len(result["states"].beta.sharding.device_set), "recorded", recorded)
"""


def test_by_default_the_cpu_splits_one_device_per_core_as_the_seeds_divide_and_the_run_records_it(tmp_path):
    """--cpu-devices 0, the default, in a fresh process: two seeds take two devices where the process may use two
    cores, and the checkpoint records the count; a device count already set in XLA_FLAGS is left as it is, and
    the run records 1 (no split of its own)."""
    chosen = cpu_devices_for(2, usable_cores())
    forced = "--xla_force_host_platform_device_count=4"
    for xla_flags, devices, recorded in ((None, chosen, chosen), (forced, 4, 1)):
        kept = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
        env = kept | {"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
        env |= {"XLA_FLAGS": xla_flags} if xla_flags else {}
        command = [sys.executable, "-c", CHOSEN_SPLIT_PROBE.format(tiny=TINY)]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"devices {devices} shards {min(devices, 2)} recorded {recorded}" in done.stdout
        assert ("2 seeds on 2 CPU devices, 1 each" in done.stdout) == (devices > 1)  # the run says where they are


SWEEP = dict(learning_rate=(2.5e-4, 1e-3), alpha_rho=(1e-3, 1e-2))  # in the order of SWEPT_FLAGS


def learner_rows(states) -> dict[str, np.ndarray]:
    """β, ρ and the parameters, one row per run."""
    params = np.concatenate([np.asarray(x).reshape(len(states.beta), -1) for x in jax.tree.leaves(states.params)], 1)
    return {"beta": np.asarray(states.beta)[:, None], "prior": np.asarray(states.prior), "params": params}


def test_a_sweep_equals_its_separate_runs(capsys):
    """A 2×2 grid × 2 seeds in one program against each configuration run on its own: the same trajectories and
    logged returns, and the same learner up to float32 rounding (batches of 8 and of 2 compile differently).
    Each (configuration, seed) logs to its own sub-run, which common.plot groups by configuration."""
    swept = main(Args(num_seeds=2, **{**TINY, **SWEEP}))
    printed = capsys.readouterr().out
    configurations = [f"learning_rate={rate!r},alpha_rho={a!r}" for rate, a in itertools.product(*SWEEP.values())]
    assert [run.name for run in swept["runs"]] == [f"{c}/seed_{seed}" for c in configurations for seed in (1, 2)]
    np.testing.assert_array_equal(swept["states"].hypers.learning_rate, np.float32([2.5e-4] * 4 + [1e-3] * 4))
    np.testing.assert_array_equal(swept["states"].hypers.alpha_rho, np.float32([1e-3, 1e-3, 1e-2, 1e-2] * 2))
    for index, (learning_rate, alpha_rho) in enumerate(itertools.product(*SWEEP.values())):
        alone = main(Args(num_seeds=2, **{**TINY, "alpha_rho": (alpha_rho,), "learning_rate": (learning_rate,)}))
        rows = slice(2 * index, 2 * index + 2)
        grid = jax.tree.map(lambda x, rows=rows: x[rows], swept["states"])
        np.testing.assert_array_equal(grid.replay.actions, alone["states"].replay.actions)
        np.testing.assert_array_equal(grid.replay.obs, alone["states"].replay.obs)
        assert_rows_close(learner_rows(grid), learner_rows(alone["states"]), ("beta", "prior", "params"))
        np.testing.assert_array_equal(swept["eval_returns"][rows], alone["eval_returns"])  # the same episodes
        for seed in (1, 2):
            logged = scalars(swept["run_dir"] / configurations[index], seed)["charts/episodic_return"]
            assert logged == scalars(alone["run_dir"], seed)["charts/episodic_return"]
        assert f"/{configurations[index]}: greedy eval/episodic_return" in printed
    table = plot.main(plot.Args(runs=[swept["run_dir"]], out=Path("curves.png")))
    assert {label: len(values) for label, values in table.items()} == {f"mirl {c}": 2 for c in configurations}


def test_sweeps_that_cannot_make_distinct_runs_are_refused():
    with pytest.raises(UserError, match="--alpha-rho has no effect with --algo sql"):
        main(Args(**{**TINY, "algo": "sql", "alpha_rho": (1e-3, 1e-2)}))
    with pytest.raises(UserError, match="--alpha-beta has no effect with --algo dqn"):
        main(Args(**{**TINY, "algo": "dqn", "alpha_beta": (0.0, 1e-2)}))
    with pytest.raises(UserError, match="--learning-rate lists a value twice"):
        main(Args(**{**TINY, "learning_rate": (1e-3, 1e-3)}))
    with pytest.raises(UserError, match="--beta-min <= --beta-init .*for every value swept"):
        main(Args(**{**TINY, "beta_min": (0.1, 2.0), "beta_init": (1.0,)}))
    with pytest.raises(UserError, match=r"--end-e \(1.5\) must lie in \[0, 1\]"):
        main(Args(**{**TINY, "end_e": (0.05, 1.5)}))
    assert not Path("runs").exists()


def test_full_action_set_gives_minatar_all_six_actions():
    result = main(Args(env_id="Breakout-MinAtar", full_action_set=True, **TINY))
    assert result["states"].prior.shape == (1, 6)
    assert set(np.unique(result["states"].replay.actions).tolist()) == set(range(6))  # explored: all were played
    with pytest.raises(UserError, match="--full-action-set applies to the MinAtar games only: Asterix-MinAtar"):
        main(Args(env_id="CartPole-v1", full_action_set=True, **TINY))


def test_unknown_env_id_lists_the_valid_ones():
    with pytest.raises(UserError, match="unknown env id 'CartPole-v0'.*CartPole-v1.*Breakout-MinAtar"):
        main(Args(env_id="CartPole-v0", **TINY))


def test_continuous_env_is_refused():
    with pytest.raises(UserError, match="Pendulum-v1 has a continuous action space.*Acrobot-v1"):
        main(Args(env_id="Pendulum-v1", **TINY))


def test_inconsistent_flags_are_refused():
    with pytest.raises(UserError, match="--buffer-size .* multiple of --num-envs"):
        main(Args(**{**TINY, "buffer_size": 1_001}))


def test_oversized_replay_is_refused_before_allocation():
    with pytest.raises(MemoryError, match=r"replay buffers \(1 seed × 4000000000 transitions.*needs 1\d\d\.\d\d GiB"):
        main(Args(**{**TINY, "buffer_size": 4_000_000_000}))


def test_non_finite_loss_stops_the_run_naming_the_step():
    with pytest.raises(
        SystemExit, match=r"TD loss became non-finite .*\{1: \d+\}.*Last checkpoint kept: .*step_000001000"
    ):
        main(Args(**{**TINY, "learning_rate": (1e36,), "learning_starts": 1_200, "save_model": True}))


def test_continuous_env_list_matches_gymnax():
    continuous = []
    for name in gymnax.registered_envs:
        if name == "MNISTBandit-bsuite":  # downloads MNIST when made
            continue
        env, params = gymnax.make(name)
        if not isinstance(env.action_space(params), spaces.Discrete):
            continuous.append(name)
    assert sorted(continuous) == sorted(CONTINUOUS_ENV_IDS)


DISCRETE_ENV_IDS = [
    name for name in gymnax.registered_envs if name not in CONTINUOUS_ENV_IDS and name != "MNISTBandit-bsuite"
]  # MNISTBandit-bsuite downloads MNIST when made


@pytest.mark.parametrize("env_id", DISCRETE_ENV_IDS)
def test_replay_stores_every_environments_observations_exactly(env_id):
    """Random play in 8 environments for 400 steps, every observation and next observation written to the
    replay in the dtype the kit chooses: reading them back gives the environment's values exactly (the
    kit's earlier choice, uint8 from the declared bounds, rounded MemoryChain's, UmbrellaChain's and
    GaussianBandit's fractions)."""
    env, params = make_env(env_id)
    num_envs, steps = 8, 400
    dtype = replay_obs_dtype(env_id, env, params)

    def random_step(carry, key):
        obs, state = carry
        action_key, step_key = jax.random.split(key)
        actions = jax.vmap(env.action_space(params).sample)(jax.random.split(action_key, num_envs))
        next_obs, state, _, _, _, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(step_key, num_envs), state, actions, params
        )
        return (next_obs, state), (obs, info["final_observation"])

    @jax.jit
    def roll_out_and_store():
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.key(0), num_envs), params)
        _, (observed, next_observed) = jax.lax.scan(
            random_step, (obs, state), jax.random.split(jax.random.key(1), steps)
        )
        flat, next_flat = (x.reshape(num_envs * steps, *obs.shape[1:]) for x in (observed, next_observed))
        zeros = jnp.zeros(num_envs * steps)
        replay = Replay.empty(num_envs * steps, obs.shape[1:], dtype).add(0, flat, zeros, zeros, next_flat, zeros)
        return observed, next_observed, replay

    observed, next_observed, replay = roll_out_and_store()
    flat = observed.reshape(-1, *observed.shape[2:])
    assert np.unique(np.asarray(flat)).size > 1 or env_id.endswith("Bandit-bsuite")  # the play shows something
    np.testing.assert_array_equal(replay.obs.astype(observed.dtype), flat)
    np.testing.assert_array_equal(replay.next_obs.astype(observed.dtype), next_observed.reshape(flat.shape))


def test_command_line_runs_and_documents_every_flag():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    helped = subprocess.run(
        [sys.executable, str(ROOT / "mirl_gymnax.py"), "--help"], env=env, capture_output=True, text=True
    )
    assert helped.returncode == 0
    for field in dataclasses.fields(Args):
        assert "--" + field.name.replace("_", "-") in helped.stdout
    flags = [
        word
        for name, value in TINY.items()
        for word in (f"--{name.replace('_', '-')}", *map(str, value if isinstance(value, tuple) else (value,)))
    ]
    ran = subprocess.run(
        [sys.executable, str(ROOT / "mirl_gymnax.py"), "--algo", "sql", *flags], env=env, capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "greedy eval/episodic_return" in ran.stdout
    assert len(list(Path("runs").glob("CartPole-v1__sql__1__*/seed_1/events.out.tfevents.*"))) == 1
