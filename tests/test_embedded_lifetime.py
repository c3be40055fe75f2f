"""The embedded server never outlives its parent (`timeline serve` or `timeline db` SIGKILLed,
each of the two guards alone), and a start-up that finds a server left behind on its data
directory says so in one line, stops it and starts; one whose parent still runs is refused."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient

from app.storage import embedded_guard
from app.storage.embedded import (
    PIDFILE,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    EmbeddedServer,
    EmbeddedServerError,
    free_port,
)

TIMELINE = Path(sys.executable).with_name("timeline")
# The parent-death signal or the watchdog asks for a clean stop (~2 s, 5-7 s measured for a
# whole test on a loaded machine); past STOP_TIMEOUT_S the watchdog kills. Margin for load.
GONE_TIMEOUT_S = STOP_TIMEOUT_S + 10
# Python start-up plus the server's start, on a busy machine.
READY_TIMEOUT_S = START_TIMEOUT_S + 30
# How long an unguarded orphan is watched to show that nothing else would have stopped it.
ORPHAN_WATCH_S = 3.0
POLL_S = 0.1

# Starts a server with the given guards, writes one document, prints the pid, then waits to die.
CHILD = """
import sys, time
from pathlib import Path
from pymongo import MongoClient
from app.storage.embedded import EmbeddedServer
server = EmbeddedServer(Path(sys.argv[1]), parent_death_signal=sys.argv[2] == "1",
                        watchdog=sys.argv[3] == "1", sync_on_commit=True).start()
with MongoClient(server.url) as c:
    c.t.docs.insert_one({"_id": "before"})
assert server.process is not None
print(server.process.pid, server.url, flush=True)
time.sleep(3600)
"""


def server_pid(data_dir: Path) -> int:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not (data_dir / PIDFILE).exists():
        assert time.monotonic() < deadline, "no pidfile"
        time.sleep(POLL_S)
    return int(json.loads((data_dir / PIDFILE).read_text())["pid"])


def gone_within(pid: int, data_dir: Path, timeout_s: float) -> bool:
    started = time.monotonic()
    gone = embedded_guard.wait_gone(pid, str(data_dir.resolve()), timeout_s)
    print(f"server {pid}: gone={gone} after {time.monotonic() - started:.1f}s")  # shown on failure
    return gone


@contextmanager
def reaped(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def env_for(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIMELINE_", "MONGODB_"))}
    return {**env, "TIMELINE_DATA_DIR": str(data_dir), "TIMELINE_STRATEGY": "fanout_on_read"}


def kill_leftover(pid: int, data_dir: Path) -> None:
    if embedded_guard.is_server_on(pid, str(data_dir.resolve())):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_db_server_dies_with_its_sigkilled_parent(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [str(TIMELINE), "db"],
        cwd=tmp_path,
        env=env_for(data),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    with reaped(proc):
        assert proc.stdout is not None and proc.stdout.readline().startswith("MONGODB_URL=")
        pid = server_pid(data / "db")
        try:
            assert embedded_guard.is_server_on(pid, str((data / "db").resolve()))
            os.kill(proc.pid, signal.SIGKILL)
            assert gone_within(pid, data / "db", GONE_TIMEOUT_S)
        finally:
            kill_leftover(pid, data / "db")


@pytest.mark.slow
def test_serve_server_dies_with_its_sigkilled_parent(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    proc = subprocess.Popen(
        [str(TIMELINE), "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env_for(data),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    with reaped(proc):
        pid = server_pid(data / "db")
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while True:  # serving: the API is up, its worker running
                assert proc.poll() is None and time.monotonic() < deadline
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(POLL_S)
            os.kill(proc.pid, signal.SIGKILL)
            assert gone_within(pid, data / "db", GONE_TIMEOUT_S)
        finally:
            kill_leftover(pid, data / "db")


def start_child(
    data_dir: Path, pdeathsig: bool, watchdog: bool
) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data_dir), str(int(pdeathsig)), str(int(watchdog))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "the child did not start its server"
    return proc, int(line.split()[0])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("pdeathsig", "watchdog"), [(True, False), (False, True)], ids=["pdeathsig", "watchdog"]
)
def test_each_guard_alone_stops_the_orphan(tmp_path: Path, pdeathsig: bool, watchdog: bool) -> None:
    if pdeathsig and not sys.platform.startswith("linux"):
        pytest.skip("the parent-death signal is Linux's")
    proc, pid = start_child(tmp_path / "db", pdeathsig, watchdog)
    with reaped(proc):
        try:
            os.kill(proc.pid, signal.SIGKILL)
            assert gone_within(pid, tmp_path / "db", GONE_TIMEOUT_S)
        finally:
            kill_leftover(pid, tmp_path / "db")


@pytest.mark.slow
def test_a_stale_server_is_stopped_at_start_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "db"
    proc, pid = start_child(data, pdeathsig=False, watchdog=False)  # as an older version did
    with reaped(proc):
        try:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            assert not gone_within(pid, data, ORPHAN_WATCH_S)  # an orphan, holding the data
            with caplog.at_level(logging.WARNING, "timeline.embedded"):
                server = EmbeddedServer(data).start()
            try:
                said = [r.getMessage() for r in caplog.records if "stale" in r.getMessage()]
                assert len(said) == 1 and "\n" not in said[0], said
                assert said[0].startswith(f"TIMELINE_DATA_DIR: a stale embedded server (pid {pid}")
                assert gone_within(pid, data, 0)
                with MongoClient(server.url) as c:  # the same data, now served by the new one
                    assert c.t.docs.find_one({"_id": "before"}) is not None
            finally:
                server.stop()
        finally:
            kill_leftover(pid, data)
    assert not (data / PIDFILE).exists()


def test_a_live_parents_server_is_not_taken_over(tmp_path: Path) -> None:
    with EmbeddedServer(tmp_path / "db") as first:
        with pytest.raises(EmbeddedServerError, match=r"^TIMELINE_DATA_DIR: .* is in use by"):
            EmbeddedServer(tmp_path / "db").start()
        assert first.process is not None and first.process.poll() is None
        with MongoClient(first.url) as c:
            c.admin.command("ping")
