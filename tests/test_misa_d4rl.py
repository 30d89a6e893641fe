"""misa_d4rl.py end to end on a small Pendulum-v1 dataset made by common.make_dataset, with tiny networks
and sample counts: every variant trains, logs and evaluates; seeds differ; runs reproduce, resume and
shard exactly; a saved policy makes new data; bad input fails with a clear message."""

import subprocess
import sys
from pathlib import Path

import h5py
import jax
import numpy as np
import pytest
from conftest import leaves, run_sharded_and_single, scalars

import common.make_dataset as make_dataset
from common.checkpoint import read_header, save_checkpoint
from common.cli import parse
from common.datasets import ObsScaler, load_dataset
from common.errors import UserError
from misa_d4rl import SCRIPT, Args, load_policy, main

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(
    env_id="pendulum-random",
    total_steps=20,
    eval_interval=10,
    log_interval=5,
    eval_episodes=2,
    hidden_size=16,
    batch_size=16,
    num_action_samples=4,
    hmc_burn_in=1,
    hmc_samples=3,
)


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "pendulum-random.hdf5"
    make_dataset.main(
        make_dataset.Args(
            env_id="Pendulum-v1", policy="random", num_steps=600, output=str(path), reference_episodes=2, seed=0
        )
    )
    with h5py.File(path, "a") as file:  # a random dataset has no expert reference: give it one for scoring
        file.attrs["ref_max_score"] = -150.0
    return str(path)


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def tiny(dataset_path: str, **overrides) -> Args:
    return Args(**{**TINY, "dataset_path": dataset_path, **overrides})


