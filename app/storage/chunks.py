"""Cutting long id lists into bounded pieces, for `$in` look-ups and bulk writes.

The embedded server's `$in` costs time growing with the square of the list (500 values 0.56 s,
5,000 values 73 s: README "Known limits"), and mongod merges the per-value index scans of an
`$in` only up to 200 values; bulk writes must stay under the 16 MB command limit. So every long
list of ids a query or a write takes goes through here, with the size its caller names (and
justifies) as a constant.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def chunked(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """`items` in order, as lists of at most `size` (the last may be shorter; none if empty)."""
    if size < 1:
        raise ValueError(f"chunk size must be positive, not {size}")
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
