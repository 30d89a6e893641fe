"""What makes XLA:CPU fast without changing a number: layers in the layouts it runs best, and JAX's threefry hash as
straight-line code (the third, one seed run without its seed axis, is common.loop.scan_tallied_over_seeds).
benchmarks/cpu_workarounds.py times each against the plain version it replaces."""

import importlib
import math

import equinox as eqx
import jax
import jax.numpy as jnp


class Dense(eqx.Module):
    """x @ W + b with W stored (in, out), as flax stores it. equinox's Linear stores (out, in), and XLA:CPU runs the
    batched weight-gradient products of that layout on a slower kernel (docs/benchmarks.md, PureJaxRL)."""

    weight: jax.Array
    bias: jax.Array

    def __init__(self, in_size: int, out_size: int, key: jax.Array):
        # equinox's and PyTorch's default initialisation: weights and biases uniform in ±1/√in_size
        weight_key, bias_key = jax.random.split(key)
        bound = 1.0 / math.sqrt(in_size)
        self.weight = jax.random.uniform(weight_key, (in_size, out_size), minval=-bound, maxval=bound)
        self.bias = jax.random.uniform(bias_key, (out_size,), minval=-bound, maxval=bound)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        return x @ self.weight + self.bias


class PatchConv(eqx.Module):
    """A valid k×k convolution with stride s on one (height, width, channels) image, written as a matmul
    over its k×k patches: the same function as a convolution, and faster on XLA:CPU, whose native
    convolution gradient makes a whole Breakout-MinAtar run 2.2× slower."""

    linear: Dense  # weights in patch order: (row, column, channel) × out_channels
    size: int = eqx.field(static=True)
    stride: int = eqx.field(static=True)

    def __init__(self, in_channels: int, out_channels: int, size: int, key: jax.Array, stride: int = 1):
        self.linear = Dense(size * size * in_channels, out_channels, key=key)
        self.size, self.stride = size, stride

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        rows = (x.shape[0] - self.size) // self.stride + 1
        cols = (x.shape[1] - self.size) // self.stride + 1
        row_span, col_span = self.stride * (rows - 1) + 1, self.stride * (cols - 1) + 1
        shifts = [
            x[i : i + row_span : self.stride, j : j + col_span : self.stride]
            for i in range(self.size)
            for j in range(self.size)
        ]
        return self.linear(jnp.concatenate(shifts, axis=-1))


def unroll_threefry_on_cpu(unrolled: bool = True) -> bool:
    """Lower JAX's threefry hash on the CPU as straight-line code instead of JAX's default CPU lowering, a
    five-trip `while` loop (chosen upstream for compile time). The hash and its bits are the same; the loop's
    per-trip bookkeeping made a CartPole run 1.14× slower. Other platforms already use the straight-line form. It
    applies to the whole process: importing any of the kit's scripts registers it. `unrolled=False` puts JAX's loop
    back (to measure it). Returns False, changing nothing, where this JAX version keeps the lowering elsewhere."""
    try:
        from jax._src.interpreters import mlir
    except ImportError:
        return False
    for module_name in ("jax._src.random.threefry2x32", "jax._src.prng"):  # newer JAX, then JAX before 0.9
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        primitive = getattr(module, "threefry2x32_p", None)
        rule = getattr(module, "_threefry2x32_lowering_rule" if unrolled else "_threefry2x32_cpu_lowering_rule", None)
        if primitive is not None and rule is not None:
            mlir.register_lowering(primitive, rule, platform="cpu")
            return True
    return False
