"""Database outages: the test's own embedded server is stopped (cleanly, then by SIGKILL) while
requests flow. The API must answer 503 with the JSON error (never a 500, never hang), the
worker must back off and survive, and after a restart on the same port and data directory
everything acknowledged before the outage must still be there and fan out.

The server runs with --sync-on-commit, as `timeline serve` runs it: without it SecantusDB
acknowledges a commit before its log reaches the disk, and a SIGKILL right after loses the
last few acknowledged transactions (measured; see docs/security.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.storage.embedded import EmbeddedServer, free_port
from fanout.worker import Worker
from tests import harness
from tests.harness import Harness

# Far above the driver's bounds (app.storage.db: 3 s server selection, 15 s per operation): a
# request
# still unanswered after this is hanging, which is the failure this test looks for.
HANG_BOUND_S = 60.0
# The worker's lease in this test. An event interrupted by the outage is retried once its lease
# ends; the default 30 s would only make the test wait.
WORKER_LEASE_S = 2.0
# Statuses acknowledged before the outage, and requests sent while the database goes away.
BEFORE = 12
IN_FLIGHT = 8
DURING = 12
# Bound on the wait for the worker to catch up after the restart (a hang detector).
CATCH_UP_S = 120.0


async def bounded(request: Awaitable[httpx.Response]) -> httpx.Response | None:
    """The response, or None if the request hung."""
    try:
        return await asyncio.wait_for(request, HANG_BOUND_S)
    except TimeoutError:
        return None


async def pending(h: Harness) -> int:
    return await h.ctx.store.events.count_documents({"state": {"$in": ["pending", "staged"]}})


async def wait_until_healthy(h: Harness) -> dict[str, Any]:
    async def poll() -> dict[str, Any]:
        while True:
            r = await h.client.get("/health")
            if r.status_code == 200 and r.json()["pending_events"] == 0:
                body: dict[str, Any] = r.json()
                return body
            assert r.status_code in (200, 503), r.text
            await asyncio.sleep(0.2)

    return await asyncio.wait_for(poll(), CATCH_UP_S)


async def backed_off(caplog: pytest.LogCaptureFixture) -> None:
    """Returns once the worker has logged that it backs off (its current database call may
    still be waiting out the driver's timeout when the API's requests have been answered)."""
    while not any("backing off" in rec.getMessage() for rec in caplog.records):  # noqa: ASYNC110
        await asyncio.sleep(0.2)


def post(h: Harness, handle: str, text: str) -> Awaitable[httpx.Response]:
    return h.client.post("/statuses", json={"text": text}, headers=h.auth(handle))


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_outage(how: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = EmbeddedServer(
        tmp_path / "db", port=free_port(), sync_on_commit=True, log_path=tmp_path / "server.log"
    )
    await asyncio.to_thread(server.start)
    try:
        async with harness.running(harness.test_settings(server.url, "receiver_copies")) as h:
            try:
                await run_outage(h, server, server.stop if how == "stop" else server.kill, caplog)
            finally:
                if server.process is None:  # a failure mid-outage: let the harness clean up
                    await asyncio.to_thread(server.start)
    finally:
        await asyncio.to_thread(server.stop)


async def run_outage(
    h: Harness,
    server: EmbeddedServer,
    take_down: Callable[[], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="timeline.worker")

    worker = Worker(h.ctx, lease_s=WORKER_LEASE_S)
    worker_task = asyncio.create_task(worker.run())
    for name in ("alice", "bob", "carol"):
        await h.user(name)
    await h.befriend("alice", "bob")
    await h.befriend("alice", "carol")
    acknowledged: list[dict[str, Any]] = []
    for i in range(BEFORE):
        acknowledged.append(await h.post(("alice", "bob")[i % 2], f"before {i}"))

    # Requests in flight while the database goes away: each is acknowledged or refused.
    in_flight = [
        asyncio.create_task(bounded(post(h, "alice", f"in flight {i}"))) for i in range(IN_FLIGHT)
    ]
    await asyncio.sleep(0)
    await asyncio.to_thread(take_down)
    # The database is down: every request is answered 503 in bounded time, none hangs. (Sent
    # while the in-flight ones are still waiting: each waits out the driver's timeout.)
    during: list[Awaitable[httpx.Response]] = []
    for i in range(DURING // 4):
        during += [
            post(h, "bob", f"during {i}"),
            h.client.get("/timeline", headers=h.auth("alice")),
            h.client.get("/me", headers=h.auth("carol")),
            h.client.get("/health"),
        ]
    answers = await asyncio.gather(*(bounded(r) for r in during))
    hung = sum(1 for r in answers if r is None)
    assert hung == 0
    for r in answers:
        assert r is not None
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "database_unavailable"
    # Each in-flight request was either acknowledged (before the database went) or refused.
    for r in await asyncio.gather(*in_flight):
        assert r is not None, "a request hung"
        assert r.status_code in (201, 503), r.text
        if r.status_code == 201:
            acknowledged.append(r.json())
        else:
            assert r.json()["error"]["code"] == "database_unavailable"
    # The worker backs off and keeps running.
    assert not worker_task.done()
    await asyncio.wait_for(backed_off(caplog), HANG_BOUND_S)

    await asyncio.to_thread(server.start)  # same port, same data directory
    health = await wait_until_healthy(h)
    assert health["status"] == "ok"
    assert not worker_task.done()
    worker.handle_exit()
    await asyncio.wait_for(worker_task, HANG_BOUND_S)

    # Everything acknowledged is still there, and fanned out to every friend.
    alice_ids = [s["id"] for s in acknowledged if s["author"] == "alice"]
    bob_ids = [s["id"] for s in acknowledged if s["author"] == "bob"]
    for s in acknowledged:
        r = await h.client.get(f"/statuses/{s['id']}", headers=h.auth(s["author"]))
        assert (r.status_code, r.json()) == (200, s)
    alice_tl = set(await h.timeline_ids("alice"))
    bob_tl = set(await h.timeline_ids("bob"))
    carol_tl = set(await h.timeline_ids("carol"))
    assert set(alice_ids + bob_ids) <= alice_tl
    assert set(alice_ids + bob_ids) <= bob_tl
    assert set(alice_ids) <= carol_tl and not set(bob_ids) & carol_tl
    assert await pending(h) == 0