@pytest.mark.parametrize("variant", ["misa", "misa-biased", "cql", "bc"])
def test_each_variant_trains_logs_and_evaluates(dataset_path, variant):
    result = main(tiny(dataset_path, variant=variant, num_seeds=2))
    assert result["scores"].shape == (2,) and np.isfinite(result["scores"]).all()
    assert result["scores"][0] != result["scores"][1]  # seeds differ: init, batches, samples
    first, second = (leaves(jax.tree.map(lambda x, k=k: x[k], result["states"].params.policy)) for k in (0, 1))
    assert any(not np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    logged = scalars(result["run_dir"], seed=2)
    assert [step for step, _ in logged["eval/normalized_score"]] == [10, 20]
    assert [step for step, _ in logged["losses/policy_loss"]] == [5, 10, 15, 20]
    assert "eval/best_normalized_score" in logged and "eval/episodic_return" in logged
    assert ("misa/hmc_acceptance" in logged) == (variant == "misa")
    assert ("losses/regularizer" in logged) == (variant != "bc")


def test_same_seed_reproduces_bit_for_bit(dataset_path):
    first, second = main(tiny(dataset_path)), main(tiny(dataset_path))
    for a, b in zip(leaves(first["states"]), leaves(second["states"]), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first["scores"], second["scores"])


def test_resume_reaches_the_uninterrupted_result(dataset_path):
    uninterrupted = main(tiny(dataset_path, save_model=True, keep_checkpoints=0))
    halfway = uninterrupted["run_dir"] / "checkpoints" / "step_000000010.eqx"
    resumed = main(parse(Args, SCRIPT, ["--resume", str(halfway)]))
    for a, b in zip(leaves(uninterrupted["states"]), leaves(resumed["states"]), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(uninterrupted["scores"], resumed["scores"])
    assert resumed["best_scores"] == uninterrupted["best_scores"]  # the best score survives the restart


def test_a_saved_policy_acts_like_the_trained_one_and_makes_a_new_dataset(dataset_path, tmp_path):
    result = main(tiny(dataset_path, save_model=True, normalize_obs=True))
    data, _ = load_dataset("pendulum-random", dataset_path)
    observations = data.observations[:50]
    scale = ObsScaler.fit(data.observations, standardise=True)  # what training applied
    policy = jax.tree.map(lambda x: x[0], result["states"].params.policy)  # seed 0, as load_policy takes
    expected = 2.0 * np.tanh(np.asarray(jax.vmap(policy)(scale(observations))[0]))  # Pendulum's box is [−2, 2]
    loaded = load_policy(result["last_checkpoint"])
    np.testing.assert_allclose(loaded(observations), expected, rtol=1e-5, atol=1e-6)

    output = tmp_path / "from-policy.hdf5"
    make_dataset.main(
        make_dataset.Args(
            env_id="Pendulum-v1",
            policy="misa_d4rl:load_policy",
            policy_checkpoint=str(result["last_checkpoint"]),
            num_steps=400,
            output=str(output),
            seed=1,
        )
    )
    with h5py.File(output) as file:
        actions = file["actions"][()]
    assert actions.shape == (400, 1) and np.abs(actions).max() <= 2.0
    assert actions.std() > 0


SHARDING_PROBE = """
import sys
import jax, numpy as np
from misa_d4rl import Args, main
result = main(Args(**{tiny}, num_seeds=2, cpu_devices={{cpu_devices}}))
print("devices", len(jax.devices()), "shards", len(result["states"].nan_step.sharding.device_set))
np.savez(sys.argv[1], *[np.asarray(x) for x in jax.tree.leaves(result["states"].params)], scores=result["scores"])
"""


def test_sharded_seeds_equal_unsharded(dataset_path, tmp_path):
    """2 seeds on 2 devices against 2 seeds on 1: the same numbers up to float32 rounding."""
    probe = SHARDING_PROBE.format(tiny={**TINY, "dataset_path": dataset_path})
    sharded, single = run_sharded_and_single(probe, 2, tmp_path)
    for name in single:
        np.testing.assert_allclose(sharded[name], single[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_unknown_dataset_names_the_valid_ones():
    with pytest.raises(UserError, match="hopper-medium-v2.*mujoco/hopper/medium-v0"):
        main(Args(**{**TINY, "env_id": "hopper-mediocre-v2"}))


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nowhere.hdf5"
    with pytest.raises(UserError, match="nowhere.hdf5"):
        main(tiny(str(missing)))


def test_inconsistent_flags_are_refused(dataset_path):
    with pytest.raises(UserError, match=r"--eval-interval \(12\) must be a multiple of --log-interval \(5\)"):
        main(tiny(dataset_path, eval_interval=12))
    with pytest.raises(UserError, match="--action-clip must lie in"):
        main(tiny(dataset_path, action_clip=1.0))
    with pytest.raises(UserError, match=r"--hmc-step-size \(0.0\) must be positive"):
        main(tiny(dataset_path, hmc_step_size=0.0))
    with pytest.raises(UserError, match=r"--eval-episodes \(-1\) must be non-negative"):
        main(tiny(dataset_path, eval_episodes=-1))
    with pytest.raises(UserError, match="--add-positive .* --variant cql has no such set"):
        main(tiny(dataset_path, variant="cql", add_positive=True))
    with pytest.raises(UserError, match="--lagrange tunes the critics' regulariser; --variant bc"):
        main(tiny(dataset_path, variant="bc", lagrange=True))


def test_a_checkpoint_from_before_the_official_regularisers_is_refused(dataset_path, tmp_path):
    result = main(tiny(dataset_path, save_model=True, eval_episodes=0))
    header = read_header(result["last_checkpoint"])
    del header["args"]["add_positive"], header["script"]  # what misa_d4rl.py wrote before --add-positive existed
    old = tmp_path / "old.eqx"
    save_checkpoint(old, result["states"], header)
    with pytest.raises(UserError, match=r"another version of misa_d4rl.py \(without --add-positive\).*start a new run"):
        main(parse(Args, SCRIPT, ["--resume", str(old)]))


def test_without_evaluation_the_actions_keep_the_environment_box(dataset_path, capsys):
    """Pendulum acts in [−2, 2]: the box comes from the environment even when no evaluation env is made,
    so the data is rescaled the same way and a saved policy acts in the right range. The run still ends with a
    final line, saying that nothing was evaluated."""
    result = main(tiny(dataset_path, eval_episodes=0, save_model=True))
    header = read_header(result["last_checkpoint"])
    assert (header["action_low"], header["action_high"]) == ([-2.0], [2.0])
    assert result["scores"] is None
    assert capsys.readouterr().out.splitlines()[-1].endswith(": trained 20 gradient steps per seed; nothing evaluated")


def test_a_finished_run_resumed_says_so(dataset_path, capsys):
    """misa keeps its best scores in its checkpoints and does not evaluate a finished run again: its last line says
    that it had finished, not that nothing was evaluated."""
    checkpoint = main(tiny(dataset_path, save_model=True))["last_checkpoint"]
    capsys.readouterr()
    again = main(Args(resume=str(checkpoint)))
    assert again["best_scores"] is not None
    assert (
        capsys.readouterr()
        .out.splitlines()[-1]
        .endswith("has finished its 20 gradient steps: its scores are in its logs")
    )


def test_the_status_line_shows_the_evaluation_of_its_own_step(dataset_path, capsys, monkeypatch):
    """Off a terminal, the status line after an evaluation shows that evaluation's score, not the one before."""
    import functools

    import common.experiment
    from common.logger import RunLogger

    monkeypatch.setattr(common.experiment, "RunLogger", functools.partial(RunLogger, status_every=0.0))
    result = main(tiny(dataset_path, total_steps=30))
    statuses = {
        int(line.split()[1].split("/")[0]): line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("step ")
    }
    evaluations = scalars(result["run_dir"], 1)["eval/normalized_score"]
    assert [step for step, _ in evaluations] == [10, 20, 30] and sorted(statuses) == [5, 10, 15, 20, 25, 30]
    for step, score in evaluations:  # one seed: its score is the headline
        assert f"eval/normalized_score {score:.1f}" in statuses[step], statuses[step]


def test_non_finite_loss_stops_the_run_naming_the_step(dataset_path, tmp_path):
    exploding = tmp_path / "exploding.hdf5"
    with h5py.File(dataset_path) as source, h5py.File(exploding, "w") as target:
        for key in source:
            target[key] = source[key][()]
        target.attrs.update(source.attrs)
        del target["rewards"]
        target["rewards"] = np.full(source["rewards"].shape, 3e38, np.float32)  # squares overflow float32
    with pytest.raises(SystemExit, match=r"non-finite \(seed: gradient step\) \{1: 0\}.*Last checkpoint kept: none"):
        main(tiny(str(exploding)))


def test_command_line_documents_every_flag():
    done = subprocess.run([sys.executable, "misa_d4rl.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for flag in ("--variant", "--hmc-samples", "--lagrange", "--dataset-path", "--num-seeds", "--resume"):
        assert flag in done.stdout


def test_the_hmc_observation_benchmark_runs_at_tiny_sizes(dataset_path):
    """benchmarks/misa_hmc.py: each step size's logged HMC statistics, per seed, at its log points."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import misa_hmc

    table = misa_hmc.main(misa_hmc.Args(step_sizes=(1.0, 0.1), total_steps=4, num_seeds=2, dataset_path=dataset_path))
    for step_size in (1.0, 0.1):
        adapted = table[step_size, "misa/hmc_step_size"][4]  # 4 adaptation steps of ×1.01 or ÷1.01
        assert ((adapted >= step_size * 1.01**-4 - 1e-6) & (adapted <= step_size * 1.01**4 + 1e-6)).all()
        moved = table[step_size, "misa/hmc_moved_fraction"][4]
        assert ((moved >= 0) & (moved <= 1)).all() and np.isfinite(table[step_size, "misa/hmc_grad_ratio"][4]).all()
