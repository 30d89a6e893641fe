"""The shared helpers: logging, plotting, checkpoints, devices."""

import json
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import scalars
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from common import plot
from common.checkpoint import load_checkpoint, read_header, save_checkpoint, save_run_checkpoint
from common.devices import check_fits, cpu_devices_for
from common.errors import UserError
from common.experiment import ChunkRunner
from common.logger import Record, RunLogger, make_run_name, seed_sub_runs

ROOT = Path(__file__).resolve().parents[1]


def write_run(root: Path, name: str, seeds: list[int], offset: float, **flags) -> Path:
    run_dir = root / name
    flags = {"lr": 0.1, "seed": seeds[0], "num_seeds": len(seeds), **flags}
    logger = RunLogger(run_dir, Namespace(**flags), seed_sub_runs(seeds), total_steps=300, first_step=0)
    for step in (100, 200, 300):
        returns = np.array([offset + step / 100 + k for k in range(len(seeds))])
        logger.write(step, {"charts/episodic_return": returns, "losses/td_loss": np.full(len(seeds), np.nan)})
    for k, writer in enumerate(logger.writers):
        writer.add_scalar("eval/episodic_return", offset + 10 * k, 300)
    logger.close()
    return run_dir


def test_logger_writes_one_sub_run_per_seed_and_skips_nan(tmp_path):
    run_dir = write_run(tmp_path, "Env__exp__1__0", [1, 2], offset=0.0)
    accumulator = EventAccumulator(str(run_dir / "seed_2"))
    accumulator.Reload()
    assert [e.value for e in accumulator.Scalars("charts/episodic_return")] == [2.0, 3.0, 4.0]
    assert "losses/td_loss" not in accumulator.Tags()["scalars"]  # NaN = nothing to report
    assert "charts/SPS" not in accumulator.Tags()["scalars"]  # timed by the chunks only (see the next test)
    assert "hyperparameters/text_summary" in accumulator.Tags()["tensors"]


def test_a_chunk_s_records_are_written_with_its_speed(tmp_path):
    """Two chunks of two 100-step intervals for two seeds, with a 1 s pause between them (an evaluation, a
    checkpoint): every interval's record reaches its seed's curves at its step, and its SPS is its chunk's,
    without the pause or the compilation."""
    logger = RunLogger(tmp_path / "run", Namespace(), ["seed_1", "seed_2"], total_steps=400, first_step=0)

    def run(x, first_step, num_intervals):
        def interval(x, index):
            x = x + 1.0
            seed_values = x[:2] + jnp.asarray([0.0, 10.0])
            prior = jnp.stack([jnp.full(3, 1 / 3), jnp.full(3, jnp.nan)])  # NaN: seed 2 has nothing to report
            scalars = {"charts/episodic_return": seed_values}
            return x, Record(first_step + 100 * (index + 1), scalars, {"mirl/prior": prior})

        return jax.lax.scan(interval, x, jnp.arange(num_intervals))

    runner, x = ChunkRunner(jax.jit(run, static_argnums=2)), jnp.zeros(1000)
    for chunk in range(2):
        x, records, seconds = runner(x, jnp.int32(200 * chunk), 2)
        logger.write_chunk(records, (200 * chunk, 200 * chunk + 200), seconds)
        time.sleep(1.0)
    logger.close()
    curves = []
    for seed in ("seed_1", "seed_2"):
        accumulator = EventAccumulator(str(tmp_path / "run" / seed), size_guidance={"histograms": 0})
        accumulator.Reload()
        curves.append([(e.step, e.value) for e in accumulator.Scalars("charts/episodic_return")])
        speeds = [e.value for e in accumulator.Scalars("charts/SPS")]
        assert len(speeds) == 4 and min(speeds) > 1_000, speeds  # a pause inside a chunk: 200 steps/s or less
        priors = accumulator.Histograms("mirl/prior") if "mirl/prior" in accumulator.Tags()["histograms"] else []
        assert [e.step for e in priors] == ([100, 200, 300, 400] if seed == "seed_1" else [])
    assert curves == [
        [(100, 1.0), (200, 2.0), (300, 3.0), (400, 4.0)],
        [(100, 11.0), (200, 12.0), (300, 13.0), (400, 14.0)],
    ]


