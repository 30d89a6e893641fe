"""Dense and LayerNorm as flax.linen's defaults make and compute them (the official MISA code is Flax): hidden kernels
lecun-normal, output kernels variance-scaling(1e-2, fan-in, uniform), zero biases; LayerNorm with ε = 1e-6."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

hidden_init = jax.nn.initializers.lecun_normal()  # truncated normal, fan-in, scale 1 (flax.linen.Dense)
output_init = jax.nn.initializers.variance_scaling(1e-2, "fan_in", "uniform")


class Dense(eqx.Module):
    weight: jax.Array  # [in, out]: works on any leading batch axes
    bias: jax.Array

    def __init__(self, in_size: int, out_size: int, key: jax.Array, init: Callable = hidden_init):
        self.weight = init(key, (in_size, out_size), jnp.float32)
        self.bias = jnp.zeros(out_size)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.weight + self.bias


class LayerNorm(eqx.Module):
    """flax.linen.LayerNorm over the last axis (ε = 1e-6, learned scale and bias)."""

    scale: jax.Array
    bias: jax.Array

    def __init__(self, size: int):
        self.scale = jnp.ones(size)
        self.bias = jnp.zeros(size)

    def __call__(self, x: jax.Array) -> jax.Array:
        mean = x.mean(axis=-1, keepdims=True)
        variance = jnp.square(x - mean).mean(axis=-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(variance + 1e-6) * self.scale + self.bias
