"""Every class of bad input in docs/runs.md's table gets one `error:` line before any work: no traceback, no run
folder, a non-zero exit. The checks are tested in-process; a few subprocesses per script test the wiring."""

import dataclasses
import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import scalars
from test_mirl_atari import TINY as ATARI_TINY
from test_mirl_gymnax import TINY as GYMNAX_TINY
from test_misa_d4rl import TINY as MISA_TINY

import mirl_atari
import mirl_gymnax
import misa_d4rl
from common import aggregate, plot
from common.checkpoint import read_header, save_checkpoint
from common.cli import check_flags, parse
from common.datasets import DatasetError, load_dataset
from common.errors import UserError
from common.experiment import ChunkRunner
from common.logger import Record, RunLogger
from common.sweep import grid_runs

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"mirl_gymnax": mirl_gymnax, "mirl_atari": mirl_atari, "misa_d4rl": misa_d4rl}
# numeric flags for which any finite value is meaningful
FREE_NUMBERS = {"log_alpha_prime_init", "lagrange_gap"}
# flags for which 0 is meaningful: keep every checkpoint, no evaluation, no exploration, a term switched off, ...
MIRL_ZERO = ("seed", "cpu_devices", "keep_checkpoints", "alpha_rho", "alpha_beta", "end_e", "start_e", "gamma")
ZERO_ALLOWED = {
    "mirl_gymnax": MIRL_ZERO + ("redundant_actions",),
    "mirl_atari": MIRL_ZERO + ("eval_epsilon", "repeat_action_probability"),
    "misa_d4rl": (
        "seed", "cpu_devices", "keep_checkpoints", "eval_episodes", "bc_weight", "fixed_alpha", "regularizer_weight",
        "mcmc_weight", "hmc_burn_in", "gamma", "hmc_adaptation_steps", "hmc_target_acceptance",
    ),
}  # fmt: skip


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def copy_dataset(source: str, target: Path, **replaced: np.ndarray) -> str:
    """`source` with some of its arrays replaced."""
    with h5py.File(source) as old, h5py.File(target, "w") as new:
        for key in old:
            new[key] = replaced.get(key, old[key][()])
        new.attrs.update(old.attrs)
    return str(target)


def filled_args(name: str):
    """Each script's default Args (misa's domain defaults filled in when they are made)."""
    return SCRIPTS[name].Args()


def numeric_fields(args) -> list[str]:
    """The number flags, and the swept ones (a tuple of numbers)."""
    return [
        field.name
        for field in dataclasses.fields(args)
        if type(flag_value(args, field.name)) in (int, float) and field.name not in FREE_NUMBERS
    ]


def flag_value(args, field: str):
    """A flag's value, or a swept flag's first value."""
    value = getattr(args, field)
    return value[0] if isinstance(value, tuple) and value else value


def with_value(args, field: str, value):
    """`args` with `field` set to `value` (for a swept flag, the one value `(value,)`)."""
    return dataclasses.replace(args, **{field: (value,) if isinstance(getattr(args, field), tuple) else value})


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_number_is_checked(name):
    """Each size, count, interval, rate and weight refuses −1, naming its flag; those that must be positive
    refuse 0 too; the defaults pass."""
    defaults = filled_args(name)
    check_flags(defaults)
    for field in numeric_fields(defaults):
        for bad in (-1, 0):
            args = with_value(defaults, field, bad)
            if bad == 0 and field in ZERO_ALLOWED[name]:
                continue
            with pytest.raises(UserError, match="--" + field.replace("_", "-")):
                check_flags(args)
        if isinstance(flag_value(defaults, field), float):
            for bad in (float("nan"), float("inf")):
                with pytest.raises(UserError, match="--" + field.replace("_", "-")):
                    check_flags(with_value(defaults, field, bad))
    for field in FREE_NUMBERS & {f.name for f in dataclasses.fields(defaults) if f.name != "seed"}:
        with pytest.raises(UserError, match=f"--{field.replace('_', '-')} \\(nan\\) must be finite"):
            check_flags(dataclasses.replace(defaults, **{field: float("nan")}))


def test_zero_allowed_lists_only_flags_that_accept_zero():
    for name, fields in ZERO_ALLOWED.items():
        for field in fields:
            check_flags(with_value(filled_args(name), field, 0))


