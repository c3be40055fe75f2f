"""The floor of `benchmarks http`: the leanest HTTP service of the same page on the same stack.

One Starlette route on uvicorn (httptools on uvloop, as `timeline serve`), no middleware, no
authentication, no rate limits, no metrics and no response model: `GET /timeline` reads the first
page of one reader (BARE_READER, fixed at start) with the service's own `read_page` (the same
single aggregate: the page and the removal records) and answers the service's own body
(`app.api.timeline.page_json`), serialised by pydantic-core. What `http` costs over `bare` is
the service's web layer; what `bare` costs over `driver` is the stack's (docs/benchmarks.md,
"The HTTP path"). Started by benchmarks/http.py as `uvicorn benchmarks.bare_http:app`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pydantic_core
from bson import ObjectId
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api.parsing import DEFAULT_LIMIT
from app.api.timeline import page_json
from app.context import strategy_over
from app.domain.timeline_reads import read_page
from app.settings import load_settings
from app.storage import pymongo_compat
from app.storage.db import make_client
from app.storage.store import Store

STRATEGY = "receiver_copies"


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    # An entry point of its own (a child process): PyMongo's Python 3.11 fix before its client,
    # as every other (app.storage.pymongo_compat).
    pymongo_compat.apply()
    settings = load_settings(_env_file=None)
    client = make_client(settings.mongodb_url or "")
    store = Store.bind(client[settings.mongodb_db])
    try:
        yield {
            "store": store,
            "strategy": strategy_over(store, settings, STRATEGY),
            "reader": ObjectId(os.environ["BARE_READER"]),
        }
    finally:
        await client.close()


async def timeline(request: Request) -> Response:
    store: Store = request.state.store
    page = await read_page(
        store.revocations, request.state.strategy, request.state.reader, limit=DEFAULT_LIMIT
    )
    return Response(pydantic_core.to_json(page_json(page)), media_type="application/json")


app = Starlette(routes=[Route("/timeline", timeline)], lifespan=lifespan)
