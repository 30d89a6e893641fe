"""Short learning checks: a run that does not learn is broken. Random play scores about 22 on
CartPole-v1; 100k steps (a fifth of the default budget, ε decaying over the first half) reach a mean
greedy return of about 350 over 4 seeds for both dqn and mirl on this machine, so the bar of 150 fails
only if learning is broken."""

import pytest

from mirl_gymnax import Args, main


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("algo", ["dqn", "mirl"])
def test_cartpole_learns(algo):
    result = main(Args(algo=algo, num_seeds=4, total_timesteps=100_000))
    mean_return = result["eval_returns"].mean()
    assert mean_return >= 150, f"{algo}: mean greedy return {mean_return:.1f} after 100k steps"
