"""misa_d4rl.py's learner against the official MISA learner (github.com/sail-sg/MISA, algos/misa.py) at the
official sizes on HalfCheetah shapes: observations 17, actions 6, batch 256, 256-256 networks, the misa
variant with its HMC; steady-state gradient steps per second of one seed, compilation timed apart.

    python benchmarks/misa_official.py --official-dir MISA --official-python PYTHON --repeats 5

MISA is a checkout of the official code with only the renames today's JAX needs (`jax.tree_multimap` and
`jax.tree_map` to `jax.tree.map`, `jnp.clip`'s `a_min`/`a_max` to `min`/`max`), the renames made for the
official reference numbers that tests/test_misa_official.py checks; PYTHON has the same JAX as this kit's
plus flax, optax, distrax, tfp-nightly and ml_collections. Its code stays in its checkout: this script only
imports its classes.

The official learner is timed as its training loop calls it, `MISA.train(batch)` once per step (one jitted
step, dispatched from Python), on one batch already on the device, after two warm-up calls (the first
update turns `TrainState.step` from a Python int into an array, so it compiles twice). Ours is the script's
compiled chunk of --steps steps, which also samples each batch from a 1M-transition dataset on the device.
Every measurement runs in its own process, the two interleaved over --repeats; medians.
"""

import sys
from dataclasses import dataclass
from pathlib import Path

from harness import child_main, compare

SHAPES = dict(obs_dim=17, act_dim=6)


@dataclass
class Args:
    official_dir: str
    """a checkout of sail-sg/MISA with the renames above"""
    official_python: str
    """an interpreter that imports jax, flax, optax, distrax, tfp-nightly and ml_collections"""
    steps: int = 20
    """gradient steps timed per measurement"""
    repeats: int = 5
    """runs per learner, interleaved; the table reports medians"""


def measure_official(config: dict) -> dict:
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, config["official_dir"])
    from algos.misa import MISA
    from algos.model import FullyConnectedQFunction, TanhGaussianPolicy
    from harness import peak_memory
    from utilities.jax_utils import init_rng

    init_rng(0)
    obs_dim, act_dim = SHAPES["obs_dim"], SHAPES["act_dim"]
    policy = TanhGaussianPolicy(obs_dim, act_dim, "256-256", False, 1.0, -1.0, use_layer_norm=False)
    qf = FullyConnectedQFunction(obs_dim, act_dim, "256-256", False, False, "elu")  # the official defaults
    agent = MISA(MISA.get_default_config({"target_entropy": -float(act_dim)}), policy, qf)
    rng = np.random.default_rng(0)
    batch = {
        "observations": jnp.asarray(rng.normal(size=(256, obs_dim)), jnp.float32),
        "actions": jnp.asarray(rng.uniform(-0.999, 0.999, size=(256, act_dim)), jnp.float32),
        "rewards": jnp.asarray(rng.normal(size=256), jnp.float32),
        "next_observations": jnp.asarray(rng.normal(size=(256, obs_dim)), jnp.float32),
        "dones": jnp.asarray(rng.random(256) < 0.01, jnp.float32),
    }
    start = time.perf_counter()
    for _ in range(2):
        jax.block_until_ready(agent.train(batch))
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(config["steps"]):
        metrics = agent.train(batch)
    jax.block_until_ready(metrics)
    return {
        **config,
        "compile_s": round(compile_seconds, 2),
        "wall_s": round(time.perf_counter() - start, 3),
        "env_steps_total": config["steps"],
        **peak_memory(),
    }


def measure(config: dict) -> dict:
    """Runs inside the child process."""
    if config["learner"] == "official":
        return measure_official(config)
    import misa_speed

    return misa_speed.measure({**config, "variant": "misa", "transitions": 1_000_000, **SHAPES})


def main(args: Args) -> list[dict]:
    group = dict(num_seeds=1, steps=args.steps, official_dir=str(Path(args.official_dir).resolve()))
    return compare(
        __file__,
        [group],
        ["official", "kit"],
        args.repeats,
        lambda g: f"misa, HalfCheetah shapes, 1 seed, {g['steps']} steps",
        unit="gradient steps",
        algo_key="learner",
        python=lambda learner: args.official_python if learner == "official" else sys.executable,
    )


if __name__ == "__main__":
    if not child_main(measure):
        import tyro

        main(tyro.cli(Args))
