"""Pack the official MISA reference step (shared/reference/misa_official, five configurations) into the
one compressed file the tests read, `tests/reference/misa_official.npz`.

Run once by a maintainer, from the repository root, when the reference is re-made:

    python tests/reference/pack_misa_official.py ../shared/reference/misa_official

What is kept: the batch and initial parameters (the same in every folder; the Lagrange folders add
log α'), the random draws the tests inject (the actor's and the TD target's samples, the regulariser's
policy and uniform samples, the HMC samples), the TD target, every loss, metric and gradient, and the
parameters after the step. Updated parameters are stored as the XOR of their float32 bits with the
initial ones' (exactly invertible; sign, exponent and leading mantissa bits mostly agree after one small
Adam step, so the result is mostly zero bits and compresses well).
Arrays that are bit-identical across configurations are stored once (`index` maps names to blobs).
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

CONFIGS = ("misa", "cql", "cql_lagrange", "misa_lagrange", "misa_lagrange_addpos")
AUX = (
    "new_actions",
    "new_next_actions",
    "current_actions",
    "next_actions",
    "random_actions",
    "mcmc_action_samples",
    "td_target",
    "log_pi",
    "q1_pred",
    "q2_pred",
    "qf1_diff",
    "qf2_diff",
    "alpha_prime",
)
CQL_ONLY = ("next_actions", "random_actions")  # drawn by every configuration, used by cql's only


def main(source: Path, output: Path) -> None:
    blobs, index = {}, {}

    def put(name: str, array: np.ndarray) -> None:
        array = np.array(array, order="C")  # (ascontiguousarray would turn a 0-d scalar into shape (1,))
        digest = hashlib.sha1(array.tobytes() + str(array.dtype).encode() + str(array.shape).encode()).hexdigest()
        blobs.setdefault(digest[:16], array)
        index[name] = digest[:16]

    batch = np.load(source / "misa" / "batch.npz")
    for key in batch.files:
        put(f"batch/{key}", batch[key])
    init = dict(np.load(source / "misa_lagrange" / "init_params.npz"))
    for config in CONFIGS:
        for key, value in np.load(source / config / "batch.npz").items():
            assert np.array_equal(value, batch[key]), (config, key)
        for key, value in np.load(source / config / "init_params.npz").items():
            assert np.array_equal(value, init[key]), (config, key)
    for key, value in init.items():
        if value.dtype == np.float64:  # the official Scalar modules start as Python floats (1.0, −1.0, 0.0)
            assert np.array_equal(value.astype(np.float32), value), key  # exact in float32
            init[key] = value = value.astype(np.float32)
        put(f"init/{key}", value)

    for config in CONFIGS:
        out = np.load(source / config / "ref_out.npz")
        for key in out.files:
            kind, _, path = key.partition("/")
            if kind in ("loss", "metrics", "grad"):
                put(f"{config}/{key}", out[key])
            elif kind == "aux" and path in AUX and not (config.startswith("misa") and path in CQL_ONLY):
                put(f"{config}/{key}", out[key])
            elif kind in ("new_params", "new_target"):
                before = init[("params/" if kind == "new_params" else "target/") + path]
                put(
                    f"{config}/{kind}_xor/{path}",
                    np.atleast_1d(out[key]).view(np.uint32) ^ np.atleast_1d(before).view(np.uint32),
                )

    np.savez_compressed(output, index=np.asarray(json.dumps(index)), **{f"blob/{k}": v for k, v in blobs.items()})
    print(f"{output}: {len(index)} arrays in {len(blobs)} blobs, {output.stat().st_size / 2**20:.2f} MiB")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).with_name("misa_official.npz"))