def test_bar_chart_is_a_histogram_of_the_weights(tmp_path):
    logger = RunLogger(tmp_path / "run", Namespace(), ["seed_1"], total_steps=1, first_step=0)
    logger.write(1, {}, {"mirl/prior": np.array([[0.2, 0.5, 0.3]])})
    logger.close()
    accumulator = EventAccumulator(str(tmp_path / "run" / "seed_1"), size_guidance={"histograms": 0})
    accumulator.Reload()
    histogram = accumulator.Histograms("mirl/prior")[0].histogram_value
    np.testing.assert_allclose(histogram.bucket, [0.2, 0.5, 0.3], rtol=1e-6)
    np.testing.assert_allclose(histogram.bucket_limit, [0.5, 1.5, 2.5])


def test_plot_aggregates_seeds_and_tabulates(tmp_path):
    runs = [write_run(tmp_path, "Env__dqn__1__0", [1, 2], 0.0), write_run(tmp_path, "Env__mirl__1__0", [1, 2], 5.0)]
    out = tmp_path / "curves.png"
    table = plot.main(plot.Args(runs=runs, out=out))
    assert out.stat().st_size > 10_000
    np.testing.assert_allclose(table["dqn"], [0.0, 10.0])
    np.testing.assert_allclose(table["mirl"], [5.0, 15.0])
    last_two = plot.main(
        plot.Args(runs=runs, out=out, final_tag="charts/episodic_return", final_last=2, baseline=3.0, xlabel="steps")
    )
    np.testing.assert_allclose(last_two["dqn"], [2.5, 3.5])  # seed k logged 1 + k, 2 + k, 3 + k
    with pytest.raises(UserError, match="no seed_"):
        plot.main(plot.Args(runs=[tmp_path], out=out))


def test_plot_counts_a_seed_once_and_keeps_the_latest_run_only_when_asked(tmp_path):
    """The quickstart run three times (seed 1 each time) is one seed, not three."""
    runs = [
        write_run(tmp_path, f"Env__mirl__1__{time}", [1], offset) for time, offset in ((5, 0.0), (7, 2.0), (6, 1.0))
    ]
    with pytest.raises(UserError, match=r"seed 1 of mirl \(Env\) was trained by .*Env__mirl__1__5 and by .*__6"):
        plot.main(plot.Args(runs=runs, out=tmp_path / "curves.png"))
    table = plot.main(plot.Args(runs=runs, out=tmp_path / "curves.png", latest=True))
    np.testing.assert_allclose(table["mirl"], [2.0])  # the run started last (time 7), whatever the order given
    two_seeds = [write_run(tmp_path, "Env__dqn__1__8", [1], 0.0), write_run(tmp_path, "Env__dqn__2__9", [2], 0.0)]
    assert len(plot.main(plot.Args(runs=two_seeds, out=tmp_path / "curves.png"))["dqn"]) == 2
    assert plot.curve_label("dqn", 1) == "dqn (1 seed)" and plot.curve_label("dqn", 2) == "dqn (2 seeds)"


def test_plot_refuses_to_pool_runs_of_other_flags_and_names_them(tmp_path):
    """A longer run of another seed under the same label is another experiment, not a fourth seed; the run flags
    (seeds, devices, logging) may differ."""
    short = write_run(tmp_path, "Env__mirl__1__1", [1], 0.0, total_timesteps=500_000, cpu_devices=1)
    other_seed = write_run(tmp_path, "Env__mirl__2__2", [2], 0.0, total_timesteps=500_000, cpu_devices=2)
    longer = write_run(tmp_path, "Env__mirl__3__3", [3], 0.0, total_timesteps=2_500_000, cpu_devices=1)
    assert len(plot.main(plot.Args(runs=[short, other_seed], out=tmp_path / "c.png"))["mirl"]) == 2
    with pytest.raises(UserError, match=r"--total-timesteps is 500000 in .*Env__mirl__1__1 and 2500000 in .*__3__3"):
        plot.main(plot.Args(runs=[short, other_seed, longer], out=tmp_path / "c.png"))
    labelled = plot.main(plot.Args(runs=[short, longer], labels=["mirl 500k", "mirl 2.5M"], out=tmp_path / "c.png"))
    assert sorted(labelled) == ["mirl 2.5M", "mirl 500k"]