def run_folders() -> list[Path]:
    return list(Path("runs").glob("*")) if Path("runs").exists() else []


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("mirl_gymnax", dict(total_timesteps=0)),
        ("mirl_gymnax", dict(total_timesteps=-40)),
        ("mirl_gymnax", dict(batch_size=0)),
        ("mirl_gymnax", dict(num_seeds=0)),
        ("mirl_gymnax", dict(learning_starts=4_000)),
        ("mirl_atari", dict(total_timesteps=0)),
        ("mirl_atari", dict(num_seeds=-1)),
        ("mirl_atari", dict(batch_size=-4)),
    ],
)
def test_mirl_sizes_are_refused_before_anything_is_built(name, overrides):
    tiny = GYMNAX_TINY if name == "mirl_gymnax" else ATARI_TINY
    with pytest.raises(UserError, match="--" + next(iter(overrides)).replace("_", "-")):
        SCRIPTS[name].main(SCRIPTS[name].Args(**{**tiny, **overrides}))
    assert run_folders() == []


@pytest.mark.parametrize("name", ["mirl_gymnax", "mirl_atari"])
def test_loop_flags_that_would_ruin_a_run_are_refused(name):
    """Accepted in silence before: a target network never updated, a minibatch larger than the replay, a negative
    seed, seeds or budgets beyond the int32 the kit counts in."""
    tiny = GYMNAX_TINY if name == "mirl_gymnax" else ATARI_TINY
    args = SCRIPTS[name].Args(**tiny)
    cases = {
        r"--target-network-frequency \(\d+\) copies no trained network into the target network": dict(
            target_network_frequency=args.total_timesteps  # its one copy comes after the last gradient step
        ),
        r"--buffer-size \(\d+\) must be at least --batch-size \(\d+\)": dict(
            batch_size=args.buffer_size + args.num_envs, learning_starts=args.buffer_size + args.num_envs
        ),
        r"--seed \(-1\) must be non-negative": dict(seed=-1),
        r"the seeds \(--seed 2147483647 to 2147483648\) must be below 2³¹": dict(seed=2**31 - 1, num_seeds=2),
        r"--total-timesteps \(2,147,483,648\) must be below 2³¹": dict(total_timesteps=2**31),
    }
    for message, overrides in cases.items():
        with pytest.raises(UserError, match=message):
            check_flags(dataclasses.replace(args, **overrides))
    assert run_folders() == []


class Counter(eqx.Module):
    params: jax.Array
    target_params: jax.Array


