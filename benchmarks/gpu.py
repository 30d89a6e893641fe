"""One command for a GPU lent for a few minutes: the three scripts' throughput, compile time and memory over
seed counts. Each row is printed, and appended to --out, as soon as it is measured, so a run cut short still
leaves its figures. No row starts after --budget-s, and the last one is cut 20 s past it.

    python benchmarks/gpu.py --out gpu.md           # about 6 minutes on one H100/H200 (estimate; see below)
    python benchmarks/gpu.py --tiny --out tiny.md   # every row at toy sizes: the CPU test that keeps it working

Rows, in order of priority: mirl_gymnax (mirl) on CartPole-v1 and Breakout-MinAtar at 1/8/64/512 seeds;
misa_d4rl (misa, the official sizes on a HalfCheetah-shaped dataset) at 1/8/32 seeds; mirl_atari (mirl) on
Breakout-v5 at 1/4/8 seeds with a 1M-transition replay per seed (7.1 GB each). Each is one process running the
matching benchmarks/*_speed.py measurement; a row that cannot run (envpool not installed, out of memory) says
why in its last column. The estimate: 14 processes of about 10 s start-up and compilation each, plus their
timed loops; --budget-s keeps the whole within the lease.
"""

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness import rate, run_child

HERE = Path(__file__).resolve().parent
GRACE_S = 20.0  # the last row started may run this long past --budget-s before it is cut


@dataclass
class Args:
    out: str = "gpu_benchmark.md"
    """the Markdown file the rows are appended to"""
    tiny: bool = False
    """toy sizes, one or two seeds: the CPU test"""
    budget_s: float = 330.0
    """no row starts after this many seconds"""


def rows(tiny: bool) -> list[tuple[str, dict]]:
    """(benchmark script, configuration) for every row, in order of priority."""
    gymnax_seeds, misa_seeds, atari_seeds = ([2], [1], [1]) if tiny else ([1, 8, 64, 512], [1, 8, 32], [1, 4, 8])
    table = []
    for env_id, steps in (("CartPole-v1", 50_000), ("Breakout-MinAtar", 20_000)):
        for num_seeds in gymnax_seeds:
            config = dict(env_id=env_id, algo="mirl", num_seeds=num_seeds, steps=steps, learning_starts=128)
            table.append(("gymnax_speed.py", {**config, "buffer_size": 10_000, **({"steps": 1_000} if tiny else {})}))
    for num_seeds in misa_seeds:
        config = dict(variant="misa", num_seeds=num_seeds, steps=200, transitions=1_000_000, obs_dim=17, act_dim=6)
        table.append(("misa_speed.py", {**config, **({"steps": 2, "transitions": 5_000} if tiny else {})}))
    for num_seeds in atari_seeds:
        config = dict(env_id="Breakout-v5", algo="mirl", num_seeds=num_seeds, steps=2_000, num_envs=4)
        # the timed chunk differs from the warm-up's, so that its compilation is timed
        sizes = dict(learning_starts=40, steps=80, buffer_size=1_000) if tiny else {}
        table.append(("atari_speed.py", {**config, "learning_starts": 1_000, "buffer_size": 1_000_000, **sizes}))
    return table


HEADER = (
    "| script | configuration | seeds | steps/s (all seeds) | per seed | compile s | peak device MiB | "
    "peak host MiB | device | note |\n|-|-|-|-|-|-|-|-|-|-|"
)


def describe(script: str, config: dict) -> str:
    if script == "misa_speed.py":
        return f"misa, {config['steps']} gradient steps, batch 256, obs 17, actions 6"
    replay = f"replay {config['buffer_size']:,}"
    return f"{config['algo']}, {config['env_id']}, {config['steps']:,} env steps per seed, {replay}"


def measure_row(script: str, config: dict, timeout: float) -> str:
    label = f"| {script.removesuffix('_speed.py')} | {describe(script, config)} | {config['num_seeds']} |"
    try:
        result = run_child(str(HERE / script), config, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"{label} | | | | | | | not measured: cut at --budget-s |"
    except SystemExit as failure:  # the child's error, as its last line
        reason = str(failure).strip().splitlines()[-1][:200].replace("|", "/")
        return f"{label} | | | | | | | not measured: {reason} |"
    per_second = result["env_steps_total"] / result["wall_s"]
    return (
        f"{label} {rate(per_second)} | {rate(per_second / config['num_seeds'])} | {result['compile_s']} | "
        f"{result['peak_device_mib'] or '-'} | {result['peak_host_rss_mib']:,} | {result['device']} | |"
    )


def main(args: Args) -> list[str]:
    started = time.perf_counter()
    out = Path(args.out)
    written = []

    def emit(line: str):
        print(line, flush=True)
        with open(out, "a") as f:
            f.write(line + "\n")
        written.append(line)

    emit(HEADER)
    for script, config in rows(args.tiny):
        if time.perf_counter() - started > args.budget_s:
            emit(f"| {script.removesuffix('_speed.py')} | {describe(script, config)} | {config['num_seeds']} "
                 "| | | | | | | not started: --budget-s spent |")  # fmt: skip
            continue
        emit(measure_row(script, config, timeout=max(1.0, args.budget_s + GRACE_S - (time.perf_counter() - started))))
    emit(f"\n{json.dumps({'total_s': round(time.perf_counter() - started, 1), 'tiny': args.tiny})}")
    return written


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
