"""Gradient steps per second of misa_d4rl.py for each variant, and the ratio of each to a cql step.

    python benchmarks/misa_speed.py                                   # the CPU table: 1 and 8 seeds
    python benchmarks/misa_speed.py --seeds 1 8 32 --steps 1000       # on a GPU

Default sizes of the official code (256-256 networks, batch 256, 50 action samples, HMC with 5 + 50
transitions of 2 leapfrog steps) on a hopper-sized dataset (11-dim observations, 3-dim actions, 1M
random transitions: the sampling cost does not depend on their values). Each measurement runs in its
own process: the jitted chunk of --steps gradient steps is compiled, then timed; the variants alternate
over --repeats runs and the table gives medians.
"""

from dataclasses import dataclass, field

import tyro
from harness import child_main, compare, on_devices, timed


@dataclass
class Args:
    seeds: list[int] = field(default_factory=lambda: [1, 8])
    """numbers of vmapped seeds"""
    variants: list[str] = field(default_factory=lambda: ["cql", "misa", "misa-biased", "bc"])
    """variants; ratios are to the first"""
    steps: int = 20
    """gradient steps per seed (timed)"""
    transitions: int = 1_000_000
    """dataset size"""
    repeats: int = 3
    """runs per variant, interleaved; the table reports medians"""
    cpu_devices: list[int] = field(default_factory=lambda: [1])
    """JAX devices the host CPU is split into, the seeds sharded over them (misa_d4rl.py --cpu-devices)"""


def measure(config: dict) -> dict:
    """Runs inside the child process."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from common.devices import seed_mesh, seed_sharding, split_host_cpu
    from common.loop import Chunk
    from misa_d4rl import Args as TrainArgs
    from misa_d4rl import Batch, make_train

    num_seeds, steps, size = config["num_seeds"], config["steps"], config["transitions"]
    split_host_cpu(config.get("cpu_devices", 1), num_seeds)  # as the script does, before JAX starts
    obs_dim, act_dim = config.get("obs_dim", 11), config.get("act_dim", 3)
    args = TrainArgs(variant=config["variant"], num_seeds=num_seeds, total_steps=steps, log_interval=steps)
    rng = np.random.default_rng(0)
    dataset = Batch(
        observations=rng.normal(size=(size, obs_dim)).astype(np.float32),
        actions=rng.uniform(-0.999, 0.999, size=(size, act_dim)).astype(np.float32),
        rewards=rng.normal(size=size).astype(np.float32),
        next_observations=rng.normal(size=(size, obs_dim)).astype(np.float32),
        terminals=(rng.random(size) < 0.001).astype(np.float32),
    )
    mesh = seed_mesh(num_seeds)
    dataset = jax.device_put(dataset, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    trainer = make_train(args, obs_dim, act_dim)
    keys = jax.vmap(jax.random.key)(jnp.arange(num_seeds))
    states = jax.jit(jax.vmap(trainer.init), out_shardings=seed_sharding(mesh))(keys)  # in place, as the script
    run = jax.jit(trainer.run, static_argnums=3)
    return timed(
        config,
        lambda: run.lower(states, dataset, jnp.int32(0), Chunk(steps, 0)).compile(),
        lambda compiled: compiled(states, dataset, jnp.int32(0)),
        num_seeds * steps,
    )


if __name__ == "__main__" and not child_main(measure):
    args = tyro.cli(Args)
    groups = [
        dict(num_seeds=n, steps=args.steps, transitions=args.transitions, cpu_devices=devices)
        for n in args.seeds
        for devices in args.cpu_devices
    ]
    compare(
        __file__,
        groups,
        args.variants,
        args.repeats,
        lambda g: f"{g['num_seeds']} seeds, {g['steps']} steps" + on_devices(g),
        unit="gradient steps",
        algo_key="variant",
    )
