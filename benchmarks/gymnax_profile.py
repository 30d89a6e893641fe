"""Where mirl_gymnax.py's training iteration spends its time, and what bounds it.

    python benchmarks/gymnax_profile.py --env-id CartPole-v1 --num-seeds 8
    python benchmarks/gymnax_profile.py --env-id Breakout-MinAtar --num-seeds 1 --iterations 2000

After a warm-up that fills the replay and passes --learning-starts, the seeds' states are advanced by
scans of --iterations iterations of three programs, each compiled first and vmapped over the seeds as
`run` does it on one device (the script's default splits the CPU when there are several seeds): the whole
iteration (`iterate`), its learning phase alone (`learn_and_sync`: the gradient step and the target copy)
and its acting alone (`choose` and `observe`: the Q-network on the current observations, the environments'
step, the replay write). The three alternate over --repeats; medians.
Each program's FLOPs per iteration are XLA's cost analysis of one iteration. These programs do not donate their
state, as the script's chunks do, and XLA:CPU compiles the two differently: dqn's iteration took 183 µs here
undonated against 167–179 µs donated, mirl's 188 against 207–214 (benchmarks/mirl_cost.py times the script's own
chunks). Read these parts as shares of an iteration, not as the script's speed.

The learning phase's matrix products (every dot_general of its jaxpr, batched over the seeds as the loop
runs them) are listed with their FLOPs: the share of the work that is matmuls. Their speed alone is not
reported: the same product ran from 19 to 97 µs on this machine depending on which operand XLA fed back and
how the result was consumed (the output layout it chose), so a lone timing is no bound on the loop.
"""

import math
import statistics
import time
from dataclasses import dataclass

import jax
import jax.extend.core
import jax.numpy as jnp
import tyro

import mirl_gymnax as kit
from common.loop import Chunk, scan_tallied
from common.sweep import grid_runs


@dataclass
class Args:
    env_id: str = "CartPole-v1"
    """a gymnax environment id"""
    algo: str = "mirl"
    """mirl, sql or dqn"""
    num_seeds: int = 8
    """vmapped seeds (one seed runs without the seed axis, as in the script)"""
    iterations: int = 5_000
    """iterations per timed scan (each steps every environment once and learns once)"""
    repeats: int = 3
    """rounds; each times every program once"""


@dataclass
class Product:
    """One `lax.dot_general` of the learning phase: its operands' shapes, its FLOPs (two per multiply-add),
    and how many times one iteration runs it."""

    shapes: tuple[tuple[int, ...], ...]
    flops: int
    count: int

    @staticmethod
    def of(equation, count: int) -> "Product":
        (contracted_dims, _), _ = equation.params["dimension_numbers"]
        lhs = equation.invars[0].aval.shape
        multiply_adds = math.prod(equation.outvars[0].aval.shape) * math.prod(lhs[d] for d in contracted_dims)
        return Product(tuple(v.aval.shape for v in equation.invars), 2 * multiply_adds, count)

    def describe(self) -> str:
        return " · ".join("×".join(map(str, shape)) for shape in self.shapes)


def matrix_products(jaxpr, count: int = 1) -> list[Product]:
    """Every dot_general in `jaxpr` and the jaxprs nested in it (a cond's branches each counted once, a
    scan's body times its length, a while loop's body once), with how many times one call runs it."""
    found = []
    for equation in jaxpr.eqns:
        if equation.primitive.name == "dot_general":
            found.append(Product.of(equation, count))
        repeat = count * equation.params.get("length", 1) if equation.primitive.name == "scan" else count
        for value in equation.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    found.extend(matrix_products(sub.jaxpr, repeat))
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    found.extend(matrix_products(sub, repeat))
    return found


