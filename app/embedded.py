"""The embedded default database: SecantusDB run as a child process on a free loopback port.

It speaks the MongoDB wire protocol, so the service talks to it exactly as to mongod. It runs
in its own process (not inside the API's event loop) so that a busy server cannot stall the API,
and so that tests can stop or kill it like a real database.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from pymongo import MongoClient
from pymongo.errors import PyMongoError

# SecantusDB opens WiredTiger and starts listening in about a second; allow for slow CI machines.
START_TIMEOUT_S = 60.0
# Its clean stop takes ~2 s (checkpoint); after this we kill it.
STOP_TIMEOUT_S = 20.0


class EmbeddedServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_command() -> list[str]:
    exe = Path(sys.executable).with_name("secantusd-py")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("secantusd-py")
    if found:
        return [found]
    raise EmbeddedServerError(
        "MONGODB_URL is unset and the embedded server is not installed; "
        "install the 'embedded' extra (pip install '.[embedded]') or set MONGODB_URL"
    )


class EmbeddedServer:
    """Start with `start()` (or as a context manager); `url` is then a MONGODB_URL to share."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        sync_on_commit: bool = False,
        log_path: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.sync_on_commit = sync_on_commit
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        # retryWrites=false: SecantusDB records every retryable write for 30 minutes and scans
        # (past 10,000 of them: sorts) that record on every write, so a busy embedded server
        # slows down steadily (a test workload ran 37 s, 42 s, 69 s, 92 s in a row with them,
        # a flat 30-37 s without). On loopback a driver retry buys little: a failed request
        # answers 503 and the client retries with its Idempotency-Key; the worker retries events.
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true&retryWrites=false"

    def start(self) -> EmbeddedServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            *_server_command(),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--storage-path",
            str(self.data_dir),
            "--log-level",
            "WARNING",
        ]
        if self.sync_on_commit:
            cmd.append("--sync-on-commit")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        # A new process group: Ctrl-C in a terminal reaches us, and we stop the child ourselves.
        self.process = subprocess.Popen(
            cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise EmbeddedServerError(
                    f"TIMELINE_DATA_DIR: the embedded server exited with code "
                    f"{self.process.returncode} (is another server using {self.data_dir}?)"
                )
            try:
                client: MongoClient[dict[str, object]] = MongoClient(
                    self.url, serverSelectionTimeoutMS=500
                )
                with client as c:
                    c.admin.command("ping")
                return
            except PyMongoError:
                time.sleep(0.1)
        self.stop()
        raise EmbeddedServerError(f"the embedded server did not answer within {START_TIMEOUT_S}s")

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests of durability and outages)."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
