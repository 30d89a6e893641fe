"""benchmarks/gpu.py, the command for a GPU lent for minutes, at toy sizes on the CPU so that it cannot rot."""

import importlib.util
import os
import subprocess
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu  # noqa: E402


def table_rows(path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    return [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines[2:] if line.startswith("| ")]


def test_every_row_is_measured_and_written_at_tiny_sizes(tmp_path):
    out = tmp_path / "tiny.md"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu.py", "--tiny", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = table_rows(out)
    assert [row[0] for row in rows] == [script.removesuffix("_speed.py") for script, _ in gpu.rows(tiny=True)]
    for row in rows:
        if row[0] == "atari" and importlib.util.find_spec("envpool") is None:  # envpool: Python 3.11+ only
            assert row[-1].startswith("not measured"), row
            continue
        assert row[-1] == "", row  # no "not measured" note
        total, per_seed, seeds = float(row[3].replace(",", "")), float(row[4].replace(",", "")), int(row[2])
        assert total > 0 and abs(per_seed * seeds - total) <= 0.01 * total + 1, row
        assert float(row[5]) > 0 and row[8].startswith("cpu"), row  # compile seconds; the device


def test_rows_stop_starting_when_the_budget_is_spent(tmp_path):
    out = tmp_path / "none.md"
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu.py", "--budget-s", "0", "--out", str(out)], cwd=ROOT, capture_output=True
    )
    assert done.returncode == 0
    rows = table_rows(out)
    assert len(rows) == len(gpu.rows(tiny=False)) == 14
    assert all(row[-1] == "not started: --budget-s spent" for row in rows)
