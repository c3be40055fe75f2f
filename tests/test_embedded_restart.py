"""When its embedded database dies, `timeline serve` restarts it in place and goes on serving
(nothing acknowledged is lost); a database that keeps dying ends the process for a supervisor
to see, never 503s forever (entrypoints/supervise.py, docs/operations.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient

from app.storage.embedded import EmbeddedServer, free_port
from entrypoints.supervise import CHECK_EVERY_S, EmbeddedSupervisor
from tests.test_embedded_lifetime import (
    READY_TIMEOUT_S,
    env_for,
    gone_within,
    kill_leftover,
    reaped,
    server_pid,
)

TIMELINE = Path(sys.executable).with_name("timeline")
# The bound on recovering from a fault.
RECOVERY_S = 30.0
POLL_S = 0.1


def wait_healthy(url: str, proc: subprocess.Popen[str], timeout_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        assert proc.poll() is None, f"timeline serve exited with {proc.returncode}"
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        time.sleep(POLL_S)
    raise AssertionError(f"not healthy within {timeout_s}s")


@pytest.mark.slow
def test_serve_restarts_its_killed_database_and_keeps_every_write(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(TIMELINE), "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env_for(data),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    pids: list[int] = []
    with reaped(proc):
        try:
            wait_healthy(url, proc, READY_TIMEOUT_S)
            pids.append(server_pid(data / "db"))
            token = httpx.post(f"{url}/users", json={"handle": "ann"}).json()["token"]
            auth = {"Authorization": f"Bearer {token}"}
            posted = httpx.post(f"{url}/statuses", json={"text": "before"}, headers=auth)
            assert posted.status_code == 201
            os.kill(pids[0], signal.SIGKILL)
            assert gone_within(pids[0], data / "db", RECOVERY_S)
            wait_healthy(url, proc, RECOVERY_S)
            pids.append(server_pid(data / "db"))
            assert pids[1] != pids[0]
            # The acknowledged write survived; the service writes again.
            again = httpx.get(f"{url}/statuses/{posted.json()['id']}", headers=auth)
            assert again.status_code == 200 and again.json()["text"] == "before"
            after = httpx.post(f"{url}/statuses", json={"text": "after"}, headers=auth)
            assert after.status_code == 201
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=60)
            assert proc.returncode == 0
            assert "the embedded database exited unexpectedly (code -9)" in stderr
            assert gone_within(pids[1], data / "db", RECOVERY_S)
        finally:
            for pid in pids:
                kill_leftover(pid, data / "db")


@pytest.mark.slow
def test_a_database_that_keeps_dying_is_given_up_on(tmp_path: Path) -> None:
    gave_up = threading.Event()
    server = EmbeddedServer(tmp_path / "db", sync_on_commit=True).start()
    supervisor = EmbeddedSupervisor(server, max_restarts=1, give_up=gave_up.set).start()
    try:
        first = server.process
        assert first is not None
        os.kill(first.pid, signal.SIGKILL)
        deadline = time.monotonic() + RECOVERY_S
        while supervisor.restarts < 1:  # counted once the new server answers
            assert time.monotonic() < deadline, "not restarted"
            time.sleep(POLL_S)
        assert server.process is not None and server.process.pid != first.pid
        with MongoClient(server.url, serverSelectionTimeoutMS=5000) as client:
            client.admin.command("ping")  # the same URL serves again
        assert not gave_up.is_set()
        os.kill(server.process.pid, signal.SIGKILL)  # the second death within the window
        assert gave_up.wait(RECOVERY_S)
        time.sleep(3 * CHECK_EVERY_S)
        assert server.process is not None and server.process.poll() is not None  # not restarted
        assert supervisor.restarts == 1
    finally:
        supervisor.stop()
        server.stop()
