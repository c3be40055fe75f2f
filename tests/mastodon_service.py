"""A real `timeline serve` for the Mastodon client tests: a subprocess on a free port, its own
database on the session's server (the embedded one unless TEST_MONGODB_URL), its in-process
worker; clients talk to it over a socket exactly as they would to a Mastodon server."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pymongo

from app.storage.embedded import free_port
from tests.harness import TEST_RATE_LIMITS
from tests.test_persistence import EXIT_TIMEOUT_S, POLL_S, READY_TIMEOUT_S, TIMELINE

# Friends' timelines follow the worker; it drains a session's few hundred events in well
# under a second when idle, and this bound only turns a stuck worker into a failure.
DRAIN_TIMEOUT_S = 30.0


@dataclass
class Service:
    base_url: str
    http: httpx.Client
    log: Path

    def drained(self) -> None:
        """Until the worker has applied every event (then every timeline is up to date)."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while self.http.get("/health").json()["pending_events"]:
            assert time.monotonic() < deadline, "the worker did not drain"
            time.sleep(0.05)


@contextmanager
def serve(mongo_url: str, strategy: str, workdir: Path, **env: str) -> Iterator[Service]:
    """`timeline serve` with TIMELINE_STRATEGY=strategy until the block ends, then SIGTERM
    (it must exit cleanly) and its database dropped."""
    port = free_port()
    db = f"masto_{strategy}_{uuid.uuid4().hex[:8]}"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("TIMELINE_", "MONGODB_"))}
    # Whole client sessions in seconds: the rate limits are counted, but generous (their
    # defaults are tests/test_ratelimit.py's).
    environ.update(
        MONGODB_URL=mongo_url,
        MONGODB_DB=db,
        TIMELINE_STRATEGY=strategy,
        RATE_LIMITS=TEST_RATE_LIMITS,
        **env,
    )
    log = workdir / f"serve-{port}.log"
    with log.open("wb") as out:
        # cwd: an empty directory, so that no developer's .env is read.
        proc = subprocess.Popen(
            [str(TIMELINE), "serve", "--port", str(port)],
            cwd=workdir,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=30) as client:
                deadline = time.monotonic() + READY_TIMEOUT_S
                while True:
                    assert proc.poll() is None, log.read_text()
                    try:
                        if client.get("/health").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert time.monotonic() < deadline, "timeline serve did not answer"
                    time.sleep(POLL_S)
                yield Service(base, client, log)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(EXIT_TIMEOUT_S) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            with pymongo.MongoClient(mongo_url) as c:
                c.drop_database(db)
