"""common.aggregate: IQM, bootstrap intervals and performance profiles over seeds and environments, on runs
written in the test (known scores, checked by hand) and on real mirl_gymnax runs."""

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import trim_mean
from tensorboardX import SummaryWriter

import mirl_gymnax
from common import aggregate
from common.errors import UserError

# final scores per (environment, experiment), one per seed
FINALS = {
    ("Alpha-v0", "mirl"): [0.0, 10.0, 20.0, 30.0, 40.0],
    ("Alpha-v0", "dqn"): [0.0, 0.0, 10.0, 10.0, 100.0],
    ("Beta-v0", "mirl"): [5.0, 6.0, 7.0, 8.0, 9.0],
    ("Beta-v0", "dqn"): [1.0, 1.0, 1.0, 1.0, 1.0],
}


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def write_runs(finals: dict) -> list[Path]:
    """One run directory per (environment, experiment), laid out as the scripts write them: a rising training
    curve that ends at the seed's final score, and the final score as the evaluation."""
    runs = []
    for (env, experiment), scores in finals.items():
        run = Path("runs") / f"{env}__{experiment}__1__0"
        for seed, score in enumerate(scores, start=1):
            writer = SummaryWriter(str(run / f"seed_{seed}"))
            for step in range(0, 1001, 100):
                writer.add_scalar("charts/episodic_return", score * step / 1000, step)
            writer.add_scalar("eval/episodic_return", score, 1000)
            writer.close()
        runs.append(run)
    return runs


def test_each_configuration_of_a_sweep_is_an_experiment():
    """A sweep's run directory (mirl_gymnax.py: a folder per configuration, seed_* sub-runs in each)."""
    run = Path("runs") / "Alpha-v0__mirl__1__0"
    for configuration, score in (("alpha_rho=0.001", 10.0), ("alpha_rho=0.01", 20.0)):
        for seed in (1, 2):
            writer = SummaryWriter(str(run / configuration / f"seed_{seed}"))
            writer.add_scalar("eval/episodic_return", score + seed, 1000)
            writer.close()
    (run / "checkpoints").mkdir()
    runs = aggregate.read_runs([run], "charts/episodic_return", "eval/episodic_return", 1)
    assert runs.finals == {
        ("Alpha-v0", "mirl alpha_rho=0.001"): [11.0, 12.0],
        ("Alpha-v0", "mirl alpha_rho=0.01"): [21.0, 22.0],
    }


def test_aggregates_are_those_of_the_normalised_scores(capsys):
    result = aggregate.main(aggregate.Args(runs=write_runs(FINALS), out=Path("out/minatar"), reps=500))
    low_high = {"Alpha-v0": (0.0, 100.0), "Beta-v0": (1.0, 9.0)}  # lowest and highest seen
    for experiment in ("mirl", "dqn"):
        normalised = np.stack(
            [(np.array(FINALS[(env, experiment)]) - low) / (high - low) for env, (low, high) in low_high.items()],
            axis=1,
        )
        np.testing.assert_allclose(result["scores"][experiment], normalised)
        iqm, mean, median, gap = result["point"][experiment]
        assert iqm == pytest.approx(trim_mean(normalised.ravel(), 0.25))
        assert mean == pytest.approx(normalised.mean())
        assert median == pytest.approx(np.median(normalised.mean(axis=0)))  # rliable: of the per-task means
        assert gap == pytest.approx(np.mean(1 - np.minimum(normalised, 1)))
        low, high = result["interval"][experiment]
        assert (low <= result["point"][experiment] + 1e-12).all() and (
            result["point"][experiment] <= high + 1e-12
        ).all()
        assert (high - low)[0] > 0  # seeds differ: the interval has a width
    assert result["point"]["mirl"][0] > result["point"]["dqn"][0]
    for name in ("aggregates", "profiles", "curves"):
        assert Path(f"out/minatar_{name}.png").stat().st_size > 10_000
    table = capsys.readouterr().out
    assert "- Alpha-v0: low 0, high 100 (lowest and highest seen)" in table
    assert "| mirl | 5 × 2 | " in table and "IQM [95% CI]" in table


def test_the_bootstrap_is_reproducible_and_reference_scores_are_used():
    runs = write_runs(FINALS)
    args = aggregate.Args(runs=runs, reps=300, reference=["Alpha-v0=0:50", "Beta-v0=0:10"])
    first, second = aggregate.main(args), aggregate.main(args)
    np.testing.assert_array_equal(first["interval"]["mirl"], second["interval"]["mirl"])
    np.testing.assert_allclose(first["scores"]["mirl"][:, 0], np.array(FINALS[("Alpha-v0", "mirl")]) / 50)
    assert first["normalisers"]["Beta-v0"] == (0.0, 10.0, "--reference")


def test_unequal_seed_counts_and_bad_references_are_refused():
    with pytest.raises(UserError, match=r"dqn has different numbers of seeds per environment"):
        aggregate.main(aggregate.Args(runs=write_runs({**FINALS, ("Beta-v0", "dqn"): [1.0, 2.0]}), reps=10))
    with pytest.raises(UserError, match=r"--reference 'Alpha-v0=1': expected ENV_ID=LOW:HIGH"):
        aggregate.main(aggregate.Args(runs=write_runs(FINALS), reps=10, reference=["Alpha-v0=1"]))


def test_a_seed_rerun_counts_once_and_a_solved_task_names_reference():
    """A second run of seed 1 is the same seed, not a sixth; on a task every seed solved, the lowest and highest
    score seen are equal and cannot normalise: the message says what --reference to give."""
    runs = write_runs(FINALS)
    rerun = Path("runs") / "Alpha-v0__mirl__1__9"
    writer = SummaryWriter(str(rerun / "seed_1"))
    writer.add_scalar("eval/episodic_return", 35.0, 1000)
    writer.close()
    with pytest.raises(UserError, match=r"seed 1 of mirl \(Alpha-v0\) was trained by runs/Alpha-v0__mirl__1__0 and"):
        aggregate.main(aggregate.Args(runs=[*runs, rerun], reps=10))
    latest = aggregate.main(aggregate.Args(runs=[*runs, rerun], reps=10, latest=True))
    np.testing.assert_allclose(latest["scores"]["mirl"][:, 0], np.array([35.0, 10, 20, 30, 40]) / 100)
    solved = {("Gamma-v0", name): [500.0] * 3 for name in ("mirl", "dqn")}
    with pytest.raises(UserError, match=r"Gamma-v0: every final score is 500.* --reference Gamma-v0=LOW:HIGH"):
        aggregate.main(aggregate.Args(runs=write_runs(solved), reps=10))
    fixed = aggregate.main(aggregate.Args(runs=write_runs(solved), reps=10, reference=["Gamma-v0=0:500"]))
    np.testing.assert_allclose(fixed["scores"]["mirl"], 1.0)


def test_real_runs_of_two_algorithms_aggregate(capsys):
    tiny = dict(
        total_timesteps=1_200, num_envs=4, buffer_size=400, learning_starts=200, batch_size=16, train_frequency=4,
        log_interval=200, checkpoint_interval=1_200, eval_episodes=2, num_seeds=3,
    )  # fmt: skip
    runs = [mirl_gymnax.main(mirl_gymnax.Args(algo=algo, **tiny))["run_dir"] for algo in ("mirl", "dqn")]
    result = aggregate.main(aggregate.Args(runs=runs, out=Path("cartpole"), reps=200))
    assert set(result["scores"]) == {"mirl", "dqn"} and result["scores"]["mirl"].shape == (3, 1)
    assert "| dqn | 3 × 1 |" in capsys.readouterr().out
