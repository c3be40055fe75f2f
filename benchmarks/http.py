"""`python -m benchmarks http`: `GET /timeline` over HTTP against the raw driver's page, side by
side in one run (issue 23, docs/benchmarks.md "The HTTP path").

Tried as a new user would: `timeline db` and `timeline serve` (its worker in-process), a reader
whose receiver_copies timeline holds `--entries` statuses of one friend, posted through the API.
Then `--rounds` rounds of `--pages` steps; each step reads one first page (limit 20) of each
kind, one after the other in an order that rotates, each timed on its own, so that a busy
machine's moments slow all kinds alike:

- `driver`: the page's query (`strategy.first_page_query`: the same filter, sort, limit and
  projection) through a plain `AsyncMongoClient` in this process, its documents decoded;
- `http`: `GET /timeline` on one keep-alive connection by a minimal HTTP/1.1 client (a request
  written as bytes, the response read by its Content-Length, the status checked), so that the
  figure is the service's cost and hardly the client's;
- `httpx`: the same request through `httpx.AsyncClient`, what a Python client sees;
- `bare`: `GET /timeline`, by the same minimal client, of the leanest HTTP service of the same
  page on the same stack (benchmarks/bare_http.py: one Starlette route on uvicorn, the
  service's own `read_page` and body, no middleware, authentication or response model), so
  that the run says what any service on this stack reaches and what the service's web layer
  costs above it. Its body must be the service's, byte for byte (`bare_body_matches`).

A kind's rate in a round is its pages over the time they took; the ratio of a round is its
`http` (or `httpx`, `bare`) rate over its `driver` rate, and the report gives the median ratio
and its spread over the rounds (min, max), and each process's CPU per page (Linux /proc: where
the time goes). Rate limits are counted as in production (`RATE_LIMITS` with every rule's limit
raised so that the benchmark is never refused). Last, the round trips of one `GET /timeline`:
the same app in this process, its client's commands counted (benchmarks.monitor).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from bson import ObjectId
from pymongo import AsyncMongoClient, monitoring

from app.api import create_app
from app.context import strategy_over
from app.settings import load_settings
from app.storage.embedded import free_port, terminate
from app.storage.store import Store
from benchmarks.monitor import CommandCounter, Window
from benchmarks.services import serve_on_database, wait_answering

# The page every kind reads: the API's default limit.
PAGE = 20
DEFAULTS = {"entries": 200, "rounds": 30, "pages": 30}
# Every rule counted, none ever reached: what a well-behaved client costs in production.
BENCH_RATE_LIMITS = "*=100000000/1h"
# `timeline db` names the database `timeline` (MONGODB_DB's default).
DB_NAME = "timeline"
# Pages of each kind before the rounds, not measured (connections, caches, the JIT-less
# interpreter's first calls).
WARMUP_PAGES = 30
TEXT = "a status of typical length, " * 6
# How long the in-process worker may take to fan the statuses out.
FANOUT_TIMEOUT_S = 120.0
KINDS = ("driver", "http", "httpx", "bare")
# The repository root: the bare service is started from it (`-m uvicorn benchmarks.bare_http:app`).
ROOT = Path(__file__).resolve().parents[1]
# How long the bare service may take to stop.
BARE_STOP_S = 10.0
# Requests whose round trips are counted, the first to warm up (`round_trips`).
WARM_TRIES = 4


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks http",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    for name, value in DEFAULTS.items():
        p.add_argument(f"--{name}", type=int, default=value, help=f"(default {value})")
    p.add_argument(
        "--rate-limits",
        default=BENCH_RATE_LIMITS,
        help=f"RATE_LIMITS of the service (default {BENCH_RATE_LIMITS!r}: all counted; "
        "'off' measures without them)",
    )
    p.add_argument("--out", type=Path, required=True, help="directory for http.json")
    args = p.parse_args(argv)
    if min(getattr(args, n) for n in DEFAULTS) < 1:
        p.error("every count must be at least 1")
    return args


class RawHttp:
    """One keep-alive HTTP/1.1 connection sending one prepared GET again and again."""

    def __init__(self, url: str, path: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self) -> bytes:
        """The body of one response (RuntimeError unless it is a 200)."""
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        if status != b"200":
            raise RuntimeError(f"GET answered {status.decode()}: {body[:200]!r}")
        return body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def _seed(client: httpx.AsyncClient, entries: int) -> dict[str, str]:
    """A reader and a friend who posted `entries` statuses, through the API; the reader's
    headers, once the worker has fanned every status out."""

    async def user(handle: str) -> dict[str, str]:
        r = await client.post("/users", json={"handle": handle})
        r.raise_for_status()
        return {"authorization": f"Bearer {r.json()['token']}"}

    reader, author = await user("reader"), await user("author")
    r = await client.post("/friend-requests", json={"to": "author"}, headers=reader)
    r.raise_for_status()
    (await client.post("/friend-requests/reader/accept", headers=author)).raise_for_status()
    for i in range(entries):
        r = await client.post("/statuses", json={"text": f"{i}: {TEXT}"}, headers=author)
        r.raise_for_status()
    deadline = time.monotonic() + FANOUT_TIMEOUT_S
    while (await client.get("/timeline/unread_count", headers=reader)).json()["count"] < entries:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not fan {entries} statuses out in time")
        await asyncio.sleep(0.2)
    return reader


_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def _processes() -> dict[str, int]:
    """The pids of this run's API (`timeline serve`) and database server (SecantusDB), found
    among this process's descendants by their command lines; `bench` is this process."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, rest = stat.read_text().split(" ", 1)
            children.setdefault(int(rest.rsplit(")", 1)[1].split()[1]), []).append(int(head))
        except (OSError, ValueError, IndexError):
            continue
    found = {"bench": os.getpid()}
    todo = list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"entrypoints serve" in cmd:
            found["api"] = pid
        elif b"secantus" in cmd.lower():
            found["database"] = pid
        elif b"benchmarks.bare_http" in cmd:
            found["bare"] = pid
    return found


