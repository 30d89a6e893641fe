"""Training throughput of mirl_gymnax.py: environment steps per second, wall time and peak memory.

    python benchmarks/gymnax_speed.py    # the README's table: CartPole-v1 and Breakout-MinAtar, 1, 8 and 64 seeds
    python benchmarks/gymnax_speed.py --envs CartPole-v1 --seeds 1 --steps 500000

Each configuration runs in its own process (so peak memory is its own): the jitted training loop is
compiled first, then timed over --steps environment steps per seed, learning from the first
--learning-starts steps on (default: one batch, so nearly the whole run is steady-state learning).
The loop is the one mirl_gymnax.py runs, TensorBoard callback included. The ratio of mirl's time to
dqn's is measured with both in the same invocation, back to back.
"""

import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import tyro

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Args:
    envs: list[str] = field(default_factory=lambda: ["CartPole-v1", "Breakout-MinAtar"])
    """gymnax environment ids"""
    seeds: list[int] = field(default_factory=lambda: [1, 8, 64])
    """numbers of vmapped seeds"""
    algos: list[str] = field(default_factory=lambda: ["dqn", "mirl"])
    """algorithms, compared pairwise"""
    steps: int = 50_000
    """environment steps per seed (timed)"""
    learning_starts: int = 128
    """environment steps before learning starts"""
    buffer_size: int = 10_000
    """replay capacity per seed"""
    json_out: Path | None = None
    """also write the results as JSON lines here"""


def measure(env_id: str, algo: str, num_seeds: int, steps: int, learning_starts: int, buffer_size: int) -> dict:
    """Runs inside the child process."""
    import jax
    import jax.numpy as jnp

    from common.devices import seed_mesh, shard_seeds
    from common.logger import RunLogger
    from mirl_gymnax import Args as TrainArgs
    from mirl_gymnax import make_env, make_train

    args = TrainArgs(
        env_id=env_id,
        algo=algo,
        num_seeds=num_seeds,
        total_timesteps=steps,
        learning_starts=learning_starts,
        buffer_size=buffer_size,
    )
    env, env_params = make_env(env_id)
    mesh = seed_mesh(num_seeds)
    logger = RunLogger(
        Path("/tmp/mirl_benchmark_runs") / f"{env_id}_{algo}_{num_seeds}", args, list(range(num_seeds)), steps, 0
    )
    logger.progress.disable = True
    trainer = make_train(args, env, env_params, logger.jax_writer(mesh))
    keys = jax.vmap(jax.random.key)(jnp.arange(num_seeds))
    states = shard_seeds(jax.jit(jax.vmap(trainer.init))(keys), mesh)
    iterations = steps // args.num_envs
    start = time.perf_counter()
    run = jax.jit(trainer.run, static_argnums=2, donate_argnums=0).lower(states, jnp.int32(0), iterations).compile()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    states = jax.block_until_ready(run(states, jnp.int32(0)))
    seconds = time.perf_counter() - start
    logger.close()
    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    return {
        "env_id": env_id,
        "algo": algo,
        "num_seeds": num_seeds,
        "steps_per_seed": steps,
        "device": f"{device.platform}:{device.device_kind}",
        "compile_s": round(compile_seconds, 2),
        "wall_s": round(seconds, 2),
        "env_steps_per_s": round(num_seeds * steps / seconds),
        "peak_host_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_device_mib": round(stats["peak_bytes_in_use"] / 2**20) if "peak_bytes_in_use" in stats else None,
    }


def main(args: Args) -> list[dict]:
    results = []
    columns = ["env", "seeds", "algo", "env steps/s (all seeds)", "per seed", "wall s", "compile s"]
    print("| " + " | ".join([*columns, "peak host MiB", "peak device MiB"]) + " |")
    print("|-|-|-|-|-|-|-|-|-|")
    for env_id in args.envs:
        for num_seeds in args.seeds:
            row = {}
            for algo in args.algos:
                config = [
                    env_id,
                    algo,
                    str(num_seeds),
                    str(args.steps),
                    str(args.learning_starts),
                    str(args.buffer_size),
                ]
                child = subprocess.run(
                    [sys.executable, __file__, "--child", *config], cwd=ROOT, capture_output=True, text=True
                )
                if child.returncode != 0:
                    raise SystemExit(f"{config} failed:\n{child.stderr[-3000:]}")
                result = json.loads(child.stdout.strip().splitlines()[-1])
                results.append(result)
                row[algo] = result
                print(
                    f"| {env_id} | {num_seeds} | {algo} | {result['env_steps_per_s']:,} | "
                    f"{result['env_steps_per_s'] // num_seeds:,} | {result['wall_s']} | {result['compile_s']} | "
                    f"{result['peak_host_rss_mib']:,} | {result['peak_device_mib'] or '-'} |",
                    flush=True,
                )
            if "dqn" in row and "mirl" in row:
                ratio = row["mirl"]["wall_s"] / row["dqn"]["wall_s"]
                print(f"| {env_id} | {num_seeds} | mirl/dqn time per step | **{ratio:.3f}** | | | | | |", flush=True)
    if args.json_out:
        args.json_out.write_text("".join(json.dumps(r) + "\n" for r in results))
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.path.insert(0, str(ROOT))
        env_id, algo, num_seeds, steps, learning_starts, buffer_size = sys.argv[2:]
        print(json.dumps(measure(env_id, algo, int(num_seeds), int(steps), int(learning_starts), int(buffer_size))))
    else:
        main(tyro.cli(Args))
