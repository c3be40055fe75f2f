"""Driving the service through its HTTP API in-process (httpx + ASGI), against a real server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import pymongo
import pytest
from asgi_lifespan import LifespanManager
from pymongo import AsyncMongoClient, monitoring
from starlette.applications import Starlette

from app.api import create_app
from app.context import AppContext
from app.settings import Settings
from app.storage import db
from app.storage.models import utcnow
from fanout.worker import Worker


class FakeClock:
    """The activity clock of app.domain.activity in tests: time passes only by `advance`."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Harness:
    client: httpx.AsyncClient
    app: Starlette
    ctx: AppContext
    worker: Worker
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, handle: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[handle]}"}

    async def user(self, handle: str, display_name: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"handle": handle}
        if display_name is not None:
            body["display_name"] = display_name
        r = await self.client.post("/users", json=body)
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()
        self.tokens[handle] = data["token"]
        return data

    async def befriend(self, a: str, b: str) -> None:
        r = await self.client.post("/friend-requests", json={"to": b}, headers=self.auth(a))
        assert r.status_code in (200, 201), r.text
        r = await self.client.post(f"/friend-requests/{a}/accept", headers=self.auth(b))
        assert r.status_code in (200, 404), r.text  # 404: it was already accepted

    async def unfriend(self, a: str, b: str) -> None:
        r = await self.client.delete(f"/friends/{b}", headers=self.auth(a))
        assert r.status_code == 204, r.text

    async def post(self, handle: str, text: str, **headers: str) -> dict[str, Any]:
        r = await self.client.post(
            "/statuses", json={"text": text}, headers={**self.auth(handle), **headers}
        )
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()
        return data

    async def delete(self, handle: str, status_id: str) -> None:
        r = await self.client.delete(f"/statuses/{status_id}", headers=self.auth(handle))
        assert r.status_code == 204, r.text

    async def timeline(self, handle: str, **params: Any) -> dict[str, Any]:
        r = await self.client.get("/timeline", params=params, headers=self.auth(handle))
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    async def timeline_ids(self, handle: str, page: int = 100) -> list[str]:
        """The whole timeline, following next_cursor."""
        ids: list[str] = []
        params: dict[str, Any] = {"limit": page}
        while True:
            data = await self.timeline(handle, **params)
            ids += [item["id"] for item in data["items"]]
            if data["next_cursor"] is None:
                return ids
            params = {"limit": page, "before": data["next_cursor"]}

    async def drain(self) -> int:
        return await self.worker.drain()


# Bounds that only turn a hang into a failure, on what a test sets up and cleans up, never on
# what it checks. Under `make test` (two pytest workers on two cores, each with its own server,
# beside other work) a test's app start (its indexes) took over asgi-lifespan's default 5 s, and
# dropping a crash test's database (2,500 friends; 1.7 s alone) outlasted the service's own 15 s
# operation timeout (app.db), failing the test after it had passed.
LIFESPAN_TIMEOUT_S = 60.0
DROP_TIMEOUT_S = 120.0


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Harness]:
    app = create_app(settings)
    async with LifespanManager(
        app, startup_timeout=LIFESPAN_TIMEOUT_S, shutdown_timeout=LIFESPAN_TIMEOUT_S
    ) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            ctx: AppContext = app.state.ctx
            try:
                yield Harness(client=client, app=app, ctx=ctx, worker=Worker(ctx))
            finally:
                with pymongo.timeout(DROP_TIMEOUT_S):
                    await ctx.database.client.drop_database(settings.mongodb_db)


# HYBRID_THRESHOLD in tests: an author with two friends or more is merged in at read time, so
# the behaviour suite sees both sides of the hybrid strategy (and authors crossing it).
TEST_HYBRID_THRESHOLD = 1


# RATE_LIMITS in tests: every rule counted (the limiter runs on every request), but generous, as
# tests create users and posts far faster than any client may; tests/test_ratelimit.py tests the
# real defaults.
TEST_RATE_LIMITS = "*=1000000/1h"


def test_settings(url: str, strategy: str, timeline_max: int = 1000, **extra: Any) -> Settings:
    """Settings for one test: its own database; nothing read from a developer's .env."""
    extra.setdefault("hybrid_threshold", TEST_HYBRID_THRESHOLD)
    extra.setdefault("rate_limits", TEST_RATE_LIMITS)
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        mongodb_url=url,
        mongodb_db=f"t_{uuid.uuid4().hex[:16]}",
        timeline_strategy=strategy,  # type: ignore[arg-type]
        timeline_max=timeline_max,
        **extra,
    )


def listen_to_clients(
    monkeypatch: pytest.MonkeyPatch, listener: monitoring.CommandListener
) -> None:
    """Attach `listener` to the database clients the test's apps create from now on. Not
    `monitoring.register`: a listener registered for the whole process makes PyMongo draw every
    operation id from the global `random`, which hypothesis-driven tests in the same process
    then take for a strategy using `random`."""
    plain = db.make_client

    def make_client(url: str, **kwargs: Any) -> AsyncMongoClient[Any]:
        return plain(url, event_listeners=[listener], **kwargs)

    monkeypatch.setattr(db, "make_client", make_client)
