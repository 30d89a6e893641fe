"""A hyper-parameter sweep of mirl_gymnax.py in one program against the same configurations run one after
another, each compiled on its own (what a sweep costs without hyper-parameters in the traced state).

    python benchmarks/sweep.py --steps 100000 --num-seeds 2 --repeats 3

The grid is --learning-rate 2.5e-4 1e-3 × --alpha-rho 4e-5 1e-4 (4 configurations) × --num-seeds, on
CartPole-v1 with the default flags otherwise. "grid" compiles one program and trains every configuration at
once; "separate" compiles and trains each configuration in turn, its compile and wall times the sums over the
four. Each row is measured in a fresh process, the two interleaved over the repeats, medians reported.
"""

from dataclasses import dataclass
from pathlib import Path

import tyro
from harness import child_main, compare, peak_memory

GRID = {"learning_rate": (2.5e-4, 1e-3), "alpha_rho": (4e-5, 1e-4)}


def measure(config: dict) -> dict:
    import dataclasses
    import itertools
    import time

    import jax
    import jax.numpy as jnp

    from common.loop import Chunk
    from common.sweep import grid_runs
    from mirl_gymnax import SWEPT_FLAGS, Args, make_env, make_train, stacked_hypers

    args = Args(num_seeds=config["seeds_per_configuration"], total_timesteps=config["steps"])
    if config["mode"] == "grid":
        programs = [dataclasses.replace(args, **GRID)]
    else:
        programs = [
            dataclasses.replace(args, **{name: (value,) for name, value in zip(GRID, values, strict=True)})
            for values in itertools.product(*GRID.values())
        ]
    env, env_params = make_env(args.env_id)
    compile_seconds = seconds = 0.0
    for program in programs:
        runs = grid_runs(program, SWEPT_FLAGS)
        trainer = make_train(program, env, env_params)
        keys = jax.vmap(jax.random.key)(jnp.asarray([run.seed for run in runs]))
        states = jax.jit(jax.vmap(trainer.init))(keys, stacked_hypers(runs))
        chunk = Chunk(program.total_timesteps // program.num_envs, log_phase=0)
        start = time.perf_counter()
        compiled = jax.jit(trainer.run, static_argnums=2, donate_argnums=0).lower(states, jnp.int32(0), chunk).compile()
        compile_seconds += time.perf_counter() - start
        start = time.perf_counter()
        jax.block_until_ready(compiled(states, jnp.int32(0)))
        seconds += time.perf_counter() - start
    return {
        **config,
        "compile_s": round(compile_seconds, 2),
        "wall_s": round(compile_seconds + seconds, 3),
        "env_steps_total": config["num_seeds"] * config["steps"],
        **peak_memory(),
    }


@dataclass
class Args:
    steps: int = 100_000
    """environment steps per seed and configuration"""
    num_seeds: int = 2
    """seeds per configuration"""
    repeats: int = 3
    """measurements of each mode, interleaved"""


def main(args: Args) -> list[dict]:
    runs = 4 * args.num_seeds  # "per seed" in the table: per (configuration, seed)
    group = {"steps": args.steps, "seeds_per_configuration": args.num_seeds, "num_seeds": runs}
    return compare(
        str(Path(__file__).resolve()),
        [group],
        ["separate", "grid"],
        args.repeats,
        lambda g: (
            f"CartPole-v1, 2×2 grid × {g['seeds_per_configuration']} seeds, {g['steps']:,} steps, compiling included"
        ),
        algo_key="mode",
    )


if __name__ == "__main__":
    if not child_main(measure):
        main(tyro.cli(Args))