@dataclass
class Block:
    """One kind's pages of one round: their rate and the CPU milliseconds per page of each
    process."""

    rate: float
    cpu_ms: dict[str, float]


async def _round(
    pages: dict[str, Callable[[], Awaitable[Any]]], steps: int, pids: dict[str, int], turn: int
) -> dict[str, Block]:
    """`steps` steps of one page of each kind (the order rotating by step): each kind's rate
    and CPU per page."""
    kinds = list(pages)
    seconds = dict.fromkeys(kinds, 0.0)
    cpu = {kind: dict.fromkeys(pids, 0.0) for kind in kinds}
    for step in range(steps):
        shift = (turn + step) % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            before = {name: _cpu_s(pid) for name, pid in pids.items()}
            start = time.perf_counter()
            await pages[kind]()
            seconds[kind] += time.perf_counter() - start
            for name, pid in pids.items():
                cpu[kind][name] += _cpu_s(pid) - before[name]
    return {
        kind: Block(
            steps / seconds[kind], {name: c * 1000 / steps for name, c in cpu[kind].items()}
        )
        for kind in kinds
    }


@contextmanager
def _counted(counter: CommandCounter) -> Iterator[None]:
    """`counter` registered for every client created inside (PyMongo's global listeners: the
    app builds its own client), so that the in-process app's commands are counted."""
    monitoring.register(counter)
    yield


