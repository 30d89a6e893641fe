"""common.make_dataset: D4RL-format files (and Minari datasets) rolled out on Pendulum-v1, whose episodes
last 200 steps, read back through common.datasets."""

import ast
import subprocess
import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest

from benchmarks.pendulum_controller import act as pendulum_controller
from common.datasets import load_dataset
from common.errors import UserError
from common.make_dataset import Args, load_policy, main

ROOT = Path(__file__).resolve().parents[1]
CONTROLLER = "benchmarks.pendulum_controller:act"


def make(tmp_path: Path, name: str = "data.hdf5", **overrides) -> dict:
    """Run make_dataset (two reference episodes, for speed) and return the file's arrays and attrs."""
    args = Args(env_id="Pendulum-v1", output=str(tmp_path / name), reference_episodes=2, **overrides)
    main(args)
    with h5py.File(args.output, "r") as file:
        return {"attrs": dict(file.attrs), **{key: file[key][()] for key in file}}


def test_random_policy_file_is_d4rl_format_with_contiguous_episodes(tmp_path, capsys):
    data = make(tmp_path, policy="random", num_steps=650, num_envs=4, seed=3)
    assert "650 rows, 4 episodes" in capsys.readouterr().out
    # the four envs finish their first episodes together: three whole ones, then the fourth cut to 50 steps
    assert len(data["observations"]) == 650 and data["observations"].dtype == np.float32
    np.testing.assert_array_equal(np.flatnonzero(data["timeouts"]), [199, 399, 599])
    assert not data["terminals"].any()  # Pendulum never terminates; the partial episode has no flag either
    assert np.all(np.abs(data["actions"]) <= 2.0) and data["actions"].std() > 1.0  # uniform over [-2, 2]
    within_episodes = np.setdiff1d(np.arange(649), [199, 399, 599])
    np.testing.assert_array_equal(data["next_observations"][within_episodes], data["observations"][within_episodes + 1])

    attrs = data["attrs"]
    recorded = {key: attrs[key] for key in ("env_id", "policy", "noise_std", "random_fraction", "seed")}
    assert recorded == {"env_id": "Pendulum-v1", "policy": "random", "noise_std": 0, "random_fraction": 0, "seed": 3}
    assert -1700 < attrs["ref_min_score"] < -700 and "ref_max_score" not in attrs  # none for a random policy

    transitions, info = load_dataset("pendulum-random", dataset_path=str(tmp_path / "data.hdf5"))
    assert len(transitions.rewards) == 649 - 3  # d4rl drops the timeout rows and the last row
    np.testing.assert_array_equal(transitions.observations, data["observations"][within_episodes])
    np.testing.assert_array_equal(transitions.next_observations, data["next_observations"][within_episodes])
    assert (info.eval_env_id, info.ref_min_score, info.ref_max_score) == ("Pendulum-v1", attrs["ref_min_score"], None)


def test_random_fraction_and_noise_with_a_module_function_policy(tmp_path):
    data = make(tmp_path, policy=CONTROLLER, noise_std=0.1, random_fraction=0.5, num_steps=1600, num_envs=8, seed=0)
    residuals = (data["actions"] - pendulum_controller(data["observations"])).reshape(8, 200)
    rms = np.sqrt((residuals**2).mean(axis=1))
    random_episodes = rms > 0.6  # uniform actions are far from the controller's; noisy ones are ~0.2 off
    assert 0 < random_episodes.sum() < 8
    # noise of 0.1 half-widths on [-2, 2] is 0.2 torque units (a little less where it is clipped)
    assert np.all((rms[~random_episodes] > 0.1) & (rms[~random_episodes] < 0.25))
    assert np.all(np.abs(data["actions"]) <= 2.0)
    returns = data["rewards"].reshape(8, 200).sum(axis=1)
    assert returns[~random_episodes].mean() > returns[random_episodes].mean() + 300
    assert data["attrs"]["ref_max_score"] > -300  # the noiseless controller

    all_random = make(tmp_path, "all.hdf5", policy=CONTROLLER, random_fraction=1.0, num_steps=800, num_envs=4)
    residuals = (all_random["actions"] - pendulum_controller(all_random["observations"])).reshape(4, 200)
    assert np.all(np.sqrt((residuals**2).mean(axis=1)) > 0.6)


def test_same_seed_same_file_other_seed_other_data(tmp_path):
    settings = dict(policy=CONTROLLER, noise_std=0.3, random_fraction=0.5, num_steps=450, num_envs=3)
    first = make(tmp_path, "a.hdf5", seed=7, **settings)
    second = make(tmp_path, "b.hdf5", seed=7, **settings)
    assert (tmp_path / "a.hdf5").read_bytes() == (tmp_path / "b.hdf5").read_bytes()
    assert first["attrs"] == second["attrs"]
    other = make(tmp_path, "c.hdf5", seed=8, **settings)
    assert not np.array_equal(first["observations"], other["observations"])


def test_minari_copy_has_the_same_episodes(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    data = make(
        tmp_path, policy=CONTROLLER, num_steps=500, num_envs=2, ref_max_score=-140.0, minari_id="pendulum/pd-v0"
    )
    transitions, info = load_dataset("pendulum/pd-v0")
    # Minari keeps every step (each episode's final observation is stored), so its rows are the file's rows
    np.testing.assert_array_equal(transitions.observations, data["observations"])
    np.testing.assert_array_equal(transitions.next_observations, data["next_observations"])
    np.testing.assert_array_equal(transitions.actions, data["actions"])
    assert (info.ref_min_score, info.ref_max_score) == (data["attrs"]["ref_min_score"], -140.0)
    with pytest.raises(UserError, match="exists already"):
        make(tmp_path, "again.hdf5", num_steps=10, minari_id="pendulum/pd-v0")


def test_policy_specs(monkeypatch):
    assert load_policy("random") is None
    assert load_policy(CONTROLLER) is pendulum_controller
    fake_learner = types.SimpleNamespace(load_policy=lambda path: ("policy from", path))
    monkeypatch.setitem(sys.modules, "some_learner", fake_learner)  # a loader, without a learner
    assert load_policy("some_learner:load_policy", "runs/x/step_1.eqx") == ("policy from", "runs/x/step_1.eqx")
    with pytest.raises(UserError, match="module:function"):
        load_policy("pendulum_controller")
    with pytest.raises(UserError, match="--policy-checkpoint needs --policy to name its loader"):
        load_policy("random", "runs/x/step_1.eqx")
    with pytest.raises(UserError, match="now given as --policy misa_d4rl:load_policy --policy-checkpoint PATH"):
        load_policy("checkpoint:runs/x/step_1.eqx")  # the earlier form


def test_common_imports_no_script():
    """common/ is plumbing under the scripts: none of its modules imports one of them."""
    scripts = {path.stem for path in ROOT.glob("*.py")}
    for module in (ROOT / "common").glob("*.py"):
        tree = ast.parse(module.read_text())
        imported = {
            alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        }
        imported |= {
            node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
        }
        assert not imported & scripts, (module.name, imported & scripts)


def test_command_line(tmp_path):
    output = tmp_path / "cli.hdf5"
    command = [sys.executable, "-m", "common.make_dataset", "--num-steps", "300", "--output", str(output)]
    done = subprocess.run(
        [*command, "--policy", "random", "--num-envs", "2", "--reference-episodes", "1", "--ref-max-score", "-150"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert f"{output}: 300 rows, 2 episodes" in done.stdout and "ref_max_score -150.0" in done.stdout
    _, info = load_dataset(str(output))
    assert info.ref_max_score == -150.0
