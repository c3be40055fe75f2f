"""`timeline serve` on the embedded default, as a real process over real HTTP: data survives a
restart (SIGTERM, then a new process on the same TIMELINE_DATA_DIR), and no database process is
left behind."""

from __future__ import annotations

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

from app.storage.embedded import START_TIMEOUT_S, STOP_TIMEOUT_S, free_port
from tests.harness import TEST_RATE_LIMITS

TIMELINE = Path(sys.executable).with_name("timeline")
# Python start-up and the embedded server's start (about a second) on a busy machine.
READY_TIMEOUT_S = START_TIMEOUT_S + 30
# The API's graceful shutdown plus the embedded server's clean stop.
EXIT_TIMEOUT_S = STOP_TIMEOUT_S + 30
POLL_S = 0.1


def database_processes(data_dir: Path) -> list[int]:
    """Pids of live processes whose command line names `data_dir` (the embedded server's
    --storage-path), found through /proc so that an orphan is found too."""
    needle = str(data_dir).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue  # it exited meanwhile
        if needle in cmdline and b"secantusd" in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def wait_until_gone(data_dir: Path, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (left := database_processes(data_dir)) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return left


@contextmanager
def serve(data_dir: Path, strategy: str, workdir: Path) -> Iterator[httpx.Client]:
    """`timeline serve` until the block ends, then SIGTERM; it must exit and stop its database."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URL"}
    # Generous limits: the browser tests sign up and post from one address (tests/harness.py).
    env.update(
        TIMELINE_DATA_DIR=str(data_dir), TIMELINE_STRATEGY=strategy, RATE_LIMITS=TEST_RATE_LIMITS
    )
    log = (workdir / f"serve-{port}.log").open("wb")
    # cwd: an empty directory, so that no developer's .env is read.
    proc = subprocess.Popen(
        [str(TIMELINE), "serve", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while True:
                assert proc.poll() is None, (workdir / f"serve-{port}.log").read_text()
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "timeline serve did not answer"
                time.sleep(POLL_S)
            assert len(database_processes(data_dir)) == 1  # it started exactly one
            yield client
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(EXIT_TIMEOUT_S) == 0  # a requested, clean shutdown
        # Stopped, not abandoned: the database was stopped before `serve` exited.
        assert database_processes(data_dir) == [], (workdir / f"serve-{port}.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in wait_until_gone(data_dir, 0):  # never leave a server behind a failed test
            os.kill(pid, signal.SIGKILL)
        log.close()


# One strategy: persistence is the embedded server's job, and each run costs two starts and stops
# of a process. receiver_copies has the most derived data (timeline entries) to keep.
@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["receiver_copies"])
def test_data_survives_a_restart_of_serve(tmp_path: Path, strategy: str) -> None:
    data_dir = tmp_path / "data"
    with serve(data_dir, strategy, tmp_path) as client:
        health = client.get("/health").json()
        assert health["database"] == "embedded" and health["strategy"] == strategy
        created = client.post("/users", json={"handle": "alice", "display_name": "Alice"})
        assert created.status_code == 201, created.text
        user = created.json()
        auth = {"Authorization": f"Bearer {user['token']}"}
        posted = client.post("/statuses", json={"text": "still here?"}, headers=auth)
        assert posted.status_code == 201, posted.text
        status = posted.json()
    assert (data_dir / "db").is_dir()

    with serve(data_dir, strategy, tmp_path) as client:
        me = client.get("/me", headers=auth)
        assert me.status_code == 200, me.text  # the token still works
        assert me.json()["id"] == user["id"] and me.json()["display_name"] == "Alice"
        assert client.get(f"/statuses/{status['id']}", headers=auth).json() == status
        timeline = client.get("/timeline", headers=auth).json()
        assert timeline["items"] == [status]
        # The handle is still taken.
        again = client.post("/users", json={"handle": "alice"})
        assert again.status_code == 409, again.text
