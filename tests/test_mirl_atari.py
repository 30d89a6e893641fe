"""mirl_atari.py end to end on real envpool games, with tiny budgets and a small buffer: every algo
runs, logs and evaluates on Pong and Breakout with 1 and 2 seeds; seeds differ; runs reproduce;
resume restores the learner; bad input fails with a clear message."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import assert_rows_close, leaves, run_sharded_and_single, scalars

from common.checkpoint import read_header
from common.cli import parse
from common.errors import UserError
from mirl_atari import SCRIPT, Args, main

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="envpool 1.2 has wheels for Python 3.11+ only")

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(
    total_timesteps=96,
    num_envs=2,
    buffer_size=64,
    learning_starts=32,
    batch_size=4,
    train_frequency=2,
    target_network_frequency=16,
    log_interval=16,
    checkpoint_interval=32,
    eval_interval=48,
    eval_episodes=2,
    max_episode_steps=64,  # a random Pong player has lost a point by then
    alpha_rho=1e-2,
    alpha_beta=1e-2,
)


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    "env_id, algo, num_seeds",
    [("Pong-v5", algo, 2) for algo in ("mirl", "sql", "dqn")]
    + [("Breakout-v5", algo, 1) for algo in ("mirl", "sql", "dqn")],
)
def test_smoke_runs_log_and_evaluate(env_id, algo, num_seeds):
    result = main(Args(env_id=env_id, algo=algo, num_seeds=num_seeds, **TINY))
    returns = result["eval_returns"]
    assert returns.shape == (num_seeds, TINY["eval_episodes"]) and np.isfinite(returns).all()
    assert (returns == np.round(returns)).all()  # true scores of (cut) games, not clipped rewards
    if env_id == "Pong-v5":  # where a random player has lost points by the cut
        assert (returns != 0).any()
    logged = scalars(result["run_dir"], num_seeds)
    expected = {"charts/epsilon", "charts/SPS", "losses/td_loss", "losses/q_values", "eval/episodic_return"}
    if algo != "dqn":
        expected |= {"mirl/beta", "mirl/prior_entropy", "mirl/kl_pi_prior"}
    assert expected <= set(logged)
    assert [step for step, _ in logged["eval/episodic_return"]] == [48, 96]
    states = result["states"]
    prior = np.asarray(states.prior)
    np.testing.assert_allclose(prior.sum(-1), 1.0, atol=1e-5)
    if algo == "mirl":
        assert not np.allclose(prior, prior[0, 0])
    else:
        np.testing.assert_array_equal(prior, np.full_like(prior, 1.0 / prior.shape[-1]))
    assert states.replay.frames.shape == (num_seeds, 32, 2, 84, 84)
    if num_seeds == 2:  # seeds differ: initialisation, exploration and games
        first_layer = np.asarray(jax.tree.leaves(states.params)[0])
        assert not np.array_equal(first_layer[0], first_layer[1])
        assert not np.array_equal(states.replay.actions[0], states.replay.actions[1])
        assert not np.array_equal(states.replay.frames[0], states.replay.frames[1])


def test_training_score_is_the_true_game_score():
    """Pong games cut at 64 steps: the logged training return is the score of whole games, not of lives."""
    one_chunk = dict(total_timesteps=200, log_interval=100, checkpoint_interval=200, eval_interval=200)
    result = main(Args(env_id="Pong-v5", algo="dqn", **{**TINY, **one_chunk}))
    logged = scalars(result["run_dir"], 1)
    returns = [value for _, value in logged["charts/episodic_return"]]
    lengths = [value for _, value in logged["charts/episodic_length"]]
    assert returns and all(r == int(r) for r in returns) and min(returns) < 0
    assert all(length == TINY["max_episode_steps"] for length in lengths)


def test_same_seed_reproduces_bit_for_bit():
    first = main(Args(env_id="Pong-v5", **TINY))
    second = main(Args(env_id="Pong-v5", **TINY))
    for a, b in zip(leaves(first["states"]), leaves(second["states"]), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first["eval_returns"], second["eval_returns"])


def test_resume_restores_the_learner_and_continues():
    """envpool cannot save its emulators: a resumed run restarts the games but restores everything
    else, and the transition cut by the interruption never trains."""
    args = Args(env_id="Pong-v5", save_model=True, keep_checkpoints=0, **TINY)
    uninterrupted = main(args)
    checkpoints = sorted((uninterrupted["run_dir"] / "checkpoints").glob("step_*.eqx"))
    assert [c.name for c in checkpoints] == ["step_000000032.eqx", "step_000000064.eqx", "step_000000096.eqx"]
    assert read_header(checkpoints[1])["iteration"] == 32

    resumed = main(parse(Args, SCRIPT, ["--resume", str(checkpoints[1])]))
    assert resumed["run_dir"] == uninterrupted["run_dir"]
    restarted = np.asarray(resumed["states"].replay.first)[0]
    rows = TINY["buffer_size"] // TINY["num_envs"]
    assert restarted[32 % rows].all()  # the first row after the interruption is a fresh reset in every env
    logged = scalars(resumed["run_dir"], 1)
    assert [step for step, _ in logged["eval/episodic_return"]].count(96) == 2  # both runs evaluated at the end


def test_unknown_game_lists_valid_ones():
    with pytest.raises(UserError, match=r"'Pongg-v5' is not an envpool Atari game .*Pong-v5"):
        main(Args(env_id="Pongg-v5", **TINY))
    with pytest.raises(UserError, match=r"'CartPole-v1' is not an envpool Atari game"):
        main(Args(env_id="CartPole-v1", **TINY))


def test_unsupported_option_combinations_say_why():
    with pytest.raises(UserError, match="--buffer-size must hold more than 4 steps of every environment"):
        main(Args(**{**TINY, "buffer_size": 8}))
    with pytest.raises(UserError, match=r"--train-frequency \(3\) and --num-envs \(2\) must divide one another"):
        main(Args(**{**TINY, "train_frequency": 3}))


def test_oversized_replay_is_refused_before_allocation():
    with pytest.raises(MemoryError, match=r"replay buffers \(2 seeds × 1000000000 transitions × 7064 bytes\)"):
        main(Args(**{**TINY, "num_seeds": 2, "buffer_size": 1_000_000_000}))


def test_non_finite_loss_stops_the_run_naming_the_step():
    with pytest.raises(SystemExit, match=r"TD loss became non-finite .*\{1: \d+\}.*Last checkpoint kept: .*step_0+32"):
        main(Args(env_id="Pong-v5", **{**TINY, "learning_rate": 1e36, "learning_starts": 40, "save_model": True}))


def test_command_line_documents_every_flag():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    helped = subprocess.run(
        [sys.executable, str(ROOT / "mirl_atari.py"), "--help"], env=env, capture_output=True, text=True
    )
    assert helped.returncode == 0
    one_process = {"num_processes", "process_id", "coordinator_address"}  # hidden: the envpools live in one process
    for field in dataclasses.fields(Args):
        assert ("--" + field.name.replace("_", "-") in helped.stdout) == (field.name not in one_process), field.name


SHARDING_PROBE = """
import sys, numpy as np, jax
from mirl_atari import Args, main
states = main(Args(env_id="Pong-v5", num_seeds=2, cpu_devices={{cpu_devices}}, **{tiny!r}))["states"]
print("devices", len(jax.devices()), "shards", len(states.beta.sharding.device_set))
params = np.concatenate([np.asarray(x).reshape(2, -1) for x in jax.tree.leaves(states.params)], axis=1)
np.savez(sys.argv[1], actions=states.replay.actions, frames=states.replay.frames, beta=states.beta,
         prior=states.prior, params=params)
"""


def test_sharded_seeds_equal_unsharded(tmp_path):
    """2 seeds on 2 devices, each stepping its own pool, against 2 seeds in one pool on 1 device: the
    same games and actions, and the same learner up to float32 rounding."""
    sharded, single = run_sharded_and_single(SHARDING_PROBE.format(tiny=TINY), 2, tmp_path)
    np.testing.assert_array_equal(sharded["actions"], single["actions"])
    np.testing.assert_array_equal(sharded["frames"], single["frames"])
    assert_rows_close(sharded, single, ("beta", "prior", "params"))
