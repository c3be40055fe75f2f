"""The verdict of a soak run (the issue's invariants), its plots and its markdown report."""

from __future__ import annotations

from pathlib import Path
from statistics import median
from typing import Any

from benchmarks.plots import DPI  # before pyplot: it selects the file-only backend
from benchmarks.soak_faults import LAG_TARGET_S

# Each fault must be recovered within this (the issue).
RECOVERY_TARGET_S = 30.0
# Memory is "flat" when a process grows less than this over the flat span...
MEMORY_GROWTH_LIMIT = 0.10
# ...the last 40 minutes of a 60-minute run: the last two thirds of any run (warm-up before).
FLAT_SHARE = 2 / 3
# The ends of the flat span are medians of this many samples (one sample can catch a spike).
ENDS = 3


# Fault windows and failure times are recorded rounded (to 0.01 s; runs before commit
# `0ff1530`'s successor rounded windows to 0.1 s): a failure within this of a window is in it.
ROUNDING_SLACK_S = 0.05


def _outside_windows(result: dict[str, Any]) -> list[tuple[float, str]]:
    windows = [tuple(f["window_s"]) for f in result["faults"]]
    slack = ROUNDING_SLACK_S
    return [
        (t, c)
        for t, c in result["failures"]
        if not any(a - slack <= t <= b + slack for a, b in windows)
    ]


