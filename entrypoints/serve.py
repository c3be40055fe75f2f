"""`timeline serve` (the API, with the worker in-process unless --no-worker) and `timeline db`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from types import FrameType

from app.api.app import Background
from app.context import AppContext
from app.settings import Settings
from entrypoints.connections import uvicorn_config
from entrypoints.database import (
    database_url,
    ensure_strategy_ready,
    open_context,
    start_embedded,
)
from entrypoints.supervise import EmbeddedSupervisor

# How long the API keeps an idle keep-alive connection open. It must outlast every client's own
# idle expiry: uvicorn's default (5 s) equals httpx's `keepalive_expiry` (5 s), so a client could
# reuse a connection in the very moment the server closed it, and the request died with a
# ReadError (a connection reset; seen once in a 50-client load run). 75 s also outlasts the
# 60 s idle timeout of common load balancers (nginx, AWS ALB), which must close first.
KEEP_ALIVE_S = 75
# Claim loops of the in-process worker (fanout.pool.WorkerPool). Its round trips queue behind
# every request on this event loop, so one loop fell far behind a 50-client load (a drain as
# long as the load itself); several loops overlap those waits (docs/benchmarks.md).
IN_PROCESS_WORKER_LOOPS = 4


def in_process_worker(ctx: AppContext) -> Background:
    """The fanout worker the API runs beside its requests (create_app's `background`)."""
    from fanout.pool import WorkerPool

    return WorkerPool(ctx, concurrency=IN_PROCESS_WORKER_LOOPS)


def _guard(resolved: Settings, embedded: bool) -> None:
    async def run() -> None:
        async with open_context(resolved, embedded) as ctx:
            await ensure_strategy_ready(ctx)

    asyncio.run(run())


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from app.api import create_app

    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    # uvicorn shuts down gracefully on SIGTERM, then restores the previous handler and raises the
    # signal again. With the default handler the process would die right there, before
    # `database_url` stops the embedded server (an orphan holding the data directory); this
    # handler turns that second SIGTERM into a clean exit that runs every `finally`.
    signal.signal(signal.SIGTERM, _exit_after_shutdown)
    with database_url(settings) as (resolved, embedded):
        _guard(resolved, embedded)
        app = create_app(
            resolved,
            embedded=embedded,
            background=None if args.no_worker else in_process_worker,
        )
        config = uvicorn_config(app, resolved, host=host, port=port, keep_alive_s=KEEP_ALIVE_S)
        uvicorn.Server(config).run()
    return 0


def _exit_after_shutdown(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def cmd_db(settings: Settings, args: argparse.Namespace) -> int:
    server = start_embedded(settings, port=args.port)
    print(f"MONGODB_URL={server.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # A server that dies is restarted on the same port, so the MONGODB_URL printed above stays
    # valid for every API and worker; one that keeps dying ends this process (exit 3).
    supervisor = EmbeddedSupervisor(server).start()
    try:
        while not stop.is_set():
            stop.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        supervisor.stop()
        server.stop()
    return 0
