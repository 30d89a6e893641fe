"""mirl_gymnax.py against PureJaxRL's DQN (github.com/luchris429/purejaxrl, purejaxrl/dqn.py) on its own
CartPole-v1 configuration: 10 environments, a 10k replay, batch 128 every 10 environment steps, target copy
every 500, learning from 10k steps, ε from 1 to 0.05 over the first half of 500k steps, constant learning rate.

    python benchmarks/purejaxrl.py --peer-dir PUREJAXRL --peer-python PYTHON --seeds 1 8 --repeats 5

PUREJAXRL is a checkout of PureJaxRL with its dqn.py patched only as gymnax 1.x needs: `env.step` returns
(obs, state, reward, terminated, truncated, info), where PureJaxRL reads a `done` = terminated or truncated,
and `jax.tree_map` is `jax.tree.map`. PYTHON is an interpreter with the same JAX as this kit's plus
PureJaxRL's flax, flashbax, chex and wandb, and equinox for the kit's lowering (docs/benchmarks.md shows one
way). The peer's code stays
in its checkout: this script only imports its `make_train`.

Both sides get the same devices: with --cpu-devices N (N > 1) the host CPU is split into N JAX devices for each,
our script shards its seeds over them, and PureJaxRL's unmodified `jit(vmap(make_train))` runs under `shard_map`
over the same N (where the seeds divide; one seed runs on one device on both sides). Each row names the devices
its program ran on. Importing the kit installs its threefry lowering (common.cpu.unroll_threefry_on_cpu), which
JAX's own lowering lacks: `purejaxrl-dqn` is the peer as published, `purejaxrl-dqn-threefry` the peer given that
lowering, and the table gives every ratio to both.

Every measurement runs in its own process (harness.py): the jitted loop is compiled first, then the whole run
is timed. PureJaxRL's program holds its initialisation (microseconds of work); ours starts from an initialised
state. Ours runs as the script does: in chunks of 50,000 steps that return their records of every 5,000
steps, written to TensorBoard; `dqn` and `mirl` use a constant learning rate like the peer, and
`mirl-defaults` is `python mirl_gymnax.py` as it stands (its learning rate decays); `mirl-unlogged` is the
loop alone (one chunk, its records dropped, constant learning rate), so mirl-defaults over mirl-unlogged is
what the defaults cost. The table's ratios are each row's median wall time over PureJaxRL's, in one
interleaved run.
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness import child_main, compare, on_devices, timed, timed_mirl_gymnax

PEERS = ("purejaxrl-dqn", "purejaxrl-dqn-threefry")  # as published; given the kit's threefry lowering
PEER_CONFIG = {
    "NUM_ENVS": 10,
    "BUFFER_SIZE": 10_000,
    "BUFFER_BATCH_SIZE": 128,
    "EPSILON_START": 1.0,
    "EPSILON_FINISH": 0.05,
    "TARGET_UPDATE_INTERVAL": 500,
    "LR": 2.5e-4,
    "LEARNING_STARTS": 10_000,
    "TRAINING_INTERVAL": 10,
    "LR_LINEAR_DECAY": False,
    "GAMMA": 0.99,
    "TAU": 1.0,
    "ENV_NAME": "CartPole-v1",
    "WANDB_MODE": "disabled",
}


@dataclass
class Args:
    peer_dir: str
    """a checkout of luchris429/purejaxrl, patched for gymnax 1.x (see above)"""
    peer_python: str
    """an interpreter that imports jax, flax, flashbax, chex, wandb and gymnax"""
    seeds: list[int] = field(default_factory=lambda: [1, 8])
    """numbers of vmapped seeds"""
    steps: int = 500_000
    """environment steps per seed"""
    repeats: int = 5
    """runs per program, interleaved; the table reports medians"""
    algos: list[str] = field(default_factory=lambda: [*PEERS, "dqn", "mirl", "mirl-defaults", "mirl-unlogged"])
    """programs; the purejaxrl ones first, and every other's ratio is given to each of them"""
    cpu_devices: list[int] = field(default_factory=lambda: [1])
    """JAX devices the host CPU is split into, for both sides (ours: mirl_gymnax.py --cpu-devices; the peer:
    shard_map over them), where the seeds divide"""


def measure(config: dict) -> dict:
    """Runs inside the child process."""
    import jax

    steps, num_seeds = config["steps"], config["num_seeds"]
    if config["algo"].startswith("purejaxrl-dqn"):
        from common.devices import cpu_devices_for, usable_cores

        # the kit's choice for its own seeds: the most devices, up to the split asked for, that the seeds divide over
        devices = cpu_devices_for(num_seeds, config["cpu_devices"] or usable_cores())
        jax.config.update("jax_num_cpu_devices", devices)  # before JAX starts, as the kit's split
        if config["algo"] == "purejaxrl-dqn-threefry":
            from common.cpu import unroll_threefry_on_cpu

            unroll_threefry_on_cpu()
        sys.path.insert(0, str(Path(config["peer_dir"]) / "purejaxrl"))
        from dqn import make_train as make_peer_train

        peer_config = {
            **PEER_CONFIG,
            "TOTAL_TIMESTEPS": steps,
            "EPSILON_ANNEAL_TIME": steps // 2,
            "NUM_SEEDS": num_seeds,
        }
        keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
        train = jax.vmap(make_peer_train(peer_config))
        if devices > 1:  # the seeds split over the devices, each running its part of the unmodified program
            mesh, seeds = jax.make_mesh((devices,), ("seeds",)), jax.sharding.PartitionSpec("seeds")
            train = jax.shard_map(train, mesh=mesh, in_specs=seeds, out_specs=seeds, check_vma=False)
            keys = jax.device_put(keys, jax.sharding.NamedSharding(mesh, seeds))
        train = jax.jit(train)
        return timed(config, lambda: train.lower(keys).compile(), lambda compiled: compiled(keys), num_seeds * steps)

    from mirl_gymnax import Args as TrainArgs

    algo, variant = config["algo"].partition("-")[::2]
    args = TrainArgs(
        algo=algo,
        num_seeds=num_seeds,
        total_timesteps=steps,
        anneal_lr=variant == "defaults",
        cpu_devices=config["cpu_devices"],
    )
    return timed_mirl_gymnax(config, args, logged=variant != "unlogged")


def main(args: Args) -> list[dict]:
    from common.errors import plural  # the parent runs in the kit's interpreter; the peer's children may lack it

    peer_dir = str(Path(args.peer_dir).resolve())
    groups = [
        dict(num_seeds=n, steps=args.steps, cpu_devices=devices, peer_dir=peer_dir)
        for n in args.seeds
        for devices in args.cpu_devices
    ]
    return compare(
        __file__,
        groups,
        args.algos,
        args.repeats,
        lambda g: f"CartPole-v1, {plural(g['num_seeds'], 'seed')}, {g['steps']:,} steps" + on_devices(g),
        python=lambda algo: args.peer_python if algo.startswith("purejaxrl") else sys.executable,
        baselines=sum(algo.startswith("purejaxrl") for algo in args.algos),
    )


if __name__ == "__main__":
    if not child_main(measure):
        import tyro

        main(tyro.cli(Args))
