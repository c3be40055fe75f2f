"""The processes of a soak run (`python -m benchmarks soak`), as a deployment runs them: `timeline
db` (the embedded database), `timeline serve --no-worker` and W `timeline worker` processes, each
of which can be SIGKILLed and started again on the same port and URL (benchmarks/soak_faults.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from app.storage.embedded import PIDFILE, free_port, terminate
from benchmarks.services import STOP_TIMEOUT_S, _database_url, _env, _wait_healthy

# A worker killed by the soak is started again after this (the issue: "a few seconds"), as a
# process supervisor with a restart delay would.
WORKER_RESTART_DELAY_S = 3.0
# How long a restarted worker may take to log that it runs.
WORKER_START_TIMEOUT_S = 90.0


@dataclass
class Proc:
    """One `timeline` process of the cluster and the arguments it is (re)started with."""

    name: str
    args: list[str]
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0


@dataclass
class Cluster:
    data_dir: Path
    workers: int
    strategy: str
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    mongodb_url: str = ""
    procs: dict[str, Proc] = field(default_factory=dict)
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "serve.log"

    def env(self) -> dict[str, str]:
        env = _env(self.data_dir, self.mongodb_url or None)
        env["TIMELINE_STRATEGY"] = self.strategy
        env.update(self.extra_env)
        return env

    def _spawn(self, proc: Proc) -> None:
        assert self._log is not None
        proc.popen = subprocess.Popen(
            [sys.executable, "-m", "entrypoints", *proc.args],
            cwd=self.data_dir,
            env=self.env(),
            stdout=subprocess.PIPE if proc.args[0] == "db" else self._log,
            stderr=self._log,
        )
        proc.starts += 1

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed by stop())
        db = Proc("db", ["db", "--port", str(free_port())])
        self.procs["db"] = db
        self._spawn(db)
        assert db.popen is not None
        self.mongodb_url = _database_url(db.popen)
        api = Proc("api", ["serve", "--host", "127.0.0.1", "--port", str(self.port), "--no-worker"])
        self.procs["api"] = api
        self.start_api()
        for i in range(self.workers):
            name = f"worker-{i + 1}"
            self.procs[name] = Proc(name, ["worker", "--name", f"soak-{name}"])
            self.start_worker(name)

    def start_api(self) -> None:
        api = self.procs["api"]
        self._spawn(api)
        assert api.popen is not None
        _wait_healthy(api.popen, self.url)

    def start_worker(self, name: str) -> None:
        """Start (again) and wait until it has logged that it runs."""
        proc = self.procs[name]
        before = self.log_path.read_bytes().count(f"worker soak-{name} started".encode())
        self._spawn(proc)
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while self.log_path.read_bytes().count(f"worker soak-{name} started".encode()) <= before:
            assert proc.popen is not None
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.popen.returncode}; see serve.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start within {WORKER_START_TIMEOUT_S}s")
            time.sleep(0.2)

    def kill(self, name: str) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        popen = self.procs[name].popen
        if popen is not None and popen.poll() is None:
            popen.send_signal(signal.SIGKILL)
            popen.wait()

    def db_server_pid(self) -> int | None:
        """The SecantusDB process under `timeline db` (its pidfile; None while it restarts)."""
        try:
            return int(json.loads((self.data_dir / "db" / PIDFILE).read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def kill_db_server(self) -> int | None:
        """SIGKILL the database server itself; `timeline db` restarts it (entrypoints.supervise)."""
        pid = self.db_server_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return None
        return pid

    def pids(self) -> dict[str, int]:
        """Every live process of the cluster by role (the database server as `db-server`)."""
        out = {n: p.popen.pid for n, p in self.procs.items() if p.popen and p.popen.poll() is None}
        server = self.db_server_pid()
        if server is not None:
            out["db-server"] = server
        return out

    def stop(self) -> None:
        """Workers first (each finishes its event), then the API, then the database."""
        for name in [n for n in self.procs if n.startswith("worker")] + ["api", "db"]:
            proc = self.procs.get(name)
            if proc is not None and proc.popen is not None:
                terminate(proc.popen, STOP_TIMEOUT_S)
                if proc.popen.stdout is not None:
                    proc.popen.stdout.close()
        if self._log is not None:
            self._log.close()


def rss_bytes(pid: int) -> int | None:
    """Resident set size from /proc (Linux); None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except OSError:
                pass  # a file removed while we walked (a checkpoint's temporary file)
    return total


def health(url: str) -> dict[str, object] | None:
    try:
        r = httpx.get(f"{url}/health", timeout=2)
    except httpx.HTTPError:
        return None
    return dict(r.json()) if r.status_code == 200 else None
