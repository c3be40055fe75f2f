"""A one-minute soak (`python -m benchmarks soak`): the deployment's processes under a steady
open-loop mix, with a worker, the API and the embedded database SIGKILLed once each, must lose
nothing acknowledged, apply nothing twice, drift nowhere, answer no 5xx outside the fault
windows and recover from each fault within 30 s (benchmarks/soak_report.py). The 60-minute
run's figures are in docs/bench/soak; this is the same command, shorter."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from benchmarks import soak
from benchmarks.soak_report import RECOVERY_TARGET_S

pytestmark = pytest.mark.slow

# One minute at a rate well under this machine's knee (docs/benchmarks.md, "Capacity"), few
# users so that the setup and the final check take seconds.
ARGS = ["--minutes", "1", "--rate", "15", "--users", "30", "--workers", "2", "--seed", "7"]


def test_a_minute_of_traffic_and_faults_loses_nothing(tmp_path: Path) -> None:
    before = datetime.now(UTC)
    code = soak.main([*ARGS, "--out", str(tmp_path)])
    after = datetime.now(UTC)
    result = json.loads((tmp_path / "soak.json").read_text())
    summary, verdict = result["summary"], result["verdict"]
    # `started_at` is the run's start: before its set-up and its minute of load, not the end.
    started = datetime.fromisoformat(result["meta"]["started_at"])
    assert before.replace(microsecond=0) <= started
    assert started + timedelta(seconds=result["meta"]["load_s"]) <= after
    assert verdict["problems"] == []
    assert (verdict["lost"], verdict["duplicated"], verdict["resurrected"]) == (0, 0, 0)
    assert result["check"]["exit_code"] == 0, result["check"]
    assert summary["failures_outside_fault_windows"] == 0, summary["first_failures_outside"]
    kinds = sorted(f["kind"] for f in result["faults"])
    assert kinds == ["api", "database", "worker"]
    for fault in result["faults"]:
        assert fault["recovered_s"] is not None and fault["recovered_s"] <= RECOVERY_TARGET_S
    # The run did what it says: writes of every kind were acknowledged and checked, retries
    # came back with their status, users went away and returned, and the faults cost requests.
    checked = verdict["checked"]
    assert checked["posts"] > 100 and checked["friendships"] > 0 and checked["markers"] > 0
    assert result["acknowledged_deletes"] > 0 and result["idempotent_retries_checked"] > 0
    assert result["returns"] >= 1 and result["away_aged"] >= 1
    assert result["failures"], "killing the API cost no request: the faults did not happen"
    assert len(result["samples"]) >= 6 and all(s["rss_bytes"] for s in result["samples"])
    assert summary["ok"] and code == 0
    assert (tmp_path / "soak.png").stat().st_size > 0 and (tmp_path / "report.md").exists()
