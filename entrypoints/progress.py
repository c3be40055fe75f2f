"""One progress bar for the long commands (rebuild, switch-strategy): rich's, when the `cli`
extra is installed, else a line every PLAIN_EVERY percent."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

Step = Callable[[int, int], None]
# Without rich: a progress line at every this many percent (and at the end).
PLAIN_EVERY = 10


@contextmanager
def progress(description: str) -> Iterator[Step]:
    """A bar labelled `description`; the yielded callback reports `(done, total)`."""
    try:
        from rich.progress import Progress
    except ImportError:  # the core install: plain lines
        yield _plain(description)
        return

    with Progress() as bar:
        task = bar.add_task(description, total=None)

        def step(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield step


def _plain(description: str) -> Step:
    shown = 0

    def step(done: int, total: int) -> None:
        nonlocal shown
        percent = 100 * done // total if total else 100
        if percent >= shown + PLAIN_EVERY or done == total:
            shown = percent - percent % PLAIN_EVERY
            print(f"{description}: {done}/{total}", flush=True)

    return step
