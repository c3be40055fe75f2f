"""The pure parts of the soak and the capacity curve: the fault schedule, the fault windows
that excuse a failed request, memory growth across restarts, and the knee."""

from __future__ import annotations

from typing import Any

from benchmarks.capacity import knee
from benchmarks.soak_faults import KINDS, QUIET_END_S, Fault, schedule
from benchmarks.soak_report import memory_growth, summarize


def test_the_schedule_cycles_the_kinds_and_leaves_a_quiet_end() -> None:
    short = schedule(60)
    assert [kind for _, kind in short] == list(KINDS)
    assert short[-1][0] <= 60 - 20  # a third of a short run is left quiet
    hour = schedule(3600)
    assert len(hour) == 12 and [k for _, k in hour[:3]] == list(KINDS)
    assert hour[0][0] > 0 and hour[-1][0] <= 3600 - QUIET_END_S


def _sample(t: float, rss: dict[str, int | None]) -> dict[str, Any]:
    return {"t_s": t, "rss_bytes": {k: v for k, v in rss.items() if v is not None}}


def test_memory_growth_is_measured_from_a_restart_on() -> None:
    # "api" grows 50 % before a restart at t=70 and is flat after it; "db" grows 20 %.
    samples = [
        _sample(t, {"api": 100 + t if t < 70 else (None if t == 70 else 200), "db": 100 + t // 5})
        for t in range(0, 140, 10)
    ]
    growth = memory_growth(samples)
    assert growth["api"] == 0.0
    assert growth["db"] is not None and 0.1 < growth["db"] < 0.3


def _result(
    failures: list[tuple[float, str]], recovered_s: float, expiry_left: int = 0
) -> dict[str, Any]:
    fault = Fault("api", 100.0, recovered_s=recovered_s)
    return {
        "verdict": {"lost": 0, "duplicated": 0, "resurrected": 0},
        "check": {"exit_code": 0},
        "faults": [fault.as_dict()],
        "failures": failures,
        "samples": [],
        "acknowledged_posts": 1,
        "drain_s": 0.1,
        "expiry": {"expiry_probe_events_left": expiry_left, "expiry_probe_keys_left": 0},
    }


def test_failures_count_only_outside_the_fault_windows() -> None:
    inside = summarize(_result([(100.5, "transport"), (104.9, "503")], recovered_s=2.0))
    assert inside["ok"] and inside["failures_outside_fault_windows"] == 0
    outside = summarize(_result([(99.0, "503"), (110.0, "500")], recovered_s=2.0))
    assert not outside["ok"] and outside["failures_outside_fault_windows"] == 2
    slow = summarize(_result([], recovered_s=31.0))
    assert not slow["ok"] and slow["faults_not_recovered_in_30s"] == 1
    unexpired = summarize(_result([], recovered_s=2.0, expiry_left=3))
    assert not unexpired["ok"] and unexpired["expiry_probe_left"] == 3


def test_the_knee_is_the_highest_rate_within_the_lag_bound_with_nothing_lost() -> None:
    def point(rate: float, lag_ms: float, lost: int = 0) -> dict[str, Any]:
        return {"offered_ops_per_s": rate, "lag_p99_ms": lag_ms, "lost": lost, "errors": 0}

    assert knee([point(4, 300), point(8, 1900), point(16, 2500)]) == 8
    assert knee([point(4, 300), point(8, 1000, lost=1)]) == 4
    assert knee([point(4, 2001)]) is None


def test_memory_growth_starts_again_where_the_pid_changes() -> None:
    # The database server restarts between two samples (no sample misses it): 100 -> 150
    # under its first pid, then 80 -> 84 under the second.
    samples = []
    for t in range(0, 200, 10):
        pid, rss = (1, 100 + t // 2) if t < 100 else (2, 80 + (t - 100) // 25)
        samples.append({"t_s": t, "rss_bytes": {"db-server": rss}, "pids": {"db-server": pid}})
    growth = memory_growth(samples)["db-server"]
    assert growth is not None and growth == round((83 - 80) / 80, 3)
