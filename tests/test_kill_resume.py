"""A run killed with SIGKILL right after a checkpoint, then resumed from it on the command line: its TensorBoard
curves reach that checkpoint, and the resumed run ends with the uninterrupted run's numbers, bit for bit
(mirl_atari: envpool cannot save its emulators, so the resumed run plays new games; see docs/runs.md, Resuming)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import scalars
from test_misa_d4rl import dataset_path  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[1]
FLAGS = {
    "mirl_gymnax.py": [
        *("--total-timesteps 24000 --num-envs 4 --buffer-size 2000 --learning-starts 400 --batch-size 32").split(),
        *("--train-frequency 4 --target-network-frequency 200 --log-interval 400 --checkpoint-interval 1200").split(),
        *("--eval-episodes 2 --keep-checkpoints 0 --save-model").split(),
    ],
    "mirl_atari.py": [
        *("--env-id Pong-v5 --total-timesteps 640 --num-envs 2 --buffer-size 64 --learning-starts 32").split(),
        *("--batch-size 4 --train-frequency 2 --target-network-frequency 16 --log-interval 16").split(),
        *("--checkpoint-interval 32 --eval-interval 640 --eval-episodes 1 --max-episode-steps 64").split(),
        *("--keep-checkpoints 0 --save-model").split(),
    ],
    "misa_d4rl.py": [
        *("--env-id pendulum-random --total-steps 300 --eval-interval 10 --log-interval 5 --eval-episodes 0").split(),
        *("--hidden-size 16 --batch-size 16 --num-action-samples 4 --hmc-burn-in 1 --hmc-samples 3").split(),
        *("--keep-checkpoints 0 --save-model").split(),
    ],
}


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def command(script: str, *flags: str) -> list[str]:
    return [sys.executable, str(ROOT / script), *flags]


def environment() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def run(script: str, *flags: str) -> subprocess.CompletedProcess:
    done = subprocess.run(command(script, *flags), env=environment(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def kill_after_first_checkpoint(script: str, *flags: str) -> Path:
    """Start the run, SIGKILL it as soon as its first checkpoint is on disk, and return its newest checkpoint."""
    with open("killed.log", "w") as log:
        process = subprocess.Popen(command(script, *flags), env=environment(), stdout=log, stderr=log)
        deadline = time.monotonic() + 600
        while not list(Path("runs").glob("*/checkpoints/step_*.eqx")) and process.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint in 10 minutes"
            time.sleep(0.01)
        process.kill()
        process.wait()
    assert process.returncode == -9, Path("killed.log").read_text()[-3000:]  # killed, not finished
    return sorted(Path("runs").glob("*/checkpoints/step_*.eqx"))[-1]


def state_bytes(checkpoint: Path) -> bytes:
    """A checkpoint's arrays (everything after its JSON header line, which names the run)."""
    return checkpoint.read_bytes().split(b"\n", 1)[1]


@pytest.mark.parametrize("script", FLAGS)
def test_killed_run_keeps_its_curves_and_resumes_to_the_uninterrupted_numbers(script, request):
    flags = list(FLAGS[script])
    if script == "misa_d4rl.py":
        flags += ["--dataset-path", request.getfixturevalue("dataset_path")]
    checkpoint = kill_after_first_checkpoint(script, *flags, "--exp-name", "killed")
    step = int(checkpoint.stem.removeprefix("step_"))
    run_dir = checkpoint.parents[1]
    logged = scalars(run_dir, 1)
    tag = "losses/qf1_loss" if script == "misa_d4rl.py" else "charts/epsilon"
    logged_steps = [s for s, _ in logged.get(tag, [])]
    assert logged_steps and max(logged_steps) >= step  # the curves reach the checkpoint the run resumes from

    resumed = run(script, "--resume", str(checkpoint))
    final = sorted((run_dir / "checkpoints").glob("step_*.eqx"))[-1]
    total = int(flags[flags.index("--total-timesteps" if "mirl" in script else "--total-steps") + 1])
    assert int(final.stem.removeprefix("step_")) == total
    assert max(s for s, _ in scalars(run_dir, 1)[tag]) == total
    if script == "mirl_atari.py":
        assert "eval/episodic_return (true game score)" in resumed.stdout
        return
    run(script, *flags, "--exp-name", "uninterrupted")
    uninterrupted = sorted(Path("runs").glob(f"*__uninterrupted__*/checkpoints/step_{total:09d}.eqx"))
    assert len(uninterrupted) == 1
    assert state_bytes(final) == state_bytes(uninterrupted[0])


def test_ctrl_c_exits_130_with_one_line_naming_the_checkpoint_and_the_resume_command():
    """SIGINT (Ctrl-C) after the first checkpoint: no traceback, exit status 130, one line saying what is kept and
    the command that continues the run, the logs on disk; that command then finishes the run."""
    import signal

    script, flags = "mirl_gymnax.py", FLAGS["mirl_gymnax.py"]
    # the child gets SIGINT as a terminal has it: a suite started in the background (`cmd &`) ignores SIGINT, and a
    # child inherits an ignored signal (a handled one is reset to the default when the child starts)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            command(script, *flags), env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 600
    while not list(Path("runs").glob("*/checkpoints/step_*.eqx")) and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint in 10 minutes"
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=600)
    stderr = stderr.decode()
    assert process.returncode == 130, stderr[-3000:]
    (line,) = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    assert "Traceback" not in stderr, stderr[-3000:]
    _, _, resume = line.partition("continue with: ")
    assert resume.startswith(f"python {script} --resume runs/") and resume.endswith(".eqx"), line
    checkpoint = Path(resume.split()[-1])
    step = int(checkpoint.stem.removeprefix("step_"))
    stopped = int(line.split("stopped after step ")[1].split(":")[0].replace(",", ""))
    assert stopped >= step  # the chunks after the checkpoint ran, and are logged, but are not in it
    logged = scalars(checkpoint.parents[1], 1)["charts/epsilon"]  # written at every interval
    assert max(s for s, _ in logged) == stopped  # the logs reached the last chunk
    run(script, *resume.split()[2:])
    assert int(sorted(Path("runs").glob("*/checkpoints/step_*.eqx"))[-1].stem.removeprefix("step_")) == 24_000
