"""Do the kit's CPU workarounds still pay on the installed XLA? Each is timed against the plain version it
replaces, after compilation, the cases interleaved over the repeats; medians.

- `scan_tallied_over_seeds`: one seed runs without its seed axis (against vmap over a batch of one), CartPole-v1;
- `unroll_threefry_on_cpu`: JAX's threefry hash as straight-line code (against JAX's CPU loop), CartPole-v1;
- `PatchConv`: the MinAtar convolution as a matmul over patches (against equinox's Conv2d), Breakout-MinAtar.

    python benchmarks/cpu_workarounds.py --repeats 5
"""

import statistics
import time
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import tyro

import mirl_gymnax
from common.cpu import unroll_threefry_on_cpu
from common.loop import scan_tallied
from common.sweep import grid_runs


class NativeConv(eqx.Module):
    """PatchConv's interface on XLA's own convolution."""

    conv: eqx.nn.Conv2d

    def __init__(self, in_channels: int, out_channels: int, size: int, key: jax.Array, stride: int = 1):
        self.conv = eqx.nn.Conv2d(in_channels, out_channels, size, stride, key=key)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        return jnp.transpose(self.conv(jnp.transpose(x, (2, 0, 1))), (1, 2, 0))


def compiled_run(env_id: str, steps: int, plain_vmap=False, threefry_loop=False, native_conv=False):
    """A one-seed run of `steps` environment steps (learning from step 10k), compiled; the named workarounds
    swapped for the plain versions while the program is built."""
    args = mirl_gymnax.Args(env_id=env_id, total_timesteps=steps, learning_starts=10_000, buffer_size=10_000)
    env, env_params = mirl_gymnax.make_env(env_id)
    kept = mirl_gymnax.scan_tallied_over_seeds, mirl_gymnax.PatchConv
    if plain_vmap:
        mirl_gymnax.scan_tallied_over_seeds = lambda step, *rest: scan_tallied(jax.vmap(step, in_axes=(0, None)), *rest)
    if native_conv:
        mirl_gymnax.PatchConv = NativeConv
    unroll_threefry_on_cpu(unrolled=not threefry_loop)
    try:
        trainer = mirl_gymnax.make_train(args, env, env_params)
        hypers = mirl_gymnax.stacked_hypers(grid_runs(args, mirl_gymnax.SWEPT_FLAGS))
        states = jax.jit(jax.vmap(trainer.init))(jax.random.key(0)[None], hypers)
        chunk = mirl_gymnax.Chunk(steps // args.num_envs, log_phase=0)
        compiled = jax.jit(trainer.run, static_argnums=2).lower(states, jnp.int32(0), chunk).compile()
    finally:
        mirl_gymnax.scan_tallied_over_seeds, mirl_gymnax.PatchConv = kept
        unroll_threefry_on_cpu()
    return lambda: jax.block_until_ready(compiled(states, jnp.int32(0)))


@dataclass
class Args:
    repeats: int = 5
    """rounds; each times every case once"""
    cartpole_steps: int = 100_000
    """environment steps of the CartPole runs"""
    minatar_steps: int = 30_000
    """environment steps of the Breakout-MinAtar runs"""


def main(args: Args) -> None:
    cartpole, minatar = ("CartPole-v1", args.cartpole_steps), ("Breakout-MinAtar", args.minatar_steps)
    pairs = {
        "one seed without its axis (CartPole-v1)": (compiled_run(*cartpole), compiled_run(*cartpole, plain_vmap=True)),
        "unroll_threefry_on_cpu (CartPole-v1, 1 seed)": (
            compiled_run(*cartpole),
            compiled_run(*cartpole, threefry_loop=True),
        ),
        "PatchConv (Breakout-MinAtar, 1 seed)": (compiled_run(*minatar), compiled_run(*minatar, native_conv=True)),
    }
    times = {name: ([], []) for name in pairs}
    for _ in range(args.repeats):
        for name, runs in pairs.items():
            for run, record in zip(runs, times[name], strict=True):
                began = time.perf_counter()
                run()
                record.append(time.perf_counter() - began)
    print("| workaround | with it, s (median) | plain, s (median) | plain / with |")
    print("|-|-|-|-|")
    for name, (kit, plain) in times.items():
        kit_median, plain_median = statistics.median(kit), statistics.median(plain)
        print(f"| {name} | {kit_median:.2f} | {plain_median:.2f} | **{plain_median / kit_median:.2f}** |")


if __name__ == "__main__":
    main(tyro.cli(Args))
