"""What the speed benchmarks share: each measurement in a fresh process (so peak memory is its own),
the algorithms interleaved over repeats (so the machine's drift hits them alike), medians reported.

A benchmark script defines `measure(config: dict) -> dict` (run in the child; it builds the loop and
returns `timed(...)`'s row) and calls `compare` with its configurations.
"""

import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def child_main(measure: Callable[[dict], dict]) -> bool:
    """In the child process (`script --child JSON`): measure and print the result; False in the parent."""
    if sys.argv[1:2] != ["--child"]:
        return False
    sys.path.insert(0, str(ROOT))
    print(json.dumps(measure(json.loads(sys.argv[2]))))
    return True


def run_child(script: str, config: dict, python: str = sys.executable, timeout: float | None = None) -> dict:
    """Measure `config` in a fresh process; subprocess.TimeoutExpired after `timeout` seconds."""
    child = subprocess.run(
        [python, script, "--child", json.dumps(config)], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if child.returncode != 0:
        raise SystemExit(f"{config} failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def compare(
    script: str,
    groups: list[dict],
    algos: list[str],
    repeats: int,
    label: Callable[[dict], str],
    unit: str = "env steps",
    algo_key: str = "algo",
    python: Callable[[str], str] = lambda algo: sys.executable,
    baselines: int = 1,
) -> list:
    """For each group (a configuration without its algo), run every algo `repeats` times, interleaved,
    and print one row per algo with median figures (and the devices it ran on), then the ratio of median wall
    times of every other algo to each of the first `baselines`. `unit` names what the children count in
    `env_steps_total`; `algo_key` is the config key they read; `python(algo)` is the interpreter of that algo's
    children."""
    print(
        f"| configuration | {algo_key} | {unit}/s (all seeds) | per seed | wall s (median) | wall s (all) | compile s "
        "| peak host MiB | peak device MiB |"
    )
    print("|-|-|-|-|-|-|-|-|-|")
    results = []
    for group in groups:
        runs = {algo: [] for algo in algos}
        for _ in range(repeats):
            for algo in algos:
                runs[algo].append(run_child(script, {**group, algo_key: algo}, python(algo)))
        medians = {}
        for algo in algos:
            walls = [r["wall_s"] for r in runs[algo]]
            medians[algo] = statistics.median(walls)
            last = runs[algo][-1]
            steps = last["env_steps_total"]
            devices = last.get("devices", 1)
            print(
                f"| {label(group)} | {algo}{f' ({devices} devices)' if devices > 1 else ''} | "
                f"{rate(steps / medians[algo])} | "
                f"{rate(steps / medians[algo] / group['num_seeds'])} | {medians[algo]:.2f} | "
                f"{' '.join(f'{w:.2f}' for w in walls)} | {last['compile_s']} | {last['peak_host_rss_mib']:,} | "
                f"{last['peak_device_mib'] or '-'} |",
                flush=True,
            )
            results.extend(runs[algo])
        for baseline in algos[:baselines]:
            for algo in algos[baselines:]:
                ratio = medians[algo] / medians[baseline]
                print(f"| {label(group)} | {algo}/{baseline} time per step | **{ratio:.3f}** | | | | | | |", flush=True)
    return results


def on_devices(group: dict) -> str:
    """The end of a configuration's label: the CPU devices the host was split into, where more than one (the
    seeds use as many of them as they divide over: one seed, one device)."""
    return f", {group['cpu_devices']} CPU devices" if group.get("cpu_devices", 1) > 1 else ""


def rate(per_second: float) -> str:
    """Thousands separated; three significant digits for slow loops (a MISA step on a CPU takes seconds)."""
    return f"{per_second:,.0f}" if per_second >= 100 else f"{per_second:.3g}"


def timed(config: dict, compile: Callable, execute: Callable, env_steps_total: int) -> dict:
    """In the child: compile (timed apart), then run the compiled loop to completion; the result row."""
    import time

    import jax

    start = time.perf_counter()
    compiled = compile()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(execute(compiled))
    seconds = time.perf_counter() - start
    return {
        **config,
        "compile_s": round(compile_seconds, 2),
        "wall_s": round(seconds, 3),
        "env_steps_total": env_steps_total,
        **peak_memory(),
    }


def timed_chunks(
    config: dict,
    logger: Any,
    run: Callable,
    carry: Any,
    schedule: list[tuple[int, Any]],
    arguments: Callable[[Any, int, Any], tuple],
    steps_per_iteration: int,
) -> dict:
    """In the child: a script's training loop as common.experiment runs it, `carry, records, seconds =
    runner(*arguments(carry, first, chunk))` for each (first, chunk) of `schedule` (common.loop.chunks), its records
    written to TensorBoard; every distinct chunk compiled first (timed apart), then the whole loop timed."""
    import numpy as np

    from common.experiment import ChunkRunner

    runner = ChunkRunner(run)

    def compile():
        for first, chunk in schedule:
            runner.compile(*arguments(carry, np.int32(first), chunk))

    def execute(_):
        programs, state = len(runner.compiled), carry
        for first, chunk in schedule:
            steps = (first * steps_per_iteration, (first + chunk.length) * steps_per_iteration)
            state, records, seconds = runner(*arguments(state, np.int32(first), chunk))
            logger.write_chunk(records, steps, seconds)
        assert len(runner.compiled) == programs, "a chunk compiled inside the timed loop"
        return state

    first, last = schedule[0][0], schedule[-1][0] + schedule[-1][1].length
    return timed(config, compile, execute, (last - first) * steps_per_iteration * config["num_seeds"])


def timed_mirl_gymnax(config: dict, args: Any, logged: bool = True) -> dict:
    """In the child: mirl_gymnax.py's training with `args` (its Args; no checkpoints) from seeds 0, 1, ...,
    timed as its main loop runs it (timed_chunks); or, not `logged`, as one chunk whose records are dropped
    (the loop alone, for what the logging costs)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from common.devices import seed_mesh, seed_sharding, split_host_cpu
    from common.logger import RunLogger, seed_sub_runs
    from common.loop import Chunk, chunks
    from common.sweep import grid_runs
    from mirl_gymnax import INTERVALS_PER_CHUNK, SWEPT_FLAGS, make_env, make_train, stacked_hypers

    split_host_cpu(args.cpu_devices, args.num_seeds)  # as the script does, before JAX starts
    env, env_params = make_env(args.env_id)
    trainer = make_train(args, env, env_params)
    keys = jax.vmap(jax.random.key)(jnp.arange(args.num_seeds))
    hypers = stacked_hypers(grid_runs(args, SWEPT_FLAGS))
    states = jax.jit(jax.vmap(trainer.init), out_shardings=seed_sharding(seed_mesh(args.num_seeds)))(keys, hypers)
    run = jax.jit(trainer.run, static_argnums=2, donate_argnums=0)
    total_iterations = args.total_timesteps // args.num_envs
    if not logged:
        whole = Chunk(total_iterations, log_phase=0)
        return timed(
            config,
            lambda: run.lower(states, np.int32(0), whole).compile(),
            lambda compiled: compiled(states, np.int32(0)),
            args.num_seeds * args.total_timesteps,
        )
    run_dir = Path("/tmp/mirl_benchmark_runs") / f"{args.env_id}_{config['algo']}_{args.num_seeds}"
    logger = RunLogger(run_dir, args, seed_sub_runs(range(args.num_seeds)), args.total_timesteps, 0, status_every=None)
    checkpoint_every = args.checkpoint_interval // args.num_envs
    schedule = list(chunks(0, total_iterations, args.log_every(), INTERVALS_PER_CHUNK, (checkpoint_every,)))
    result = timed_chunks(
        config, logger, run, states, schedule, lambda states, first, chunk: (states, first, chunk), args.num_envs
    )
    logger.close()
    return result


def peak_memory() -> dict:
    """Peak resident host memory of this process, and the first device's peak where the runtime reports it."""
    import resource

    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return {
        "device": f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}",
        "devices": jax.device_count(),  # those the program ran on: the host split only as far as the seeds divide
        "peak_host_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_device_mib": round(stats["peak_bytes_in_use"] / 2**20) if "peak_bytes_in_use" in stats else None,
    }
