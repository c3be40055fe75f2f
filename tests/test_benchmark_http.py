"""`python -m benchmarks http` on a tiny timeline: the command starts `timeline db`, `timeline
serve` and the bare service (benchmarks/bare_http.py), measures, and writes http.json with the
fields docs/benchmarks.md quotes. Its figures are measurements, so nothing here asserts a speed;
the round trips of one request are a count (tests/test_http_path.py guards them in-process
too)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_http_benchmark_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--entries", "5", "--rounds", "2", "--pages", "3", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "http", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "http.json").read_text())
    assert result["timeline_entries"] == 5 and result["driver_documents_per_page"] == 5
    for kind in ("driver", "http", "httpx", "bare"):
        assert result["pages_per_s"][kind]["median"] > 0, kind
        assert set(result["cpu_ms_per_page"][kind]) >= {"bench"}, kind
    assert result["ratio_http_over_driver"]["min"] <= result["ratio_http_over_driver"]["median"]
    # The bare service (benchmarks/bare_http.py) answered the service's own page, byte for byte.
    assert result["bare_body_matches"] is True
    assert "bare" in result["cpu_ms_per_page"]["bare"]
    assert result["ratio_bare_over_driver"]["median"] > 0
    assert result["request_commands"] == {"aggregate timeline_entries": 1}
    assert result["request_round_trips"] == 1
