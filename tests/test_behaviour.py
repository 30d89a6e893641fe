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
# Leaves the MIRL state gained after the recorded commit, at the end of its checkpoints, each with the value that
# reproduces the recorded runs; every other array is still compared bit for bit.
ADDED_LEAVES = {"hypers.beta_scale (--beta-scale 1, the published rule)": 1.0}


def added_since_record(run: str, expected: dict, got: dict) -> dict:
    """The checkpoint leaves of `got` past the recorded ones, which must be ADDED_LEAVES in order (MIRL runs)."""
    if not run.startswith(("gymnax_", "atari_")):
        return {}
    recorded = sum(name.startswith(f"{run}/checkpoint/") for name in expected)
    names = [f"{run}/checkpoint/{index:03d}" for index in range(recorded, recorded + len(ADDED_LEAVES))]
    for name, (what, value) in zip(names, ADDED_LEAVES.items(), strict=True):
        assert name in got and (got[name] == value).all() and got[name].dtype == "float32", f"{what} at {name}"
    return {name: got[name] for name in names}


@pytest.mark.parametrize("run", RUNS)
def test_runs_compute_what_the_recorded_commit_computed(run):
    here = [record for record in RECORDS if record["fingerprint"] == fingerprint()]
    if not here:
        pytest.skip(f"recorded on {'; '.join(record['fingerprint'] for record in RECORDS)}; this is {fingerprint()}")
    (reference,) = here
    expected = {name: value for name, value in reference["arrays"].items() if name.startswith(f"{run}/")}
    assert expected, f"the record holds no arrays of {run}"
    arrays = record(names=(run,))
    added = added_since_record(run, expected, arrays)
    got = {name: digest(array) for name, array in arrays.items() if name not in added}
    assert sorted(got) == sorted(expected), "the run checkpoints or logs other arrays than the recorded commit's"
    differ = {name: (expected[name]["sum"], got[name]["sum"]) for name in expected if got[name] != expected[name]}
    assert not differ, f"{len(differ)} of {len(expected)} arrays differ from {reference['commit']}'s (sums): {differ}"


def test_every_machine_kind_was_recorded_from_the_same_commit():
    assert len({record["commit"] for record in RECORDS}) == 1, [(r["fingerprint"], r["commit"]) for r in RECORDS]
    assert len({record["fingerprint"] for record in RECORDS}) == len(RECORDS), "one record per machine kind"
