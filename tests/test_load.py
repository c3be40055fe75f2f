"""A short run of `python -m benchmarks load` against its own `timeline serve` subprocess: no
errors and nothing lost (the figures for speed are in docs/benchmarks.md, not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import load

# Small enough for CI (about 15 s with the server's start and stop), big enough that friendships
# change while statuses fan out.
CLIENTS = 4
SECONDS = 3


def test_short_load_run_loses_nothing(tmp_path: Path) -> None:
    code = load.main(["--clients", str(CLIENTS), "--seconds", str(SECONDS), "--out", str(tmp_path)])
    result = json.loads((tmp_path / "load.json").read_text())
    assert result["errors"] == 0, result["error_kinds"]
    assert result["lost"] == 0
    assert result["unexpected"] == 0
    assert code == 0
    # The run did the mixed workload and the check had something to check.
    assert result["requests"] > CLIENTS
    assert result["by_action"]["post"] > 0 and result["checked_pairs"] > 0
    for key in ("req_per_s", "p50_ms", "p99_ms"):
        assert result[key] > 0
