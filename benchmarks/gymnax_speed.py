"""Training throughput of mirl_gymnax.py: environment steps per second, wall time and peak memory.

    python benchmarks/gymnax_speed.py    # CartPole-v1 and Breakout-MinAtar, 1, 8 and 64 seeds
    python benchmarks/gymnax_speed.py --envs CartPole-v1 --seeds 1 --steps 500000 --repeats 5

Each measurement runs in its own process: the jitted training loop is compiled first, then timed
over --steps environment steps per seed, learning from --learning-starts on (default: one batch, so
nearly the whole run is steady-state learning). The loop is the one mirl_gymnax.py runs, TensorBoard
callback included. dqn and mirl alternate over --repeats runs and the table gives medians, so the
mirl/dqn ratio is measured under the same machine load.
"""

from dataclasses import dataclass, field
from pathlib import Path

import tyro
from harness import child_main, compare, timed


@dataclass
class Args:
    envs: list[str] = field(default_factory=lambda: ["CartPole-v1", "Breakout-MinAtar"])
    """gymnax environment ids"""
    seeds: list[int] = field(default_factory=lambda: [1, 8, 64])
    """numbers of vmapped seeds"""
    algos: list[str] = field(default_factory=lambda: ["dqn", "mirl"])
    """algorithms; ratios are to the first"""
    steps: int = 50_000
    """environment steps per seed (timed)"""
    repeats: int = 3
    """runs per algorithm, interleaved; the table reports medians"""
    learning_starts: int = 128
    """environment steps before learning starts"""
    buffer_size: int = 10_000
    """replay capacity per seed"""


def measure(config: dict) -> dict:
    """Runs inside the child process."""
    import jax
    import jax.numpy as jnp

    from common.devices import seed_mesh, shard_seeds
    from common.logger import RunLogger, seed_sub_runs
    from common.loop import Chunk
    from mirl_gymnax import Args as TrainArgs
    from mirl_gymnax import make_env, make_train

    num_seeds, steps = config["num_seeds"], config["steps"]
    args = TrainArgs(
        env_id=config["env_id"],
        algo=config["algo"],
        num_seeds=num_seeds,
        total_timesteps=steps,
        learning_starts=config["learning_starts"],
        buffer_size=config["buffer_size"],
    )
    env, env_params = make_env(args.env_id)
    mesh = seed_mesh(num_seeds)
    run_dir = Path("/tmp/mirl_benchmark_runs") / f"{args.env_id}_{args.algo}_{num_seeds}"
    logger = RunLogger(run_dir, args, seed_sub_runs(range(num_seeds)), steps, 0)
    logger.progress.disable = True
    trainer = make_train(args, env, env_params, logger.jax_writer(mesh))
    keys = jax.vmap(jax.random.key)(jnp.arange(num_seeds))
    states = shard_seeds(jax.jit(jax.vmap(trainer.init))(keys), mesh)
    run = jax.jit(trainer.run, static_argnums=2, donate_argnums=0)
    result = timed(
        config,
        lambda: run.lower(states, jnp.int32(0), Chunk(steps // args.num_envs, log_phase=0)).compile(),
        lambda compiled: compiled(states, jnp.int32(0)),
        num_seeds * steps,
    )
    logger.close()
    return result


def main(args: Args) -> list[dict]:
    groups = [
        dict(
            env_id=env_id,
            num_seeds=num_seeds,
            steps=args.steps,
            learning_starts=args.learning_starts,
            buffer_size=args.buffer_size,
        )
        for env_id in args.envs
        for num_seeds in args.seeds
    ]
    return compare(
        __file__,
        groups,
        args.algos,
        args.repeats,
        lambda g: f"{g['env_id']}, {g['num_seeds']} seeds, {g['steps']:,} steps",
    )


if __name__ == "__main__":
    if not child_main(measure):
        main(tyro.cli(Args))