async def round_trips(
    mongodb_url: str, headers: dict[str, str], counter: CommandCounter, rate_limits: str
) -> Window:
    """The commands of one warm `GET /timeline` (the fewest of WARM_TRIES - 1 after one to warm
    up: a busy machine may delay one past TOKEN_CACHE_S) by the same app, in this process, on
    the same database."""
    settings = load_settings(
        _env_file=None,
        mongodb_url=mongodb_url,
        mongodb_db=DB_NAME,
        timeline_strategy="receiver_copies",
        rate_limits=rate_limits,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            await app(dict(scope, state=dict(state or {})), receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            windows = []
            for _ in range(WARM_TRIES):
                with counter.window() as w:
                    r = await client.get("/timeline", headers=headers)
                r.raise_for_status()
                windows.append(w)
    return min(windows[1:], key=lambda w: w.round_trips)


@contextmanager
def bare_service(mongodb_url: str, reader: ObjectId) -> Iterator[str]:
    """benchmarks/bare_http.py under uvicorn (the protocol and loop `timeline serve` runs), as a
    child process serving `reader`'s first page; its URL once it answers."""
    port = free_port()
    env = dict(os.environ, MONGODB_URL=mongodb_url, MONGODB_DB=DB_NAME, BARE_READER=str(reader))
    argv = ["--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "benchmarks.bare_http:app", *argv, "--no-access-log"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_answering(proc, f"{url}/timeline", "the bare service")
        yield url
    finally:
        terminate(proc, BARE_STOP_S)


async def measure(url: str, mongodb_url: str, args: argparse.Namespace) -> dict[str, Any]:
    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as client,
        AsyncExitStack() as stack,
    ):
        headers = await _seed(client, args.entries)
        mongo: AsyncMongoClient[Any] = AsyncMongoClient(mongodb_url, tz_aware=True)
        store = Store.bind(mongo[DB_NAME])
        reader = await store.users.find_one({"handle": "reader"})
        assert reader is not None
        strategy = strategy_over(store, load_settings(), "receiver_copies")
        # PAGE + 1: the API reads one more than the page, to know whether an older one exists.
        query = await strategy.first_page_query(ObjectId(reader["_id"]), PAGE + 1)
        raw = RawHttp(url, "/timeline", headers)
        first = await raw.get()
        bare = RawHttp(
            stack.enter_context(bare_service(mongodb_url, reader["_id"])), "/timeline", {}
        )
        bare_matches = await bare.get() == first

        async def driver() -> list[Any]:
            cursor = query.collection.find(query.filter, query.projection)
            return await cursor.sort(query.sort).limit(query.limit).to_list()

        async def via_httpx() -> None:
            (await client.get("/timeline", headers=headers)).raise_for_status()

        pages: dict[str, Callable[[], Awaitable[Any]]] = {
            "driver": driver,
            "http": raw.get,
            "httpx": via_httpx,
            "bare": bare.get,
        }
        pids = _processes()
        try:
            await _round(pages, WARMUP_PAGES, pids, 0)
            blocks: dict[str, list[Block]] = {k: [] for k in KINDS}
            for r in range(args.rounds):
                for kind, block in (await _round(pages, args.pages, pids, r)).items():
                    blocks[kind].append(block)
            documents = len(await driver())
        finally:
            await raw.close()
            await bare.close()
            await mongo.close()
    counter = CommandCounter()
    with _counted(counter):
        w = await round_trips(mongodb_url, headers, counter, args.rate_limits)
    return {**_result(args, blocks, documents, len(first), w), "bare_body_matches": bare_matches}


def _result(
    args: argparse.Namespace,
    blocks: dict[str, list[Block]],
    documents: int,
    body_bytes: int,
    w: Window,
) -> dict[str, Any]:
    rates = {kind: [b.rate for b in blocks[kind]] for kind in KINDS}

    def spread(values: list[float]) -> dict[str, float]:
        return {
            "median": round(statistics.median(values), 3),
            "min": round(min(values), 3),
            "max": round(max(values), 3),
        }

    ratios = {
        kind: [h / d for h, d in zip(rates[kind], rates["driver"], strict=True)]
        for kind in ("http", "httpx", "bare")
    }
    return {
        "strategy": "receiver_copies",
        "timeline_entries": args.entries,
        "page_limit": PAGE,
        "driver_documents_per_page": documents,
        "http_body_bytes": body_bytes,
        "rate_limits": args.rate_limits,
        "rounds": args.rounds,
        "pages_per_round": args.pages,
        "pages_per_s": {kind: spread(rates[kind]) for kind in KINDS},
        "ratio_http_over_driver": spread(ratios["http"]),
        "ratio_httpx_over_driver": spread(ratios["httpx"]),
        # The stack's own floor (benchmarks/bare_http.py), and the service over it.
        "ratio_bare_over_driver": spread(ratios["bare"]),
        "ratio_http_over_bare": spread(
            [h / b for h, b in zip(rates["http"], rates["bare"], strict=True)]
        ),
        # CPU milliseconds per page of each process over all of a kind's blocks (the API's idle
        # worker and the rate limits' background sync are in `api` in every kind's blocks).
        "cpu_ms_per_page": {
            kind: {
                name: round(statistics.mean(b.cpu_ms[name] for b in blocks[kind]), 3)
                for name in blocks[kind][0].cpu_ms
            }
            for kind in KINDS
        },
        "request_round_trips": w.round_trips,
        "request_commands": {f"{n} {c}": k for (n, c), k in sorted(w.commands.items())},
        "target_ratio": 0.85,
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    env = {"TIMELINE_STRATEGY": "receiver_copies", "RATE_LIMITS": args.rate_limits}
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve_on_database(Path(tmp), env) as (url, mongodb_url),
    ):
        result = asyncio.run(measure(url, mongodb_url, args))
    out = args.out / "http.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0
