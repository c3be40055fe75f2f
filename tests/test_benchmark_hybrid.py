"""`python -m benchmarks hybrid` on a small graph: it runs, writes hybrid.json, every timeline it
checks is exact, and its counts (not its times: nothing here asserts a speed) show what hybrid
is for: a page of a reader with large friends is three round trips, a large author's post writes
a handful of documents where receiver_copies writes one per friend, and every crossing of the
sweep kept pages exact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FRIENDS, LARGE, THRESHOLD, SWEEP = 60, 5, 20, (10, 30)


def test_hybrid_benchmark_counts(mongo_url: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks", "hybrid", "--friends", str(FRIENDS)),
            *("--large", str(LARGE), "--threshold", str(THRESHOLD), "--repeats", "2"),
            *("--sweep", ",".join(map(str, SWEEP)), "--mongodb-url", mongo_url),
            *("--out", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    result = json.loads((tmp_path / "hybrid.json").read_text())
    rows = {r["strategy"]: r for r in result["strategies"]}
    assert all(r["reader_timeline_exact"] for r in rows.values())
    assert rows["receiver_copies"]["page"]["round_trips"] == 1
    assert rows["hybrid"]["page"]["round_trips"] == 3  # pairs, entries, large friends' statuses
    # The reader is a FRIENDS-friend author: one copy per friend, or none at all.
    assert rows["receiver_copies"]["post_reader"]["docs_written"] > FRIENDS
    assert rows["hybrid"]["post_reader"]["docs_written"] < 10
    crossings = rows["hybrid"]["crossings"]
    assert [c["friends"] for c in crossings] == list(SWEEP)
    for c in crossings:
        assert c["up"]["pages_exact"] and c["down"]["pages_exact"], c
        assert c["down"]["docs_written"] > 0, c  # it did cross: the window was copied
        assert c["up"]["docs_written"] >= c["friends"]  # one pair per friend
    assert result["goals"]["page_round_trips_within_3"]
