"""Training throughput of mirl_atari.py: environment steps per second, wall time and peak memory.

    python benchmarks/atari_speed.py                     # Breakout-v5, 1 and 4 seeds (the CPU table)
    python benchmarks/atari_speed.py --seeds 1 4 8 --steps 20000 --buffer-size 1000000    # on a GPU

Each measurement runs in its own process: the whole jitted loop (envpool's XLA step, the frame
replay, one update of batch 32 every 4 environment steps, target syncs, ρ, β, the interval records) is
compiled, the replay is filled past --learning-starts by a first untimed chunk, and then --steps
environment steps per seed are timed, in chunks as mirl_atari.py runs them (records, where a logging
interval ends, written to TensorBoard). dqn and mirl alternate over --repeats runs; the table gives medians.
"""

from dataclasses import dataclass, field
from pathlib import Path

import tyro
from harness import child_main, compare, on_devices, timed_chunks


@dataclass
class Args:
    env_id: str = "Breakout-v5"
    """envpool Atari game"""
    seeds: list[int] = field(default_factory=lambda: [1, 4])
    """numbers of seeds (one pool of seeds × num-envs environments)"""
    algos: list[str] = field(default_factory=lambda: ["dqn", "mirl"])
    """algorithms; ratios are to the first"""
    steps: int = 2_000
    """environment steps per seed (timed, after the warm-up)"""
    num_envs: int = 4
    """environments per seed (mirl_atari.py's default)"""
    learning_starts: int = 1_000
    """environment steps per seed before learning starts (the untimed warm-up)"""
    buffer_size: int = 100_000
    """replay capacity per seed (1,000,000 is the default of mirl_atari.py: 7.1 GB per seed)"""
    repeats: int = 3
    """runs per algorithm, interleaved; the table reports medians"""
    cpu_devices: list[int] = field(default_factory=lambda: [1])
    """JAX devices the host CPU is split into, the seeds sharded over them (mirl_atari.py --cpu-devices)"""


def measure(config: dict) -> dict:
    """Runs inside the child process."""
    import jax
    import jax.numpy as jnp

    from common.devices import seed_mesh, seed_sharding, shard_seeds, split_host_cpu
    from common.logger import RunLogger, seed_sub_runs
    from common.loop import Chunk, chunks
    from mirl_atari import Args as TrainArgs
    from mirl_atari import make_train, open_pools, reset_pools, sharded_env_step

    num_seeds, steps, warmup = config["num_seeds"], config["steps"], config["learning_starts"]
    split_host_cpu(config.get("cpu_devices", 1), num_seeds)  # as the script does, before JAX starts
    args = TrainArgs(
        env_id=config["env_id"],
        algo=config["algo"],
        num_seeds=num_seeds,
        num_envs=config["num_envs"],
        total_timesteps=warmup + steps,
        learning_starts=warmup,
        buffer_size=config["buffer_size"],
        log_interval=warmup,  # the timed chunk starts a logging interval, as every chunk must
    )
    seeds = list(range(1, num_seeds + 1))
    mesh = seed_mesh(num_seeds)
    pools, pool_steps, handles = open_pools(args, seeds, mesh, training=True)
    run_dir = Path("/tmp/mirl_benchmark_runs") / f"{args.env_id}_{args.algo}_{num_seeds}"
    logger = RunLogger(run_dir, args, seed_sub_runs(seeds), args.total_timesteps, 0, status_every=None)
    env_step = sharded_env_step(pool_steps, mesh, args.num_envs)
    trainer = make_train(args, int(pools[0].action_space.n), (4, 84, 84), env_step, env_step)
    obs = shard_seeds(jnp.asarray(reset_pools(pools, num_seeds)), mesh)
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))
    states = jax.jit(jax.vmap(trainer.init), out_shardings=seed_sharding(mesh))(keys, obs)  # in place, as the script
    warmup_iterations, total_iterations = warmup // args.num_envs, args.total_timesteps // args.num_envs
    run = jax.jit(trainer.run, static_argnums=3, donate_argnums=0)
    warmup_chunk = Chunk.starting_at(0, warmup_iterations, args.log_every())
    states, _ = jax.block_until_ready(run(states, handles, jnp.int32(0), warmup_chunk))
    ends_every = (args.eval_interval // args.num_envs, args.checkpoint_interval // args.num_envs)
    result = timed_chunks(
        config,
        logger,
        run,
        states,
        list(chunks(warmup_iterations, total_iterations, args.log_every(), max(1, steps // warmup), ends_every)),
        lambda states, first, chunk: (states, handles, first, chunk),
        args.num_envs,
    )
    logger.close()
    return result


def main(args: Args) -> list[dict]:
    groups = [
        dict(
            env_id=args.env_id,
            num_seeds=num_seeds,
            steps=args.steps,
            num_envs=args.num_envs,
            learning_starts=args.learning_starts,
            buffer_size=args.buffer_size,
            cpu_devices=cpu_devices,
        )
        for num_seeds in args.seeds
        for cpu_devices in args.cpu_devices
    ]
    return compare(
        __file__,
        groups,
        args.algos,
        args.repeats,
        lambda g: f"{g['env_id']}, {g['num_seeds']} seeds, {g['steps']:,} steps" + on_devices(g),
    )


if __name__ == "__main__":
    if not child_main(measure):
        main(tyro.cli(Args))
