"""The scripts compute what they computed before the layout of the kit changed: small runs of each (tests/
behaviour_record.py) leave the same checkpoint arrays and logged curves, bit for bit, as the record in
tests/reference/behaviour.json. XLA's float32 rounding depends on the CPU, the device split and the JAX version, so
the comparison holds on the machine kind that made the record; elsewhere the test says so and skips (re-record
there from the recorded commit, as behaviour_record.py shows)."""

import json

import pytest
from behaviour_record import RUNS, digest, fingerprint, record
from conftest import ROOT

REFERENCE = json.loads((ROOT / "tests" / "reference" / "behaviour.json").read_text())


@pytest.mark.parametrize("run", RUNS)
def test_runs_compute_what_the_recorded_commit_computed(run):
    if fingerprint() != REFERENCE["fingerprint"]:
        pytest.skip(f"recorded on {REFERENCE['fingerprint']}; this is {fingerprint()}")
    expected = {name: value for name, value in REFERENCE["arrays"].items() if name.startswith(f"{run}/")}
    assert expected, f"the record holds no arrays of {run}"
    got = {name: digest(array) for name, array in record(names=(run,)).items()}
    assert sorted(got) == sorted(expected), "the run checkpoints or logs other arrays than the recorded commit's"
    differ = {name: (expected[name]["sum"], got[name]["sum"]) for name in expected if got[name] != expected[name]}
    assert not differ, f"{len(differ)} of {len(expected)} arrays differ from {REFERENCE['commit']}'s (sums): {differ}"
