"""The one percentile of the benchmarks (benchmarks.stats.percentile), which every command uses:
nearest rank, so every reported value was observed."""

from __future__ import annotations

import pytest

from benchmarks import load
from benchmarks.stats import percentile


@pytest.mark.parametrize(
    ("samples", "p", "expected"),
    [
        ([4.0, 1.0, 3.0, 2.0], 50, 2.0),  # the 2nd of 4 (an index rounded from 1.5 says 3.0)
        ([4.0, 1.0, 3.0, 2.0], 99, 4.0),
        ([float(i) for i in range(1, 101)], 99, 99.0),
        ([float(i) for i in range(1, 101)], 95, 95.0),
        ([7.0], 1, 7.0),
    ],
)
def test_nearest_rank(samples: list[float], p: float, expected: float) -> None:
    assert percentile(samples, p) == expected


def test_no_samples_no_percentile() -> None:
    assert percentile([], 50) is None


def test_the_load_command_reports_the_same_percentile() -> None:
    samples = [4.0, 1.0, 3.0, 2.0]
    assert load._pct(samples, 50, 2) == percentile(samples, 50) == 2.0
    assert load._pct([], 99, 1) == 0.0  # load.json keeps a number where there were no samples
