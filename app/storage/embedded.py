"""The embedded default database: SecantusDB run as a child process on a free loopback port.

It speaks the MongoDB wire protocol, so the service talks to it exactly as to mongod. It runs
in its own process (not inside the API's event loop) so that a busy server cannot stall the API,
and so that tests can stop or kill it like a real database.

The child never outlives its parent: on Linux it gets a parent-death signal, and everywhere a
watchdog process (app/storage/embedded_guard.py) stops it when the parent's end of a pipe closes
without
a word. A pidfile in the data directory names the server and its parent, so that a start-up that
finds a server left behind (by an older version, or a watchdog that was killed too) stops it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from app.settings import EMBEDDED_DB_CACHE_MB_DEFAULT
from app.storage import embedded_guard

log = logging.getLogger("timeline.embedded")

# SecantusDB opens WiredTiger and starts listening in about a second; allow for slow CI machines.
START_TIMEOUT_S = 60.0
# Its clean stop takes ~2 s (checkpoint); after this we kill it.
STOP_TIMEOUT_S = 20.0
# The watchdog exits as soon as it reads the parent's release; this only bounds a stuck one.
WATCHDOG_EXIT_TIMEOUT_S = 5.0
# In the data directory: {"pid": server, "parent": the process that started it, "storage": path}.
PIDFILE = "timeline-embedded.pid"
# SecantusDB advertises itself as a one-node replica set (so that transactions work) and keeps
# an oplog of every write: by default for an hour and up to 100,000 entries, each holding the
# written document or its changed fields. Nothing here reads it (no change streams, no
# secondaries, no point-in-time restore), yet it was what grew: a soak hour took the data
# directory from 13 to 261 MiB and the server's RSS from 66 to 395 MiB for 12 MiB of
# collections (docs/benchmarks.md, "Soak"). A scratch server under 400 updates a second of a
# 4 KB document: oplog file 222 MiB and RSS 230 MiB after 2 minutes with the defaults, 12 MiB
# and 89 MiB with a 5,000-entry cap. The server prunes every 1,000 writes, oldest first, whichever
# bound is reached; the file keeps its largest size and reuses the space.
OPLOG_RETENTION_S = 60
OPLOG_MAX_ENTRIES = 5_000
# glibc's allocator settings for the server process (read by glibc at start; ignored elsewhere).
# SecantusDB is a Python server with a thread per connection: glibc gives threads their own
# arenas (up to 8 per core) and keeps each arena's high-water mark, and it raises its mmap
# threshold after a large block is freed, so the big short-lived blocks of a query's results
# then come from (and stay in) the heap. In the soak's hour at 4 ops/s its RSS grew 3-8 MiB a
# minute (89 -> 186 MiB in the 14 minutes before a restart dropped it to 102 MiB with the same
# data) while its Python objects (tracemalloc) held 19-22 MiB, WiredTiger's cache 2-8 MiB, and
# the malloc arenas' free space and the other threads' arenas most of the rest. With these
# settings the growth fell by a fifth to a third in 10- and 20-minute soaks, lag unchanged; the
# rest is WiredTiger's cache (bounded by `cache_mb` since) and the session and cursor objects
# SecantusDB never frees (docs/benchmarks.md, "The database server's memory"). The GIL
# serialises the server's allocations anyway, so two arenas cost it little; a fixed mmap
# threshold sends blocks of 128 KiB and more to mmap, returned when freed.
SERVER_MALLOC_ENV = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "131072"}
# <linux/prctl.h>
PR_SET_PDEATHSIG = 1
# The data directory and everything the server writes in it are its owner's alone: they hold
# every user's statuses and token hashes (docs/security.md).
DATA_DIR_MODE = 0o700
CHILD_UMASK = 0o077


def terminate(proc: subprocess.Popen[Any], timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if `proc` has not exited within `timeout_s`; waits for it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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


def _parent_death_signal() -> Callable[[], None] | None:
    """A `preexec_fn` asking Linux to SIGKILL the child when its parent dies; None elsewhere.

    SIGKILL, not SIGTERM: once, in a full-suite run, an orphan sent SIGTERM this way was still
    running 30 s later (cause not found), and nobody waits for its clean stop; `timeline serve` and
    `timeline db` sync each commit, so a SIGKILL loses nothing acknowledged (docs/security.md).
    The watchdog (app/storage/embedded_guard.py) still tries SIGTERM first where this signal is
    absent.

    Linux sends it when the *thread* that forked the child exits, so a server started from a
    worker thread (`asyncio.to_thread`) would die with that thread: there only the watchdog
    guards it."""
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:  # in the child, between fork and exec: nothing that may lock
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the request was made
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


class EmbeddedServer:
    """Start with `start()` (or as a context manager); `url` is then a MONGODB_URL to share.

    `parent_death_signal` and `watchdog` are the two guards against outliving this process;
    both are on unless a test turns one off to check the other. The server's oplog holds at most
    `oplog_max_entries` entries (plus the 1,000 writes between two of its prunes) and none older
    than `oplog_retention_s`, so its files and memory grow with the live data only. Its
    WiredTiger cache holds at most `cache_mb` MiB (EMBEDDED_DB_CACHE_MB, app/settings.py)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        sync_on_commit: bool = False,
        log_path: Path | None = None,
        parent_death_signal: bool = True,
        watchdog: bool = True,
        oplog_retention_s: int = OPLOG_RETENTION_S,
        oplog_max_entries: int = OPLOG_MAX_ENTRIES,
        cache_mb: int = EMBEDDED_DB_CACHE_MB_DEFAULT,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.sync_on_commit = sync_on_commit
        self.log_path = log_path
        self.parent_death_signal = parent_death_signal
        self.watchdog = watchdog
        self.oplog_retention_s = oplog_retention_s
        self.oplog_max_entries = oplog_max_entries
        self.cache_mb = cache_mb
        self.process: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    @property
    def pidfile(self) -> Path:
        return self.data_dir / PIDFILE

    @property
    def storage(self) -> str:
        """The --storage-path the server runs with (absolute: it identifies the server)."""
        return str(self.data_dir.resolve())

    @property
    def url(self) -> str:
        # retryWrites=false: SecantusDB records every retryable write for 30 minutes and scans
        # (past 10,000 of them: sorts) that record on every write, so a busy embedded server
        # slows down steadily (a test workload ran 37 s, 42 s, 69 s, 92 s in a row with them,
        # a flat 30-37 s without). On loopback a driver retry buys little: a failed request
        # answers 503 and the client retries with its Idempotency-Key; the worker retries events.
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true&retryWrites=false"

    def start(self) -> EmbeddedServer:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=DATA_DIR_MODE)
        self.data_dir.chmod(DATA_DIR_MODE)  # also one made before, by an older version
        self._stop_stale()
        cmd = [
            *_server_command(),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--storage-path",
            self.storage,
            "--log-level",
            "WARNING",
            "--oplog-retention-seconds",
            str(self.oplog_retention_s),
            "--oplog-max-entries",
            str(self.oplog_max_entries),
            "--cache-size",
            f"{self.cache_mb}M",
        ]
        if self.sync_on_commit:
            cmd.append("--sync-on-commit")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        # A new process group: Ctrl-C in a terminal reaches us, and we stop the child ourselves.
        self.process = subprocess.Popen(
            cmd,
            env={**SERVER_MALLOC_ENV, **os.environ},  # an operator's own settings win
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_parent_death_signal() if self.parent_death_signal else None,
            umask=CHILD_UMASK,
        )
        self.pidfile.write_text(
            json.dumps({"pid": self.process.pid, "parent": os.getpid(), "storage": self.storage})
        )
        self.pidfile.chmod(0o600)
        if self.watchdog:
            self._start_watchdog(self.process.pid)
        self._wait_until_ready()
        return self

    def _start_watchdog(self, pid: int) -> None:
        # Its stdin is a pipe only this process writes to (pipes are not inherited by other
        # children), so its end of file means this process is gone. Its own session: a
        # terminal's signals to our process group must not take it down with us.
        script = embedded_guard.__file__
        self._watchdog = subprocess.Popen(
            [sys.executable, script, str(pid), self.storage, str(STOP_TIMEOUT_S)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _release(self, pid: int) -> None:
        """After the server has exited: dismiss its watchdog, forget its pidfile."""
        dog, self._watchdog = self._watchdog, None
        if dog is not None and dog.stdin is not None:
            try:
                dog.stdin.write(embedded_guard.RELEASE)
                dog.stdin.close()
            except BrokenPipeError:
                pass  # it was killed: nothing left to dismiss
            try:
                dog.wait(WATCHDOG_EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                dog.kill()
                dog.wait()
        try:
            if json.loads(self.pidfile.read_text()).get("pid") == pid:
                self.pidfile.unlink()
        except (OSError, ValueError):
            pass

    def _stop_stale(self) -> None:
        """Stop a server left on this data directory by a parent that is gone (an orphan);
        refuse one whose parent still runs it."""
        try:
            record = json.loads(self.pidfile.read_text())
            pid, parent = int(record["pid"]), int(record["parent"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError):
            self.pidfile.unlink(missing_ok=True)  # unreadable: whoever wrote it is not running
            return
        info = embedded_guard.process_info(pid)
        if info is None or not embedded_guard.is_server_on(pid, self.storage):
            self.pidfile.unlink(missing_ok=True)
            return
        if info.ppid == parent:
            raise EmbeddedServerError(
                f"TIMELINE_DATA_DIR: {self.data_dir} is in use by the embedded server (pid {pid}) "
                f"of process {parent}; stop that process or use another TIMELINE_DATA_DIR"
            )
        log.warning(
            "TIMELINE_DATA_DIR: a stale embedded server (pid %d, whose parent %d is gone) held "
            "%s; stopping it",
            pid,
            parent,
            self.data_dir,
        )
        embedded_guard.terminate(pid, self.storage, STOP_TIMEOUT_S)
        if embedded_guard.is_server_on(pid, self.storage):
            raise EmbeddedServerError(
                f"TIMELINE_DATA_DIR: the stale embedded server (pid {pid}) on {self.data_dir} "
                f"could not be stopped"
            )
        self.pidfile.unlink(missing_ok=True)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                self._release(self.process.pid)
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
        if proc is None:
            return
        terminate(proc, STOP_TIMEOUT_S)
        self._release(proc.pid)

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests of durability and outages)."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        self._release(proc.pid)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
