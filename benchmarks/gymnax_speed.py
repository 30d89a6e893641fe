"""Training throughput of mirl_gymnax.py: environment steps per second, wall time and peak memory.

    python benchmarks/gymnax_speed.py    # CartPole-v1 and Breakout-MinAtar, 1, 8 and 64 seeds
    python benchmarks/gymnax_speed.py --envs CartPole-v1 --seeds 1 --steps 500000 --repeats 5

Each measurement runs in its own process: the jitted training loop is compiled first, then timed
over --steps environment steps per seed, learning from --learning-starts on (default: one batch, so
nearly the whole run is steady-state learning). The loop runs as mirl_gymnax.py runs it, in chunks
whose records are written to TensorBoard. dqn and mirl alternate over --repeats runs and the table gives
medians, so the mirl/dqn ratio is measured under the same machine load.
"""

from dataclasses import dataclass, field

import tyro
from harness import child_main, compare, on_devices, timed_mirl_gymnax


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
    cpu_devices: list[int] = field(default_factory=lambda: [1])
    """JAX devices the host CPU is split into, the seeds sharded over them (mirl_gymnax.py --cpu-devices)"""


def measure(config: dict) -> dict:
    """Runs inside the child process."""
    from mirl_gymnax import Args as TrainArgs

    args = TrainArgs(
        env_id=config["env_id"],
        algo=config["algo"],
        num_seeds=config["num_seeds"],
        total_timesteps=config["steps"],
        learning_starts=config["learning_starts"],
        buffer_size=config["buffer_size"],
        cpu_devices=config.get("cpu_devices", 1),
    )
    return timed_mirl_gymnax(config, args)


def main(args: Args) -> list[dict]:
    groups = [
        dict(
            env_id=env_id,
            num_seeds=num_seeds,
            steps=args.steps,
            learning_starts=args.learning_starts,
            buffer_size=args.buffer_size,
            cpu_devices=cpu_devices,
        )
        for env_id in args.envs
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