@pytest.mark.parametrize("train_frequency", [1, 4, 10])
def test_the_target_rule_is_the_scripts_own_schedule(train_frequency, monkeypatch):
    """common.replay's first learning step, last learning step and first target copy, and the scripts' count of
    gradient steps, against mirl_gymnax's learn_and_sync stepped through every iteration: its `learn` replaced by a
    counter and its parameters by the count, so the target network holds the number of gradient steps taken when
    it was last copied."""
    from common.replay import first_learning_step, first_target_copy, last_learning_step

    def count_step(setup, state, iteration):  # a gradient step: one more in the parameters
        return dataclasses.replace(state, params=state.params + 1), {}

    monkeypatch.setattr(mirl_gymnax, "learn", count_step)
    for num_envs, frequency, learning_starts in itertools.product((1, 4, 10), (3, 93, 100, 500), (0, 95, 100)):
        if train_frequency % num_envs and num_envs % train_frequency:
            continue
        args = mirl_gymnax.Args(
            num_envs=num_envs, train_frequency=train_frequency, target_network_frequency=frequency,
            learning_starts=learning_starts, total_timesteps=1200,
        )  # fmt: skip
        setup = mirl_gymnax.Setup(args, None, None, None, None, None)
        state = Counter(params=jnp.int32(0), target_params=jnp.int32(0))
        learned, copied = [], []
        step = jax.jit(lambda state, i, setup=setup: mirl_gymnax.learn_and_sync(setup, state, i))
        for iteration in range(1200 // num_envs):
            before = int(state.params)
            state, _ = step(state, jnp.int32(iteration))
            env_steps = (iteration + 1) * num_envs
            if int(state.params) > before:
                learned.append(env_steps)
            if int(state.target_params) == int(state.params) > 0 and env_steps not in copied:
                copied.append(env_steps)
        case = (num_envs, train_frequency, frequency, learning_starts)
        assert (learned[0], learned[-1]) == (first_learning_step(args), last_learning_step(args)), case
        assert int(state.params) == mirl_gymnax.gradient_steps(args), case  # the length of --anneal-lr's decay
        copies = [c for c in copied if int(c) >= learned[0]]
        assert copies[0] == first_target_copy(args, after=learned[0]), case


def test_misa_sizes_are_refused_before_anything_is_built(dataset_path):
    for overrides in (dict(total_steps=0), dict(batch_size=-1), dict(num_seeds=0), dict(eval_interval=0)):
        with pytest.raises(UserError, match="--" + next(iter(overrides)).replace("_", "-")):
            misa_d4rl.main(misa_d4rl.Args(**{**MISA_TINY, "dataset_path": dataset_path, **overrides}))
    assert run_folders() == []


def test_misa_derives_the_log_interval_and_names_the_rule(dataset_path):
    args = misa_d4rl.Args(**{**MISA_TINY, "dataset_path": dataset_path, "log_interval": None, "total_steps": 14})
    result = misa_d4rl.main(dataclasses.replace(args, eval_interval=6, log_interval=None))
    assert result["run_dir"].name.split("__")[1] == "misa"  # runs are named after the variant by default
    steps = {step for step, _ in scalars(result["run_dir"], 1)["losses/qf1_loss"]}
    assert steps == {2, 4, 6, 8, 10, 12, 14}  # gcd(1000, 6, 14) = 2
    with pytest.raises(UserError, match=r"--total-steps \(14\) must be a multiple of --log-interval \(4\)"):
        misa_d4rl.main(dataclasses.replace(args, total_steps=14, log_interval=4))


# ---- datasets ------------------------------------------------------------------------------------------------


def test_a_d4rl_name_on_a_file_of_another_environment_is_refused(dataset_path):
    """--env-id hopper-medium-v2 with a Pendulum file would name the run after Hopper and train on Pendulum."""
    with pytest.raises(DatasetError, match=r"records data of Pendulum-v1, but hopper-medium-v2 is a D4RL dataset of"):
        load_dataset("hopper-medium-v2", dataset_path)
    with pytest.raises(UserError, match=r"--env-id pendulum-random"):
        misa_d4rl.main(misa_d4rl.Args(**{**MISA_TINY, "env_id": "hopper-medium-v2", "dataset_path": dataset_path}))
    assert run_folders() == []


@pytest.mark.parametrize("key", ["terminals", "timeouts"])
def test_nan_or_non_flag_terminals_and_timeouts_are_refused(dataset_path, tmp_path, key):
    with h5py.File(dataset_path) as file:
        values = file[key][()].astype(np.float32)
    values[[5, 9]] = [np.nan, 0.5]
    bad = copy_dataset(dataset_path, tmp_path / "bad.hdf5", **{key: values})
    with pytest.raises(
        DatasetError, match=rf"{key} must be 0/1 flags; 2 row\(s\) are not \(first: \[5, 9\], values \[nan, 0.5\]"
    ):
        load_dataset("mine", bad)


def test_truncated_hdf5_is_refused_with_what_to_do(dataset_path, tmp_path):
    data = Path(dataset_path).read_bytes()
    cut = tmp_path / "cut.hdf5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="cut.hdf5 cannot be read as HDF5 .* it may be cut short"):
        load_dataset("mine", str(cut))


def test_observations_of_another_size_than_the_environment_are_refused_before_training(dataset_path, tmp_path):
    with h5py.File(dataset_path) as file:
        observations = file["observations"][()]
    wider = np.concatenate([observations, observations[:, :1]], axis=1)
    bad = copy_dataset(dataset_path, tmp_path / "wide.hdf5", observations=wider)
    with pytest.raises(
        DatasetError, match=r"observations have 4 values and its actions 1, but .*Pendulum-v1\) has 3 and 1"
    ):
        misa_d4rl.main(misa_d4rl.Args(**{**MISA_TINY, "dataset_path": bad}))
    assert run_folders() == []


def test_actions_outside_the_environment_box_are_reported(dataset_path, tmp_path):
    with h5py.File(dataset_path) as file:
        actions = file["actions"][()]
    actions[:3] = 2.5  # Pendulum's box is [−2, 2]
    bad = copy_dataset(dataset_path, tmp_path / "loud.hdf5", actions=actions)
    with pytest.warns(
        UserWarning, match=r"3 of the dataset's \d+ actions lie outside the action box \[-2.0, 2.0\] \(by up to 0.5\)"
    ):
        misa_d4rl.main(misa_d4rl.Args(**{**MISA_TINY, "dataset_path": bad, "total_steps": 5, "log_interval": 5}))


def test_a_minari_id_that_cannot_be_fetched_says_how_to_get_it(monkeypatch):
    import minari

    def offline(dataset_id, download=False):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(minari, "load_dataset", offline)
    with pytest.raises(
        DatasetError,
        match=r"medium-v0 is not stored locally .*ConnectionError.*download mujoco/hopper/medium-v0.*minari\[hf\]",
    ):
        load_dataset("mujoco/hopper/medium-v0")


def test_the_documented_install_can_download_minari_datasets():
    """The README installs misa_d4rl's dependencies with the d4rl extra; Minari downloads need its hf extra."""
    import importlib.util

    import tomllib

    assert 'pip install -e ".[d4rl]"' in (ROOT / "README.md").read_text()
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["d4rl"]
    assert any(requirement.startswith("minari[hf]") for requirement in extra)
    assert importlib.util.find_spec("huggingface_hub") is not None  # installed here through the test extra


# ---- checkpoints and --resume ---------------------------------------------------------------------------------


@pytest.fixture
def gymnax_checkpoint() -> dict:
    """A finished two-checkpoint CartPole run."""
    result = mirl_gymnax.main(mirl_gymnax.Args(save_model=True, keep_checkpoints=0, **GYMNAX_TINY))
    result["checkpoints"] = sorted((result["run_dir"] / "checkpoints").glob("step_*.eqx"))
    return result


def resume(module, path, *flags):
    return module.main(parse(module.Args, module.SCRIPT, ["--resume", str(path), *flags]))


def test_unreadable_checkpoints_are_refused_without_a_run_folder(gymnax_checkpoint, tmp_path):
    first = gymnax_checkpoint["checkpoints"][0].read_bytes()
    shutil.rmtree("runs")  # a checkpoint copied elsewhere: a failed resume must not make its run folder again
    cut, noise = tmp_path / "cut.eqx", tmp_path / "noise.eqx"
    cut.write_bytes(first[: len(first) // 2])
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(UserError, match="cut.eqx is cut short or corrupt"):
        resume(mirl_gymnax, cut)
    with pytest.raises(UserError, match="noise.eqx is not a checkpoint of this kit"):
        resume(mirl_gymnax, noise)
    with pytest.raises(UserError, match="no checkpoint file at .*missing.eqx"):
        resume(mirl_gymnax, tmp_path / "missing.eqx")
    assert run_folders() == []


def test_a_checkpoint_of_an_earlier_network_layout_names_the_array(monkeypatch):
    """Checkpoints written before the networks stored their weights (in, out) are refused, naming the array."""

    class OutIn(mirl_gymnax.Dense):  # the earlier layout: (out, in), as equinox's Linear
        def __init__(self, in_size: int, out_size: int, key):
            super().__init__(in_size, out_size, key)
            self.weight = self.weight.T

        def __call__(self, x, *, key=None):
            return x @ self.weight.T + self.bias

    with monkeypatch.context() as patch:
        patch.setattr(mirl_gymnax, "Dense", OutIn)
        result = mirl_gymnax.main(mirl_gymnax.Args(save_model=True, **GYMNAX_TINY))
    checkpoint = sorted((result["run_dir"] / "checkpoints").glob("step_*.eqx"))[-1]
    with pytest.raises(
        UserError,
        match=r"another version of the kit \(at \.params\.layers\.layers\[1\]\.weight: ValueError: an array saved as "
        r"float32\[1, 120, 4\] where float32\[1, 4, 120\] belongs\)",
    ):
        resume(mirl_gymnax, checkpoint)


def test_a_checkpoint_of_another_script_is_refused(gymnax_checkpoint, tmp_path):
    first = gymnax_checkpoint["checkpoints"][0]
    with pytest.raises(
        UserError, match="was written by mirl_gymnax.py, not misa_d4rl.py: resume it with mirl_gymnax.py"
    ):
        resume(misa_d4rl, first)
    header = read_header(first)  # one written before checkpoints named their script
    del header["script"]
    old = tmp_path / "old.eqx"
    save_checkpoint(old, gymnax_checkpoint["states"], header)
    with pytest.raises(UserError, match=r"another script or another version of misa_d4rl.py \(unknown --algo"):
        resume(misa_d4rl, old)


def test_resume_refuses_flags_it_cannot_change_and_names_them(gymnax_checkpoint):
    first = gymnax_checkpoint["checkpoints"][0]
    with pytest.raises(
        UserError, match=r"--env-id, --learning-rate cannot change on --resume \(these can: .*--total-timesteps"
    ):
        resume(mirl_gymnax, first, "--learning-rate", "1e-3", "--env-id", "Acrobot-v1")
    with pytest.raises(UserError, match=r"--total-timesteps \(800\) is below the checkpoint's step \(1000\)"):
        resume(mirl_gymnax, first, "--total-timesteps", "800")
    # a flag given with the value it already has is no change
    same = resume(mirl_gymnax, first, "--learning-rate", str(GYMNAX_TINY.get("learning_rate", 2.5e-4)))
    np.testing.assert_array_equal(same["eval_returns"], gymnax_checkpoint["eval_returns"])


def test_resume_extends_the_run_with_the_schedules_of_the_new_total(gymnax_checkpoint, capsys):
    """The ε and learning-rate schedules are defined on the total: after an extension, they are those of a run
    started with the new total, from the resume step on (docs/runs.md, Resuming)."""
    first = gymnax_checkpoint["checkpoints"][0]  # step 1000 of 2000
    extended = resume(mirl_gymnax, first, "--total-timesteps", "3000", "--log-interval", "100")
    assert (
        "with --total-timesteps 3,000 (was 2,000): from here on, ε and the learning rate follow the schedules of a run"
        in capsys.readouterr().out
    )
    logged = dict(scalars(extended["run_dir"], 1)["charts/epsilon"])
    env = mirl_gymnax.make_env("CartPole-v1")
    original = mirl_gymnax.make_setup(mirl_gymnax.Args(**GYMNAX_TINY), *env)
    longer = mirl_gymnax.make_setup(dataclasses.replace(original.args, total_timesteps=3_000), *env)
    hypers = jax.tree.map(lambda x: x[0], mirl_gymnax.stacked_hypers(grid_runs(original.args, mirl_gymnax.SWEPT_FLAGS)))
    for step in (1_100, 1_300):  # steps logged at the new --log-interval only
        iteration = step // GYMNAX_TINY["num_envs"] - 1
        assert logged[step] == pytest.approx(float(mirl_gymnax.epsilon_at(longer, hypers, iteration)))
        assert logged[step] > float(mirl_gymnax.epsilon_at(original, hypers, iteration)) + 0.05
    assert max(logged) == 3_000
    # Adam's step count goes on from the checkpoint's (one update per iteration here), so the learning rate is
    # the new schedule's at that count
    count, final_count = (np.asarray(s.opt_state[0].count) for s in (extended["states"], gymnax_checkpoint["states"]))
    assert (count == final_count + 1_000 // GYMNAX_TINY["num_envs"]).all()


def test_misa_resume_applies_the_flags_it_may_change_and_refuses_the_others(dataset_path, tmp_path):
    """misa's domain-filled flags are saved filled: given again at that value they are no change; a dataset file that
    moved is given again with --dataset-path (the saved flags name the old path, which is not read)."""
    trained_on = copy_dataset(dataset_path, tmp_path / "trained-on.hdf5")
    first = misa_d4rl.main(misa_d4rl.Args(**{**MISA_TINY, "dataset_path": trained_on, "save_model": True}))
    checkpoint = first["last_checkpoint"]
    with pytest.raises(UserError, match=r"--layer-norm cannot change on --resume"):
        resume(misa_d4rl, checkpoint, "--layer-norm", "True")
    smaller = copy_dataset(dataset_path, tmp_path / "smaller.hdf5")
    with h5py.File(smaller, "a") as file:  # one episode fewer: another dataset
        for key in ("observations", "actions", "rewards", "terminals", "timeouts"):
            values = file[key][:-200]
            del file[key]
            file[key] = values
    with pytest.raises(
        UserError, match=r"dataset rows: \d+ here, 5\d\d in the run in .*; resume it on what it trained on"
    ):
        resume(misa_d4rl, checkpoint, "--dataset-path", smaller)
    with pytest.raises(UserError, match=r"--log-interval \(15\) must divide the step this run resumes from \(20\)"):
        resume(misa_d4rl, checkpoint, "--total-steps", "30", "--eval-interval", "15", "--log-interval", "15")
    moved = str(Path(trained_on).rename(tmp_path / "moved.hdf5"))
    longer = resume(misa_d4rl, checkpoint, "--layer-norm", "False", "--dataset-path", moved, "--total-steps", "30")
    assert [s for s, _ in scalars(longer["run_dir"], 1)["eval/episodic_return"]] == [10, 20, 30]
    assert read_header(longer["last_checkpoint"])["step"] == 30


def test_non_finite_stop_before_the_first_checkpoint_says_none_yet():
    with pytest.raises(SystemExit, match=r"Last checkpoint kept: none yet$"):
        mirl_gymnax.main(
            mirl_gymnax.Args(**{**GYMNAX_TINY, "learning_rate": (1e36,), "learning_starts": 400, "save_model": True})
        )


def test_cpu_devices_after_jax_has_started_are_refused_with_what_to_do():
    """--cpu-devices can only take effect before JAX starts its backends: later (a library caller that already
    used JAX) the run is refused, not silently run on the devices JAX already has."""
    cpu_devices = jax.device_count("cpu") + 1  # JAX has started in this process now
    with pytest.raises(UserError, match=rf"--cpu-devices {cpu_devices} must be set before JAX starts.*fresh process"):
        mirl_gymnax.main(mirl_gymnax.Args(**GYMNAX_TINY, cpu_devices=cpu_devices))


# ---- logging and plotting ---------------------------------------------------------------------------------------


def test_off_a_terminal_a_status_line_reports_progress(tmp_path, capsys):
    logger = RunLogger(
        tmp_path / "run", mirl_gymnax.Args(), ["seed_1"], total_steps=100, first_step=0, status_every=0.0
    )
    logger.status_every = 0.0  # as off a terminal (under `pytest -s` on one, tqdm's bar would be on instead)
    logger.started = (0, logger.last_status - 10.0)  # training began 10 s ago

    def chunk(returns, length):  # a chunk of one logging interval
        return returns, Record(jnp.full(1, 20), {"charts/episodic_return": returns[None]}, {})

    _, records, seconds = ChunkRunner(jax.jit(chunk, static_argnums=1))(jnp.asarray([17.0]), 1)
    logger.write_chunk(records, (0, 20), seconds)
    logger.status(20)  # as the harness calls it, after the chunk's evaluation and checkpoint
    logger.close()
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("step 20/100 (20%) | ") and "SPS | episodic_return 17.0 | ETA 4" in line


FLUSH_THEN_DIE = """
import os, sys, numpy as np
from pathlib import Path
from common.logger import RunLogger
from mirl_gymnax import Args
logger = RunLogger(Path(sys.argv[1]), Args(), ["seed_1", "seed_2"], total_steps=100, first_step=0)
for step in range(1, 4):  # a burst of events right before the flush
    logger.write(step, {f"tag_{k}": np.array([step, -step]) for k in range(100)})
logger.flush()
os._exit(0)  # as a kill: no interpreter shutdown closes the writers
"""


def test_a_flush_puts_every_logged_value_on_disk(tmp_path):
    """tensorboardX's own flush does not wait for the events queued for its writer thread; RunLogger's does
    (it closes the writers). The race is timing-dependent: this checks the outcome, a hard exit right after."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", FLUSH_THEN_DIE, str(tmp_path / "run")], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr[-2000:]
    logged = scalars(tmp_path / "run", 2)
    assert all([s for s, _ in logged.get(f"tag_{k}", [])] == [1, 2, 3] for k in range(100))
    assert logged["tag_99"][-1] == (3, -3.0)


def test_a_run_that_logs_nothing_leaves_no_folder(tmp_path):
    RunLogger(tmp_path / "run", mirl_gymnax.Args(), ["seed_1", "seed_2"], total_steps=100, first_step=0).close()
    assert not (tmp_path / "run").exists()


def test_the_plot_command_says_which_pattern_matched_nothing(tmp_path):
    (tmp_path / "runs" / "CartPole-v1__mirl__1__5" / "seed_1").mkdir(parents=True)
    with pytest.raises(
        UserError,
        match=r"runs/CartPole-v1__dqn__\* matched no run directory \(the shell .*holds: CartPole-v1__mirl__1__5",
    ):
        plot.main(plot.Args(runs=[Path("runs/CartPole-v1__dqn__*")]))


def test_the_plot_commands_refuse_a_sweep_configuration_folder_naming_its_run(tmp_path):
    """A configuration folder's own name does not say its environment: passed alone, it was read as an
    environment of its own and refused with a count of seeds that did not say why."""
    run = tmp_path / "runs" / "CartPole-v1__sweep__1__5"
    (run / "alpha_rho=1e-05" / "seed_1").mkdir(parents=True)
    for main, args in ((plot.main, plot.Args), (aggregate.main, aggregate.Args)):
        with pytest.raises(UserError, match=rf"alpha_rho=1e-05 is one configuration of the sweep {run}: pass {run},"):
            main(args(runs=[run / "alpha_rho=1e-05"]))


# ---- the command line's wiring ------------------------------------------------------------------------------------


def command(script: str, *flags: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("KIT_TRACEBACK", None)
    return subprocess.run([sys.executable, str(ROOT / script), *flags], env=env, capture_output=True, text=True)


def assert_one_error_line(done: subprocess.CompletedProcess, match: str) -> None:
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], done.stderr[-3000:]
    assert run_folders() == []


def test_command_lines_answer_bad_input_with_one_line(dataset_path, tmp_path):
    assert_one_error_line(command("mirl_gymnax.py", "--total-timesteps", "0"), "--total-timesteps (0) must be positive")
    assert_one_error_line(command("mirl_gymnax.py", "--buffer-size", "4000000000"), "needs")
    assert_one_error_line(command("mirl_atari.py", "--num-seeds", "0"), "--num-seeds (0) must be positive")
    cut = tmp_path / "cut.hdf5"
    cut.write_bytes(Path(dataset_path).read_bytes()[:5000])
    assert_one_error_line(command("misa_d4rl.py", "--dataset-path", str(cut)), "cannot be read as HDF5")
    noise = tmp_path / "noise.eqx"
    noise.write_bytes(b"{}\n" + bytes(100))
    assert_one_error_line(command("misa_d4rl.py", "--resume", str(noise)), "is not a checkpoint of misa_d4rl.py")


def test_unwritable_places_are_refused_before_any_work(tmp_path):
    """A file named runs (where the run folder goes), and a plot's --out inside a file: one line, nothing run."""
    Path("runs").write_text("not a folder")
    with pytest.raises(UserError, match=r"the run folder runs cannot be made: runs is a file, not a folder"):
        mirl_gymnax.main(mirl_gymnax.Args(**GYMNAX_TINY))
    Path("runs").unlink()
    (tmp_path / "run" / "seed_1").mkdir(parents=True)
    with pytest.raises(UserError, match=r"--out's folder .*notes.txt cannot be made: .*notes.txt is a file"):
        (tmp_path / "notes.txt").write_text("")
        plot.main(plot.Args(runs=[tmp_path / "run"], out=tmp_path / "notes.txt" / "curves.png"))


def test_an_unknown_gymnax_id_names_close_ones():
    with pytest.raises(UserError, match=r"unknown env id 'CartPole-v2' \(did you mean CartPole-v1"):
        mirl_gymnax.make_env("CartPole-v2")


def test_misa_help_needs_no_dataset_libraries_and_reading_a_file_says_what_to_install(dataset_path):
    """--help on the quickstart's install (no d4rl extra: no h5py); reading a file there names the extra."""
    blocked = "import sys; sys.modules.update(dict.fromkeys(('h5py', 'minari', 'mujoco'))); import runpy; "
    main = "; runpy.run_path('misa_d4rl.py', run_name='__main__')"
    helped = subprocess.run(
        [sys.executable, "-c", blocked + "sys.argv = ['misa_d4rl.py', '--help']" + main],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert helped.returncode == 0 and "--dataset-path" in helped.stdout, helped.stderr[-2000:]
    flags = f"'--env-id', 'pendulum-random', '--dataset-path', {dataset_path!r}"
    run = f"sys.argv = ['misa_d4rl.py', {flags}]" + main
    done = subprocess.run([sys.executable, "-c", blocked + run], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        'error: reading HDF5 datasets needs h5py: pip install -e ".[d4rl]"'
    ], done.stderr[-2000:]
