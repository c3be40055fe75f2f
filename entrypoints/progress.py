"""One progress bar for the long commands (rebuild, switch-strategy)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

Step = Callable[[int, int], None]


@contextmanager
def progress(description: str) -> Iterator[Step]:
    """A bar labelled `description`; the yielded callback reports `(done, total)`."""
    from rich.progress import Progress

    with Progress() as bar:
        task = bar.add_task(description, total=None)

        def step(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield step
