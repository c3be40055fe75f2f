"""Small numeric helpers: percentiles of latency samples, a stopwatch, means."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence


def percentile(samples: Sequence[float], p: float) -> float | None:
    """The nearest-rank percentile (no interpolation: every value reported was observed)."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def ms(value: float | None) -> float | None:
    """Seconds to milliseconds, rounded for the report (times here are not precise below 1 µs)."""
    return None if value is None else round(value * 1000, 3)


def rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


class Stopwatch:
    """`with Stopwatch() as sw: ...; sw.seconds`"""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start
