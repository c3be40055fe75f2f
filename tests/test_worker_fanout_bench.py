"""`python -m benchmarks fanout` on a small graph: the command runs and writes fanout.json with
the fields the issue names. Its figures are measurements, so nothing here asserts a speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FRIENDS = 300


def test_fanout_benchmark_writes_its_json(mongo_url: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks", "fanout", "--friends", str(FRIENDS)),
            *("--repeat", "2", "--mongodb-url", mongo_url, "--out", str(out)),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "fanout.json").read_text())
    assert result["friends"] == FRIENDS and result["backend"] == "mongodb"
    assert result["repeat"] == 2 and len(result["worker_seconds"]) == 2
    for key in ("worker_entries_per_s", "raw_insert_many_entries_per_s", "ratio"):
        assert result[key] > 0, key
    expected = result["worker_entries_per_s"] / result["raw_insert_many_entries_per_s"]
    assert abs(result["ratio"] - expected) < 0.01
    assert "ratio" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "benchmarks", "fanout", "--friends", "0", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--friends" in bad.stderr