def test_a_sweep_configuration_pools_with_a_run_of_that_single_value(tmp_path):
    """A sweep records its flag's list; each configuration is compared by its own value."""
    from tensorboardX import SummaryWriter

    swept = tmp_path / "Env__mirl__1__1"
    for configuration in ("lr=0.1", "lr=0.2"):
        writer = SummaryWriter(str(swept / configuration / "seed_1"))
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n|lr|(0.1, 0.2)|\n|seed|1|")
        writer.add_scalar("eval/episodic_return", 1.0, 300)
        writer.close()
    single = write_run(tmp_path, "Env__mirl__2__2", [2], 0.0, lr=(0.1,))
    grouped = plot.seed_runs([swept, single], ["mirl", "mirl lr=0.1"], latest=False)
    assert [s.seed for s in grouped["Env", "mirl lr=0.1"]] == [1, 2]
    assert grouped["Env", "mirl lr=0.2"][0].flags["lr"] == 0.2


def test_recorded_flags_are_the_experiments_and_read_whatever_the_values(tmp_path):
    """The harness records the flags that make the experiment (not the run flags, nor the evaluation and checkpoint
    flags a resume may change); plots read them back, empty values and values holding "|" included."""
    from common.cli import experiment_flags
    from mirl_gymnax import Args

    flags = experiment_flags(Args(seed=3, num_seeds=2, checkpoint_interval=10_000, eval_episodes=3, log_interval=100))
    assert {"seed", "num_seeds", "checkpoint_interval", "eval_episodes", "log_interval", "cpu_devices"}.isdisjoint(
        flags
    )
    assert flags["learning_rate"] == (2.5e-4,) and flags["env_id"] == "CartPole-v1"
    odd = {"env_id": "CartPole-v1", "note": "", "formula": "a|b", "learning_rate": (0.1,)}
    logger = RunLogger(tmp_path / "run", Namespace(), seed_sub_runs([1]), total_steps=1, first_step=0, experiment=odd)
    logger.write(1, {"charts/episodic_return": np.array([1.0])})
    logger.close()
    assert plot.recorded_flags(tmp_path / "run") == {**odd, "learning_rate": 0.1}


def test_latest_applies_before_the_flags_are_compared(tmp_path):
    """A seed rerun with corrected flags replaces the earlier run under --latest, and then pools with the others."""
    wrong = write_run(tmp_path, "Env__mirl__1__1", [1], 0.0, total_timesteps=1_000)
    other = write_run(tmp_path, "Env__mirl__2__2", [2], 0.0, total_timesteps=5_000)
    rerun = write_run(tmp_path, "Env__mirl__1__3", [1], 1.0, total_timesteps=5_000)
    table = plot.main(plot.Args(runs=[wrong, other, rerun], latest=True, out=tmp_path / "c.png"))
    np.testing.assert_allclose(sorted(table["mirl"]), [0.0, 1.0])


