"""The scripts compute what they computed before the layout of the kit changed: small runs of each (tests/
behaviour_record.py) leave the same checkpoint arrays and logged curves, bit for bit, as the record in
tests/reference/behaviour.json. XLA's float32 rounding depends on the CPU, the device split and the JAX version, so
the file holds one record per machine kind, each made from the same recorded commit, and the comparison uses this
machine's; on a machine kind it does not hold, the test says so and skips (record one there from the recorded
commit, as behaviour_record.py shows)."""

import json

import pytest
from behaviour_record import RUNS, digest, fingerprint, record
from conftest import ROOT

RECORDS = json.loads((ROOT / "tests" / "reference" / "behaviour.json").read_text())["records"]
# How the MIRL state's leaves changed after the recorded commit. Its checkpoints hold the leaves in field order,
# ending with the interval sums (8 leaves), nan_step and the Hypers (6): the sums left the state (the steps tally
# into scan outputs; a checkpoint ends an interval, so they were zero in every recorded one), and the Hypers gained
# --beta-scale at the end, with the value that reproduces the recorded runs. Every other array is compared bit for bit.
REMOVED_SUMS, LAST_LEAVES = 8, 1 + 6
ADDED_LEAVES = {"hypers.beta_scale (--beta-scale 1, the published rule)": 1.0}


def as_now(run: str, expected: dict, got: dict) -> tuple[dict, dict]:
    """The record renumbered as this kit's checkpoints hold it, and `got` without the added leaves (checked)."""
    if not run.startswith(("gymnax_", "atari_")):
        return expected, got
    prefix = f"{run}/checkpoint/"
    recorded = [expected[name] for name in sorted(name for name in expected if name.startswith(prefix))]
    cut = len(recorded) - REMOVED_SUMS - LAST_LEAVES
    assert all(digest["sum"] == 0 for digest in recorded[cut : cut + REMOVED_SUMS]), "the removed sums were not zero"
    kept = recorded[:cut] + recorded[cut + REMOVED_SUMS :]
    renumbered = {f"{prefix}{index:03d}": digest for index, digest in enumerate(kept)}
    for index, (what, value) in enumerate(ADDED_LEAVES.items(), start=len(kept)):
        name = f"{prefix}{index:03d}"
        assert name in got and (got[name] == value).all() and got[name].dtype == "float32", f"{what} at {name}"
        got = {key: array for key, array in got.items() if key != name}
    return {name: digest for name, digest in expected.items() if not name.startswith(prefix)} | renumbered, got


@pytest.mark.parametrize("run", RUNS)
def test_runs_compute_what_the_recorded_commit_computed(run):
    here = [record for record in RECORDS if record["fingerprint"] == fingerprint()]
    if not here:
        pytest.skip(f"recorded on {'; '.join(record['fingerprint'] for record in RECORDS)}; this is {fingerprint()}")
    (reference,) = here
    expected = {name: value for name, value in reference["arrays"].items() if name.startswith(f"{run}/")}
    assert expected, f"the record holds no arrays of {run}"
    expected, arrays = as_now(run, expected, record(names=(run,)))
    got = {name: digest(array) for name, array in arrays.items()}
    assert sorted(got) == sorted(expected), "the run checkpoints or logs other arrays than the recorded commit's"
    differ = {name: (expected[name]["sum"], got[name]["sum"]) for name in expected if got[name] != expected[name]}
    assert not differ, f"{len(differ)} of {len(expected)} arrays differ from {reference['commit']}'s (sums): {differ}"


def test_every_machine_kind_was_recorded_from_the_same_commit():
    assert len({record["commit"] for record in RECORDS}) == 1, [(r["fingerprint"], r["commit"]) for r in RECORDS]
    assert len({record["fingerprint"] for record in RECORDS}) == len(RECORDS), "one record per machine kind"