def warmed_up(train_args: kit.Args, warmup: int = 0) -> tuple:
    """mirl_gymnax.py's setup and trainer for `train_args`, and its seeds' states (seeds 0, 1, ...) trained past
    --learning-starts and `warmup` environment steps, to a whole logging interval; with that iteration."""
    env, env_params = kit.make_env(train_args.env_id)
    trainer = kit.make_train(train_args, env, env_params)
    hypers = kit.stacked_hypers(grid_runs(train_args, kit.SWEPT_FLAGS))
    keys = jax.vmap(jax.random.key)(jnp.arange(train_args.num_seeds))
    states = jax.jit(jax.vmap(trainer.init))(keys, hypers)
    log_every = train_args.log_every()
    iterations = max(warmup, train_args.learning_starts) // train_args.num_envs
    first = -(-iterations // log_every) * log_every  # learning from here on, from a whole interval
    states, _ = jax.jit(trainer.run, static_argnums=2)(states, jnp.int32(0), Chunk(first, log_phase=0))
    return kit.make_setup(train_args, env, env_params), trainer, states, first


def profile(args: Args) -> dict:
    """The measurements as a dict: per program its median seconds per iteration and FLOPs per iteration, and
    the learning phase's matrix products."""
    train_args = kit.Args(env_id=args.env_id, algo=args.algo, num_seeds=args.num_seeds)
    assert kit.learn_period(train_args) == train_args.num_envs, "one learning phase per iteration, as the defaults"
    setup, _, states, first = warmed_up(train_args)

    one_seed = args.num_seeds == 1  # run without the seed axis, as common.loop.scan_tallied_over_seeds does
    if one_seed:
        states = jax.tree.map(lambda x: x[0], states)

    def acting(state, i):
        state, actions, acting_tally = kit.choose(setup, state, i)
        state, episodes_tally = kit.observe(setup, state, actions, i)
        return state, acting_tally | episodes_tally

    parts = {  # each (state, i) -> (state, its tally), as the loop steps
        "whole iteration": lambda state, i: kit.iterate(setup, state, i),
        "learning phase": lambda state, i: kit.learn_and_sync(setup, state, i),
        "acting": acting,
    }
    if not one_seed:
        parts = {name: jax.vmap(part, in_axes=(0, None)) for name, part in parts.items()}

    def scanned(part):  # the tallies summed in the loop's carry, as in the script, over one interval
        def tallied(state, i):  # scan_tallied wants the tallies' seed axis, which one seed runs without
            state, tally = part(state, i)
            return state, jax.tree.map(lambda x: jnp.asarray(x)[None], tally) if one_seed else tally

        chunk, boundary = Chunk(args.iterations, log_phase=0), lambda state, i, means: (state, means)
        return jax.jit(lambda states: scan_tallied(tallied, states, iteration, chunk, args.iterations, boundary))

    iteration = jnp.int32(first)
    flops = {
        name: jax.jit(part).lower(states, iteration).compile().cost_analysis()["flops"] for name, part in parts.items()
    }
    programs = {name: scanned(part).lower(states).compile() for name, part in parts.items()}
    for program in programs.values():
        jax.block_until_ready(program(states))
    seconds = {name: [] for name in parts}
    for _ in range(args.repeats):
        for name, program in programs.items():
            start = time.perf_counter()
            jax.block_until_ready(program(states))
            seconds[name].append((time.perf_counter() - start) / args.iterations)

    products = matrix_products(jax.make_jaxpr(parts["learning phase"])(states, iteration).jaxpr)
    return {
        "programs": {name: (statistics.median(seconds[name]), flops[name]) for name in parts},
        "products": products,
    }


def report(args: Args, measured: dict) -> None:
    programs, products = measured["programs"], measured["products"]
    print(
        f"{args.env_id}, {args.algo}, {args.num_seeds} seed(s), {jax.devices()[0].device_kind}, jax {jax.__version__}"
    )
    print("\n| program | µs per iteration | MFLOP per iteration | GFLOP/s |\n|-|-|-|-|")
    for name, (seconds, flops) in programs.items():
        print(f"| {name} | {seconds * 1e6:,.0f} | {flops / 1e6:.2f} | {flops / seconds / 1e9:.1f} |")
    print("\n| matrix product of the learning phase | times per iteration | MFLOP each |\n|-|-|-|")
    for product in products:
        print(f"| {product.describe()} | {product.count} | {product.flops / 1e6:.2f} |")
    (whole, _), (learning, learning_flops) = programs["whole iteration"], programs["learning phase"]
    matmul_flops = sum(product.count * product.flops for product in products)
    print(
        f"\nThe learning phase takes {learning / whole:.0%} of the iteration's time; matrix products are "
        f"{matmul_flops / learning_flops:.0%} of its FLOPs."
    )


if __name__ == "__main__":
    cli = tyro.cli(Args)
    report(cli, profile(cli))
