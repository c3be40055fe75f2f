"""Short runs of `python -m benchmarks load` against its own service (`timeline serve` with its
in-process worker, and `timeline db` + `timeline serve --no-worker` + a `timeline worker`): no
errors and nothing lost (the figures for speed are in docs/benchmarks.md, not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import load

# Small enough for CI (about 15 s with the server's start and stop), big enough that friendships
# change while statuses fan out.
CLIENTS = 4
SECONDS = 3


@pytest.mark.parametrize("workers", [0, 1])
def test_short_load_run_loses_nothing(tmp_path: Path, workers: int) -> None:
    code = load.main(
        [
            *("--clients", str(CLIENTS), "--seconds", str(SECONDS)),
            *("--workers", str(workers), "--out", str(tmp_path)),
        ]
    )
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
    # The probe saw its posts become visible during the run (and every one of them: `lost`
    # counts those it never saw); the drain was measured after the load.
    assert result["lag_samples"] >= SECONDS
    assert 0 < result["lag_p50_ms"] <= result["lag_p99_ms"] <= result["lag_max_ms"]
    # Measured to the sending of the read that showed a post: a lower bound of the same lags.
    assert 0 <= result["lag_at_read_sent_p50_ms"] <= result["lag_p50_ms"]
    assert result["lag_at_read_sent_p99_ms"] <= result["lag_p99_ms"]
    assert result["probe_requests"] > result["lag_samples"]
    assert result["drain_s"] >= 0 and result["drain_share"] >= 0
    expected = f"{workers} worker process(es) x 1" if workers else "in-process worker"
    assert result["workers"] == expected


@pytest.mark.slow
def test_open_loop_sweep_gives_a_curve_with_its_knee(tmp_path: Path) -> None:
    """`--sweep-rates`: one open-loop run per rate on a fresh service, at rates far below this
    machine's knee (docs/benchmarks.md, "Capacity"), so both count as within the 2 s lag."""
    rates = (4.0, 8.0)
    code = load.main(
        [
            *("--clients", str(CLIENTS), "--seconds", str(SECONDS)),
            *("--sweep-rates", ",".join(f"{r:g}" for r in rates), "--out", str(tmp_path)),
        ]
    )
    curve = json.loads((tmp_path / "capacity.json").read_text())
    assert code == 0 and (tmp_path / "capacity.png").stat().st_size > 0
    points = curve["points"]
    assert [p["offered_ops_per_s"] for p in points] == list(rates)
    for p in points:
        assert p["strategy"] == "receiver_copies"
        assert (p["lost"], p["unexpected"], p["errors"]) == (0, 0, 0)
        # Open loop: arrivals kept coming at the offered rate, and about that many completed.
        assert 0 < p["achieved_ops_per_s"] <= 2 * p["offered_ops_per_s"]
        assert p["lag_p99_ms"] > 0
    if all(p["lag_p99_ms"] <= 2000 for p in points):
        assert curve["knee_ops_per_s"] == {"receiver_copies": 8.0}