def test_plot_command_line(tmp_path):
    runs = [write_run(tmp_path, f"Env__{name}__1__0", [1], 0.0) for name in ("dqn", "mirl")]
    out = tmp_path / "cli.png"
    done = subprocess.run(
        [sys.executable, "-m", "common.plot", *map(str, runs), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert out.exists() and "| mirl | 0.0 ± 0.0 | 1 |" in done.stdout


def test_a_one_device_checkpoint_has_the_layout_of_before(tmp_path):
    """Written one device's part at a time, a one-device checkpoint is byte for byte what the kit wrote before
    (Equinox's serialisation: NumPy's .npy per leaf, keys as their key data), plus the header's process count."""
    tree = {"a": jnp.arange(6.0).reshape(2, 3), "b": jnp.asarray([True, False]), "k": jax.random.key(1), "n": 3}
    save_checkpoint(tmp_path / "new.eqx", tree, {"step": 1})
    with open(tmp_path / "before.eqx", "wb") as f:
        f.write((json.dumps({"step": 1, "processes": 1}) + "\n").encode())
        eqx.tree_serialise_leaves(f, {**tree, "k": jax.random.key_data(tree["k"])})
    assert (tmp_path / "new.eqx").read_bytes() == (tmp_path / "before.eqx").read_bytes()


def test_checkpoint_round_trip_with_keys(tmp_path):
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "key": jax.random.split(jax.random.key(3), 2), "step": jnp.int32(7)}
    save_checkpoint(tmp_path / "step_1.eqx", tree, {"iteration": 7, "args": {"seed": 3}})
    assert read_header(tmp_path / "step_1.eqx") == {"iteration": 7, "args": {"seed": 3}, "processes": 1}
    loaded = load_checkpoint(tmp_path / "step_1.eqx", jax.eval_shape(lambda: tree))
    np.testing.assert_array_equal(loaded["w"], tree["w"])
    np.testing.assert_array_equal(jax.random.key_data(loaded["key"]), jax.random.key_data(tree["key"]))
    assert not list(tmp_path.glob("*.partial"))


def test_checkpoint_errors_and_pruning(tmp_path):
    with pytest.raises(UserError, match="no checkpoint file"):
        read_header(tmp_path / "missing.eqx")
    (tmp_path / "junk.eqx").write_bytes(b"\x00\x01 not json\n")
    with pytest.raises(UserError, match="not a checkpoint"):
        read_header(tmp_path / "junk.eqx")
    for step in (3, 1, 2):
        path = save_run_checkpoint(tmp_path / "run", step, {"x": jnp.full(1, step)}, {"step": step}, keep=2)
        assert path == tmp_path / "run" / "checkpoints" / f"step_{step:09d}.eqx" and read_header(path) == {
            "step": step,
            "processes": 1,
        }
    assert sorted(p.name for p in path.parent.glob("step_*")) == ["step_000000002.eqx", "step_000000003.eqx"]


def test_check_fits_refuses_with_the_size():
    check_fits("a small thing", 1024, jax.devices(), "no hint needed")
    with pytest.raises(MemoryError, match=r"a huge thing needs 1048576\.00 GiB .* lower it"):
        check_fits("a huge thing", 2**50, jax.devices(), "lower it")


def test_cpu_devices_for_divides_the_runs_one_device_per_core_at_most():
    cases = {(1, 8): 1, (8, 2): 2, (3, 2): 1, (6, 4): 3, (8, 64): 8, (12, 8): 6, (8, 1): 1}
    assert {case: cpu_devices_for(*case) for case in cases} == cases


def test_run_name_is_cleanrl_style_and_path_safe():
    name = make_run_name("mujoco/halfcheetah/medium-v0", "misa", 3)
    assert name.startswith("mujoco-halfcheetah-medium-v0__misa__3__") and "/" not in name


def test_runs_started_in_one_second_get_their_own_folders(tmp_path, monkeypatch):
    """Two runs of one name started within a second (a loop over flags) would otherwise log into one folder: the
    first claims its folder by making it, the second takes the next second."""
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.5)  # the clock stands still
    names = [make_run_name("CartPole-v1", "mirl", 1, runs=tmp_path) for _ in range(3)]
    assert names == [f"CartPole-v1__mirl__1__{1_700_000_000 + k}" for k in range(3)]
    assert all((tmp_path / name).is_dir() for name in names)


def test_a_flush_puts_everything_on_disk_and_keeps_one_event_file(tmp_path):
    """A checkpoint flushes the logs (a run killed after it has its curves up to it): every value written so far
    is readable from disk at once, and the run keeps writing into the same event file (ten checkpoints used to
    leave eleven files per seed)."""
    logger = RunLogger(tmp_path / "run", Namespace(), seed_sub_runs([1, 2]), total_steps=300, first_step=0)
    for checkpoint in range(3):
        for step in range(100 * checkpoint + 10, 100 * checkpoint + 101, 10):
            logger.write(step, {"charts/episodic_return": np.array([step, -step], np.float64)})
        logger.flush()
        for seed, sign in ((1, 1), (2, -1)):
            logged = scalars(tmp_path / "run", seed)["charts/episodic_return"]
            assert logged == [(step, sign * step) for step in range(10, 100 * checkpoint + 101, 10)]
    logger.close()
    assert [len(list((tmp_path / "run" / f"seed_{seed}").glob("events.*"))) for seed in (1, 2)] == [1, 1]