def memory_growth(samples: list[dict[str, Any]]) -> dict[str, float | None]:
    """Per process: growth of RSS over the flat span (median of the first ENDS samples of the
    span against the last ENDS). A process restarted by a fault inside the span is measured
    from its restart on (its RSS starts afresh): from the last sample that missed it, or whose
    pid (`pids`, absent from older runs) differs from the one before."""
    if not samples:
        return {}
    t_end = samples[-1]["t_s"]
    span = [s for s in samples if s["t_s"] >= t_end * (1 - FLAT_SHARE)]
    roles = sorted({r for s in samples for r in s["rss_bytes"]})
    out: dict[str, float | None] = {}
    for role in roles:
        values = [s["rss_bytes"].get(role) for s in span]
        pids = [s.get("pids", {}).get(role) for s in span]
        # From the last gap or change of pid (a restart) on.
        restarts = [i for i, v in enumerate(values) if v is None] + [
            i - 1 for i in range(1, len(pids)) if pids[i] and pids[i - 1] and pids[i] != pids[i - 1]
        ]
        last_gap = max(restarts, default=-1)
        tail = [v for v in values[last_gap + 1 :] if v is not None]
        if len(tail) < 2 * ENDS:
            out[role] = None
            continue
        first, last = median(tail[:ENDS]), median(tail[-ENDS:])
        out[role] = round((last - first) / first, 3)
    return out


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    verdict = result["verdict"]
    outside = _outside_windows(result)
    faults = result["faults"]
    slow = [f for f in faults if f["recovered_s"] is None or f["recovered_s"] > RECOVERY_TARGET_S]
    growth = memory_growth(result["samples"])
    lag_p99 = [s["lag_p99_ms"] for s in result["samples"] if s["lag_p99_ms"] is not None]
    windows = [tuple(f["window_s"]) for f in faults]
    lag_p99_outside = [
        s["lag_p99_ms"]
        for s in result["samples"]
        if s["lag_p99_ms"] is not None
        and not any(a <= s["t_s"] <= b + LAG_TARGET_S + 30 for a, b in windows)
    ]
    invariants = {
        "lost": verdict["lost"],
        "duplicated": verdict["duplicated"],
        "resurrected": verdict["resurrected"],
        "drift_check_exit": result["check"]["exit_code"],
        "failures_outside_fault_windows": len(outside),
        "faults_not_recovered_in_30s": len(slow),
        # Left by the housekeeping (absent from runs before it: their expiry was the server's).
        "expiry_probe_left": result["expiry"].get("expiry_probe_events_left", 0)
        + result["expiry"].get("expiry_probe_keys_left", 0),
    }
    ok = (
        invariants["lost"] == 0
        and invariants["duplicated"] == 0
        and invariants["resurrected"] == 0
        and invariants["drift_check_exit"] == 0
        and not outside
        and not slow
        and invariants["expiry_probe_left"] == 0
    )
    return {
        "ok": ok,
        **invariants,
        "faults": len(faults),
        "max_recovery_s": max((f["recovered_s"] or 0 for f in faults), default=None),
        "memory_growth_over_flat_span": growth,
        "lag_p99_max_ms": max(lag_p99, default=None),
        "lag_p99_max_outside_faults_ms": max(lag_p99_outside, default=None),
        "acknowledged_posts": result["acknowledged_posts"],
        "drain_s": result["drain_s"],
        "first_failures_outside": outside[:10],
    }


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    samples = result["samples"]
    ts = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    ax = axes[0][0]
    for role in sorted({r for s in samples for r in s["rss_bytes"]}):
        ys = [(s["rss_bytes"].get(role) or float("nan")) / 2**20 for s in samples]
        ax.plot(ts, ys, label=role)
    ax.set_title("RSS per process (MiB)")
    ax.legend(fontsize=7)
    ax = axes[0][1]
    ax.plot(ts, [s["data_dir_bytes"] / 2**20 for s in samples], "k-", label="data dir (MiB)")
    names = sorted({n for s in samples for n in (s["collections"] or {})})
    for name in names:
        ys = [
            (s["collections"] or {}).get(name, {}).get("docs", float("nan")) / 1000 for s in samples
        ]
        if max((y for y in ys if y == y), default=0) > 0.1:
            ax.plot(ts, ys, "--", label=f"{name} (k docs)")
    ax.set_title("Storage")
    ax.legend(fontsize=6)
    ax = axes[1][0]
    for key in ("lag_p50_ms", "lag_p99_ms"):
        ax.plot(ts, [s[key] if s[key] is not None else float("nan") for s in samples], label=key)
    ax.axhline(LAG_TARGET_S * 1000, color="gray", ls=":", label="2 s")
    ax.set_yscale("log")
    ax.set_title("Post-to-visible lag per 10 s window (ms)")
    ax.legend(fontsize=7)
    ax = axes[1][1]
    for key in ("api_p50_ms", "api_p99_ms"):
        ax.plot(ts, [s[key] if s[key] is not None else float("nan") for s in samples], label=key)
    ax.plot(ts, [sum(s["errors"].values()) for s in samples], "r.", label="errors (count)")
    ax.set_yscale("symlog")
    ax.set_title("API latency (ms) and errors per window")
    ax.legend(fontsize=7)
    for row in axes:
        for a in row:
            a.set_xlabel("minutes")
            a.grid(alpha=0.3)
            for f in result["faults"]:
                a.axvline(f["at_s"] / 60, color="red", alpha=0.25)
    meta = result["meta"]
    fig.suptitle(
        f"soak: {meta['minutes']} min at {meta['rate']} ops/s, {meta['workers']} workers, "
        f"{meta['strategy']} (red lines: faults)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}"


# The summary's figures in the report's invariant table, in this order.
INVARIANT_ROWS = (
    "ok",
    "lost",
    "duplicated",
    "resurrected",
    "drift_check_exit",
    "failures_outside_fault_windows",
    "faults_not_recovered_in_30s",
    "max_recovery_s",
    "lag_p99_max_ms",
    "lag_p99_max_outside_faults_ms",
    "drain_s",
    "acknowledged_posts",
)


def write_report(result: dict[str, Any], out: Path) -> None:
    """soak.png and report.md in `out`: the run, its invariants, faults, memory, expiry, storage
    and (if any) the ledger's problems, in that order."""
    _plot(result, out / "soak.png")
    lines = [
        *_report_header(result),
        *_report_invariants(result),
        *_report_faults(result),
        *_report_memory_and_expiry(result),
        *_report_storage(result["samples"]),
    ]
    if result["verdict"]["problems"]:
        lines += ["", "## Problems", ""] + [f"- {p}" for p in result["verdict"]["problems"]]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def _report_header(result: dict[str, Any]) -> list[str]:
    """The title (saying if SIGUSR1 ended the load early), the command, its settings, the plot."""
    meta = result["meta"]
    return [
        f"# Soak: {meta['minutes']} minutes at {meta['rate']} ops/s"
        + (
            f" (ended early, by SIGUSR1, after {meta['load_s'] / 60:.1f} minutes)"
            if meta.get("ended_early")
            else ""
        ),
        "",
        f"`{meta['command']}` ({meta['workers']} worker processes, {meta['users']} users, "
        f"strategy {meta['strategy']}, seed {meta['seed']}; load {meta['load_s']} s after "
        f"{meta['setup_s']} s of setup).",
        "",
        "![soak](soak.png)",
        "",
    ]


def _report_invariants(result: dict[str, Any]) -> list[str]:
    """The summary's INVARIANT_ROWS as a table, then what the ledger check covered."""
    s = result["summary"]
    return [
        "| invariant | value |",
        "| --- | --- |",
        *(f"| {key} | {s[key]} |" for key in INVARIANT_ROWS),
        "",
        "Checked: " + ", ".join(f"{k} {v}" for k, v in result["verdict"]["checked"].items()),
        # Its own line, as the committed reports have it (markdown joins the two).
        f"; idempotent retries checked {result['idempotent_retries_checked']}; users sent away "
        f"{result['away_aged']} (returned {result['returns']}); arrivals shed {result['shed']}.",
    ]


def _report_faults(result: dict[str, Any]) -> list[str]:
    """One table row per injected fault, in the order they were injected."""
    lines = [
        "",
        "## Faults",
        "",
        "| at (s) | kind | recovered (s) | backlog fresh (s) | detail |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in result["faults"]:
        lines.append(
            f"| {f['at_s']} | {f['kind']} | {f['recovered_s']} | {f['fresh_s']} | {f['detail']} |"
        )
    return lines


def _report_memory_and_expiry(result: dict[str, Any]) -> list[str]:
    """Each process's RSS growth over the flat span, then the housekeeping's expiry figures."""
    growth = result["summary"]["memory_growth_over_flat_span"]
    lines = ["", "## Memory (RSS growth over the last two thirds of the run)", ""]
    lines += [f"- {role}: {g}" for role, g in growth.items()]
    lines += ["", "## Expiry (the workers' housekeeping, fanout.housekeeping)", ""]
    return lines + [f"- {k}: {v}" for k, v in result["expiry"].items()]


def _report_storage(samples: list[dict[str, Any]]) -> list[str]:
    """Documents and bytes per collection and the data directory, first sample against last;
    nothing without samples."""
    if not samples:
        return []
    first, last = samples[0], samples[-1]
    lines = [
        "",
        "## Storage, first and last sample",
        "",
        "| collection | docs first | docs last | MiB last |",
        "| --- | --- | --- | --- |",
    ]
    c0, c1 = first["collections"] or {}, last["collections"] or {}
    for name in sorted(c1):
        d0 = c0.get(name, {}).get("docs")
        lines.append(f"| {name} | {d0} | {c1[name]['docs']} | {_mib(c1[name].get('bytes'))} |")
    lines.append(
        f"| data directory | | | {_mib(first['data_dir_bytes'])} -> "
        f"{_mib(last['data_dir_bytes'])} |"
    )
    return lines
