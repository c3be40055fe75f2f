"""The long commands' progress: rich's bar with the `cli` extra, plain lines without it."""

from __future__ import annotations

import sys

import pytest

from entrypoints.progress import progress


def test_without_rich_progress_is_plain_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "rich.progress", None)  # the core install: no rich
    with progress("rebuilding") as step:
        for done in range(1, 101):
            step(done, 100)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "rebuilding: 10/100" and lines[-1] == "rebuilding: 100/100"
    assert len(lines) == 10  # one every PLAIN_EVERY percent, not one per user
