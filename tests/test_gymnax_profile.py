"""benchmarks/gymnax_profile.py, the breakdown of mirl_gymnax.py's iteration: its matrix products are the
Q-network's forward and backward passes, counted as often as they run, and its three programs split the
iteration's work."""

import sys

import jax
import jax.numpy as jnp
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import gymnax_profile  # noqa: E402


def test_products_are_counted_as_often_as_they_run():
    """A scan's body runs its length times; each branch of a cond counts once."""
    w = jnp.ones((3, 5))
    v = jnp.ones((5, 5))

    def program(x, flag):
        x = jax.lax.scan(lambda c, _: (c @ v, None), x @ w, length=4)[0]
        return jax.lax.cond(flag, lambda y: y @ v, lambda y: y, x)

    jaxpr = jax.make_jaxpr(program)(jnp.ones((2, 3)), True).jaxpr
    products = gymnax_profile.matrix_products(jaxpr)
    assert sorted((p.shapes, p.count, p.flops) for p in products) == [
        (((2, 3), (3, 5)), 1, 2 * 2 * 3 * 5),
        (((2, 5), (5, 5)), 1, 2 * 2 * 5 * 5),
        (((2, 5), (5, 5)), 4, 2 * 2 * 5 * 5),
    ]


def test_the_learning_phase_is_the_q_networks_forward_and_backward_passes():
    """CartPole's network 4 → 120 → 84 → 2, a batch of 128, two seeds: the online and target forward passes,
    every layer's weight gradient and the input gradients of the two upper layers (not of the observations)."""
    args = gymnax_profile.Args(num_seeds=2, iterations=20, repeats=1)
    measured = gymnax_profile.profile(args)
    seeds, batch, layers = 2, 128, [(4, 120), (120, 84), (84, 2)]
    per_layer = [2 * seeds * batch * fan_in * fan_out for fan_in, fan_out in layers]
    expected = 2 * sum(per_layer) + sum(per_layer) + sum(per_layer[1:])
    products = measured["products"]
    assert len(products) == 11 and all(p.count == 1 for p in products)
    assert sum(p.flops for p in products) == expected

    programs = measured["programs"]
    (_, whole_flops), (_, learning_flops), (_, acting_flops) = (
        programs[name] for name in ("whole iteration", "learning phase", "acting")
    )
    assert expected <= learning_flops < 1.1 * expected
    assert abs(whole_flops - learning_flops - acting_flops) < 0.05 * whole_flops  # the parts make the whole
    assert all(seconds > 0 for seconds, _ in programs.values())


def test_mirl_cost_swaps_the_scripts_own_functions():
    """benchmarks/mirl_cost.py swaps functions of mirl_gymnax.py by name: each must exist and take its arguments."""
    import inspect

    import mirl_cost

    import mirl_gymnax

    for swap in mirl_cost.SWAPS.values():
        for name, replacement in swap.items():
            parameters = inspect.signature(getattr(mirl_gymnax, name)).parameters
            inspect.signature(replacement).bind(*parameters)
