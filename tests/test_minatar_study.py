"""benchmarks/minatar_study.py, the command for the whole MinAtar study, at toy sizes: it trains every part,
aggregates the minimal and full action sets apart, and running it again continues instead of starting over."""

import sys
from pathlib import Path

import numpy as np
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import minatar_study  # noqa: E402
import studies  # noqa: E402

TINY_FLAGS = [
    *("--buffer-size", "1000", "--learning-starts", "400", "--batch-size", "32", "--num-envs", "4"),
    *("--train-frequency", "4", "--target-network-frequency", "200", "--log-interval", "200", "--eval-episodes", "2"),
]


def test_the_study_runs_at_tiny_sizes_and_continues(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = minatar_study.Args(
        games=["Breakout-MinAtar"],
        full_action_games=["Breakout-MinAtar"],
        algos=["dqn", "mirl"],
        steps=800,
        num_seeds=2,
        checkpoint_interval=400,
        flags=TINY_FLAGS,
        exploration_steps=400,
        out=tmp_path / "docs" / "minatar",
    )
    first = minatar_study.main(args)
    for action_set, suffix in (("minimal", ""), ("full", "-full")):
        assert set(first[action_set]["scores"]) == {f"dqn{suffix}", f"mirl{suffix}"}
        assert all(scores.shape == (2, 1) for scores in first[action_set]["scores"].values())  # seeds × games
        assert (tmp_path / "docs" / f"minatar_{action_set}_aggregates.png").stat().st_size > 10_000
    runs = {run.name.split("__")[1]: run for run in Path("runs").iterdir()}
    assert sorted(runs) == ["dqn", "dqn-full", "mirl", "mirl-full"]

    # a run killed during its final evaluation (its logs gone) resumes from its last checkpoint and only evaluates
    for events in (runs["mirl"] / "seed_1").glob("events.*"):
        events.unlink()
    capsys.readouterr()
    second = minatar_study.main(args)
    printed = capsys.readouterr().out
    assert printed.count(": done, runs/") == 3 and "Breakout-MinAtar mirl: resuming" in printed
    assert sorted(Path("runs").iterdir()) == sorted(runs.values())  # nothing started over
    for action_set in ("minimal", "full"):
        for experiment, scores in first[action_set]["scores"].items():
            np.testing.assert_array_equal(second[action_set]["scores"][experiment], scores)
    # a study of another length is another experiment (its schedules differ): it would not continue these runs
    longer = minatar_study.run_flags(
        minatar_study.Args(**{**vars(args), "steps": 1_200}), "Breakout-MinAtar", "dqn", False
    )
    assert studies.latest_checkpoint("Breakout-MinAtar", "dqn", longer) is None
    same = minatar_study.run_flags(args, "Breakout-MinAtar", "dqn", False)
    assert studies.latest_checkpoint("Breakout-MinAtar", "dqn", same) is not None
