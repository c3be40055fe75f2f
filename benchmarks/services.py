"""The service processes `python -m benchmarks load` starts for itself, in a temporary directory.

Two arrangements, both on the embedded database with `--sync-on-commit` (as `timeline serve`
runs it by default):
- workers = 0: one `timeline serve`, its fanout worker in the same process (the default
  deployment of `make run`);
- workers = N >= 1: `timeline db` (the embedded database alone), `timeline serve --no-worker`
  and N `timeline worker` processes, all on that database's MONGODB_URL (the production shape:
  API and workers scaled separately).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

import httpx

from app.storage.embedded import free_port, terminate

# How long `timeline serve` may take to answer /health (the embedded server starts first).
SERVE_START_TIMEOUT_S = 90.0
# How long `timeline db` may take to print its MONGODB_URL.
DB_START_TIMEOUT_S = 60.0
# How long a process may take to stop after SIGTERM before it is killed (a worker finishes the
# event it is applying first).
STOP_TIMEOUT_S = 60.0


# The load benchmark measures what the service sustains, from one address and a few tokens far
# faster than any client may: the rate limits (app.limits.ratelimit) are off for it unless
# RATE_LIMITS
# is set (`benchmarks abuse` measures them).
LOAD_RATE_LIMITS = "off"


def _env(
    data_dir: Path, mongodb_url: str | None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URL", "MONGODB_DB")}
    env.setdefault("RATE_LIMITS", LOAD_RATE_LIMITS)
    env.update(extra or {})
    env["TIMELINE_DATA_DIR"] = str(data_dir)
    if mongodb_url is not None:
        env["MONGODB_URL"] = mongodb_url
    return env


@contextmanager
def _process(
    args: list[str],
    data_dir: Path,
    log: IO[bytes],
    mongodb_url: str | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m entrypoints ARGS`, stopped with SIGTERM (then killed) on exit. cwd: the temporary
    directory, so that a developer's .env does not configure it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "entrypoints", *args],
        cwd=data_dir,
        env=_env(data_dir, mongodb_url, extra_env),
        stdout=subprocess.PIPE if args[0] == "db" else log,
        stderr=log,
    )
    try:
        yield proc
    finally:
        terminate(proc, STOP_TIMEOUT_S)
        if proc.stdout is not None:
            proc.stdout.close()


def _wait_healthy(proc: subprocess.Popen[bytes], url: str) -> None:
    wait_answering(proc, f"{url}/health", "timeline serve (its log: serve.log)")


def wait_answering(proc: subprocess.Popen[bytes], url: str, name: str) -> None:
    """Until `url` answers 200 (RuntimeError if `proc` exits first or SERVE_START_TIMEOUT_S
    passes); `name` is the process in the error."""
    deadline = time.monotonic() + SERVE_START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not answer within {SERVE_START_TIMEOUT_S}s")
        time.sleep(0.2)


def _wait_started(proc: subprocess.Popen[bytes], log_path: Path, name: str) -> None:
    """Until the worker has logged that it runs: a load started earlier would count the
    worker's start-up (connecting, checking the strategy) as lag."""
    deadline = time.monotonic() + SERVE_START_TIMEOUT_S
    while f"worker {name} started".encode() not in log_path.read_bytes():
        if proc.poll() is not None:
            raise RuntimeError(f"timeline worker exited with {proc.returncode}; see serve.log")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timeline worker did not start within {SERVE_START_TIMEOUT_S}s")
        time.sleep(0.2)


def _database_url(proc: subprocess.Popen[bytes]) -> str:
    """The MONGODB_URL line `timeline db` prints once its server is up."""
    assert proc.stdout is not None
    deadline = time.monotonic() + DB_START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode().strip()
        if line.startswith("MONGODB_URL="):
            return line.removeprefix("MONGODB_URL=")
        if not line and proc.poll() is not None:
            break
    raise RuntimeError("timeline db did not print its MONGODB_URL; see serve.log")


@contextmanager
def own_service(
    data_dir: Path, workers: int = 0, concurrency: int = 1, env: dict[str, str] | None = None
) -> Iterator[str]:
    """The service on a free port, with the embedded database in `data_dir`; yields its URL.
    Each of the `workers` processes runs `concurrency` loops (`timeline worker --concurrency`).
    Every process logs to `data_dir/serve.log`; `env` is added to their environment (e.g.
    TIMELINE_STRATEGY)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    with ExitStack() as stack:
        log = stack.enter_context(open(data_dir / "serve.log", "ab"))
        if workers == 0:
            _wait_healthy(stack.enter_context(_process(serve, data_dir, log, None, env)), url)
            yield url
            return
        mongodb_url = _database_url(stack.enter_context(_process(["db"], data_dir, log, None, env)))
        api = stack.enter_context(
            _process([*serve, "--no-worker"], data_dir, log, mongodb_url, env)
        )
        _wait_healthy(api, url)  # the API has created the indexes and the service config
        started = []
        for i in range(workers):
            name = f"load-worker-{i + 1}"
            args = ["worker", "--name", name, "--concurrency", str(concurrency)]
            proc = stack.enter_context(_process(args, data_dir, log, mongodb_url, env))
            started.append((proc, name))
        for proc, name in started:
            _wait_started(proc, data_dir / "serve.log", name)
        yield url


@contextmanager
def serve_on_database(data_dir: Path, env: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """`timeline db` and `timeline serve` (its worker in-process, as `make run`) on it, with
    `env` added to the environment; yields (the API's URL, the database's MONGODB_URL), so that
    a benchmark can read what the worker recorded (`benchmarks fair`, `benchmarks abuse`)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    with ExitStack() as stack:
        log = stack.enter_context(open(data_dir / "serve.log", "ab"))
        mongodb_url = _database_url(stack.enter_context(_process(["db"], data_dir, log)))
        api = stack.enter_context(_process(serve, data_dir, log, mongodb_url, env))
        _wait_healthy(api, url)
        yield url, mongodb_url
