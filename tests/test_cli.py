"""Start-up errors of the `timeline` command: a bad configuration stops it with one line on stderr
that names the variable, and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.storage.db import SERVER_SELECTION_TIMEOUT_MS

TIMELINE = Path(sys.executable).with_name("timeline")
# A hang guard, not a measurement: Python start-up plus the driver's server selection timeout.
RUN_TIMEOUT_S = 60 + SERVER_SELECTION_TIMEOUT_MS / 1000
# Nothing listens on port 1 (it needs root, and no test runs a service there).
UNREACHABLE_URL = "mongodb://127.0.0.1:1"


def run(args: list[str], workdir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`timeline ARGS` with only `env` configured (cwd: an empty directory, so no .env)."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"MONGODB_URL", "MONGODB_DB", "HOST", "PORT"} and not k.startswith("TIMELINE_")
    }
    clean.update(TIMELINE_DATA_DIR=str(workdir / "data"), **env)
    return subprocess.run(
        [str(TIMELINE), *args],
        cwd=workdir,
        env=clean,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], variable: str) -> str:
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0], lines[0]
    assert result.stdout == ""
    return lines[0]


@pytest.mark.parametrize("command", ["serve", "worker", "rebuild", "check"])
def test_unknown_strategy_stops_every_command(tmp_path: Path, command: str) -> None:
    result = run([command], tmp_path, TIMELINE_STRATEGY="bogus")
    line = assert_one_line_error(result, "TIMELINE_STRATEGY")
    assert "bogus" in line and "receiver_copies" in line  # what was wrong, and the choices
    # Nothing was started: no embedded server wrote its files.
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_unreachable_mongodb_url_stops_start_up(tmp_path: Path, command: str) -> None:
    result = run([command], tmp_path, MONGODB_URL=UNREACHABLE_URL)
    assert_one_line_error(result, "MONGODB_URL")
    assert not (tmp_path / "data").exists()  # a MONGODB_URL means no embedded server


def test_out_of_range_setting_names_its_variable(tmp_path: Path) -> None:
    assert_one_line_error(run(["serve"], tmp_path, TIMELINE_MAX="0"), "TIMELINE_MAX")
