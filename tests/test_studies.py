"""benchmarks/redundancy_study.py and benchmarks/beta_scale_study.py at toy sizes: they train every part, report
each cell with its seeds, and running them again continues instead of starting over."""

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import beta_scale_study  # noqa: E402
import redundancy_study  # noqa: E402

TINY_FLAGS = [
    *("--buffer-size", "1000", "--learning-starts", "400", "--batch-size", "32", "--num-envs", "4"),
    *("--train-frequency", "4", "--target-network-frequency", "200", "--log-interval", "200", "--eval-episodes", "2"),
    *("--alpha-rho", "1e-2", "--alpha-beta", "1e-2"),
]


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_the_redundancy_study_runs_at_tiny_sizes_and_continues(tmp_path, capsys):
    args = redundancy_study.Args(
        envs=["CartPole-v1"], copies=[0, 2], num_seeds=2, minatar_games=["Breakout-MinAtar"], minatar_copies=[1],
        minatar_seeds=1, algos=["sql", "mirl"], steps=800, checkpoint_interval=400, flags=TINY_FLAGS,
        out=tmp_path / "docs" / "redundancy",
    )  # fmt: skip
    first = redundancy_study.main(args)
    cells = [("CartPole-v1", algo, k) for algo in ("sql", "mirl") for k in (0, 2)]
    cells += [("Breakout-MinAtar", algo, 1) for algo in ("sql", "mirl")]
    assert sorted(first["scores"]) == sorted(cells)
    for point, low, high in first["scores"].values():
        assert low <= point <= high
    # sql's ρ stays uniform: K / (|A| + K) on the copies; mirl's moves
    np.testing.assert_allclose(first["prior_on_copies"][("CartPole-v1", "sql", 2)], [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(first["prior_on_copies"][("Breakout-MinAtar", "sql", 1)], [0.25], rtol=1e-6)
    assert not np.allclose(first["prior_on_copies"][("CartPole-v1", "mirl", 2)], 0.5)
    assert sorted(first["prior_on_copies"]) == sorted(cell for cell in cells if cell[2] > 0)
    printed = capsys.readouterr().out
    assert "| CartPole-v1 | 2 | 2 |" in printed and "| Breakout-MinAtar | 1 | 1 |" in printed  # seeds per cell
    assert (tmp_path / "docs" / "redundancy_study.png").stat().st_size > 10_000
    runs = sorted(Path("runs").iterdir())
    assert len(runs) == len(cells)

    second = redundancy_study.main(args)
    assert capsys.readouterr().out.count(": done, runs/") == len(cells)
    assert sorted(Path("runs").iterdir()) == runs  # nothing started over
    assert second["scores"] == first["scores"]


def test_the_beta_scale_study_sweeps_c_in_one_program_beside_dqn(tmp_path, capsys):
    args = beta_scale_study.Args(
        game="Breakout-MinAtar", scales=[1.0, 10.0], algos=["mirl"], steps=800, num_seeds=2, checkpoint_interval=400,
        flags=TINY_FLAGS, out=tmp_path / "docs" / "beta_scale",
    )  # fmt: skip
    results = beta_scale_study.main(args)
    assert sorted(results) == ["dqn", "mirl-c beta_scale=1.0", "mirl-c beta_scale=10.0"]
    assert len(list(Path("runs").iterdir())) == 2  # one program for every c, one for dqn
    assert all(result["seeds"] == 2 for result in results.values())
    # β moves towards c / L: a larger c ends at a larger β
    assert (results["mirl-c beta_scale=10.0"]["beta"] > results["mirl-c beta_scale=1.0"]["beta"]).all()
    assert len(results["dqn"]["beta"]) == 0
    assert "| dqn | 2 |" in capsys.readouterr().out
    assert (tmp_path / "docs" / "beta_scale_curves.png").stat().st_size > 10_000
