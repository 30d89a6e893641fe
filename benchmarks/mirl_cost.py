"""What each of mirl's equations costs over dqn's in mirl_gymnax.py's training iteration.

    python benchmarks/mirl_cost.py                    # CartPole-v1, one seed: the PureJaxRL comparison's shape
    python benchmarks/mirl_cost.py --num-seeds 8

Each variant is mirl_gymnax.py's own training chunk (`run`: the compiled program a run executes, logging
included) with some of mirl's functions swapped, in the module, for what dqn does in their place: ρ's update for
none, the logged KL for zeros, the soft value for the max, β's update for none, the greedy action on log ρ + βQ
for the greedy action on Q (whose log-softmax then also feeds ρ's update and the KL, where they are left in).
With all five swapped, what is left of mirl is dqn's iteration but for the algo's branches. Each variant
is compiled as the script compiles its chunks (the states donated) and trained from --warmup steps (past
--learning-starts) on, one variant after the other for --repeats rounds of --chunks chunks, after a round that
warms up; medians. The compile time of each chunk is given too (once). A variant's saving over mirl is what
those functions cost in the compiled iteration (XLA fuses them with their neighbours, so the savings need not add
up to the gap between mirl and dqn: the table says how much they do).
"""

import statistics
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import tyro
from gymnax_profile import warmed_up

import mirl_gymnax as kit
from common.loop import Chunk

SWAPS = {
    "ρ not updated": {"update_prior": lambda prior, mean_policy, alpha, num_states: prior},
    "no KL logged": {"kl_to_prior": lambda log_policy, log_prior: jnp.zeros(log_policy.shape[:-1])},
    "max in the target": {"soft_value": lambda q, log_prior, beta: q.max(axis=-1)},
    "β not updated": {"update_beta": lambda beta, *_: beta},
    "greedy on Q": {"greedy_logits": lambda setup, q, prior, beta: q},
}


@dataclass
class Args:
    env_id: str = "CartPole-v1"
    """a gymnax environment id"""
    num_seeds: int = 1
    """vmapped seeds (one seed runs without the seed axis, as in the script)"""
    chunks: int = 1
    """chunks timed per round, each as long as the script's (its INTERVALS_PER_CHUNK logging intervals)"""
    warmup: int = 0
    """environment steps trained before the timed chunk (at least --learning-starts: the default)"""
    repeats: int = 5
    """rounds; each times every variant once"""


def variants() -> dict[str, tuple[str, dict]]:
    """name: (algo, {module function: replacement})."""
    table = {"dqn": ("dqn", {}), "mirl": ("mirl", {})}
    table |= {f"mirl, {name}": ("mirl", swap) for name, swap in SWAPS.items()}
    return table | {"mirl, all five": ("mirl", {k: v for swap in SWAPS.values() for k, v in swap.items()})}


def compiled_chunk(args: Args, algo: str, swap: dict):
    """The variant's training chunk (`run`, as the script compiles it), the warmed-up states and the iteration they
    start from, the chunk's length and its compile seconds."""
    originals = {name: getattr(kit, name) for name in swap}
    for name, function in swap.items():
        setattr(kit, name, function)
    try:
        train_args = kit.Args(env_id=args.env_id, algo=algo, num_seeds=args.num_seeds)
        _, trainer, states, first = warmed_up(train_args, args.warmup)
        chunk = Chunk(kit.INTERVALS_PER_CHUNK * train_args.log_every(), log_phase=0)
        start = time.perf_counter()  # compiled as the script compiles it, its states donated
        run = jax.jit(trainer.run, static_argnums=2, donate_argnums=0)
        program = run.lower(states, jnp.int32(first), chunk).compile()
        compile_seconds = time.perf_counter() - start
    finally:
        for name, function in originals.items():
            setattr(kit, name, function)
    return program, [states, jnp.int32(first)], chunk.length, compile_seconds


def main(args: Args) -> dict[str, float]:
    programs = {name: compiled_chunk(args, algo, swap) for name, (algo, swap) in variants().items()}
    seconds = {name: [] for name in programs}
    for round_ in range(1 + args.repeats):  # the first round warms up
        for name, (program, inputs, iterations, _) in programs.items():
            start = time.perf_counter()
            for _ in range(args.chunks):  # each variant goes on training from where its last chunk ended
                inputs[0] = program(*inputs)[0]
                inputs[1] = inputs[1] + iterations
            jax.block_until_ready(inputs[0])
            if round_:
                seconds[name].append((time.perf_counter() - start) / (iterations * args.chunks))
    median = {name: statistics.median(values) for name, values in seconds.items()}
    mirl, dqn = median["mirl"], median["dqn"]
    print(f"{args.env_id}, {args.num_seeds} seed(s), {jax.devices()[0].device_kind}, jax {jax.__version__}, "
          f"{args.chunks} chunks × {args.repeats} rounds, from step {args.warmup:,}")  # fmt: skip
    print("\n| variant | µs per iteration (median) | all rounds | saving over mirl, µs | of mirl − dqn | compile s |")
    print("|-|-|-|-|-|-|")
    for name, value in median.items():
        rounds = " ".join(f"{s * 1e6:.0f}" for s in seconds[name])
        swapped = name.startswith("mirl,")
        share = f"{(mirl - value) / (mirl - dqn):.0%}" if mirl > dqn else "- (mirl is not slower)"
        saving = f"{(mirl - value) * 1e6:.1f} | {share}" if swapped else "|"
        print(f"| {name} | {value * 1e6:.1f} | {rounds} | {saving} | {programs[name][3]:.2f} |")
    print(f"\nmirl / dqn time per iteration: {mirl / dqn:.3f}")
    return median


if __name__ == "__main__":
    main(tyro.cli(Args))
