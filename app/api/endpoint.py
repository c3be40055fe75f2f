"""A row of the endpoint table and the plumbing every row shares: the table authenticates the
caller and serialises the reply through the declared response model, so that the OpenAPI
document (built from the same rows) and the behaviour cannot drift apart."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, cast

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from app.api.deps import current_user
from app.domain.oauth import require_native_scope
from app.domain.users import Account

Payload = Mapping[str, Any]
JSON = "application/json"
# Endpoints that check their own, finer scopes (the Mastodon API, app/api/mastodon/).
SCOPED_PREFIXES = ("/api/", "/oauth/")
# A JSON array of objects (the Mastodon API's lists; its `response` is a pydantic RootModel).
Body = Payload | Sequence[Payload]


@dataclass(frozen=True)
class Reply:
    """A payload answered with another success status than the endpoint's `ok` (one of its
    `also_ok`), e.g. 200 for a replayed create, or with headers (a `Link` header)."""

    payload: Body
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)


Result = Body | Reply | None
PublicHandler = Callable[[Request], Awaitable[Result]]
UserHandler = Callable[[Request, Account], Awaitable[Result]]


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path", "query" or "header"
    description: str
    schema: dict[str, object] = field(default_factory=lambda: {"type": "string"})
    _: KW_ONLY
    required: bool = False


@dataclass(frozen=True)
class Endpoint:
    """`handler(request)` answers a public endpoint, `handler(request, user)` one with `auth`;
    it returns the payload (validated and dumped through `response`), a `Reply`, or None for
    an endpoint without a body (`response=None`)."""

    method: str
    path: str
    handler: PublicHandler | UserHandler
    _: KW_ONLY
    summary: str
    auth: bool
    ok: int
    response: type[BaseModel] | None
    body: type[BaseModel] | None = None
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()
    # Other success statuses the handler may answer with (a `Reply`), and what each means.
    also_ok: Mapping[int, str] = field(default_factory=dict)
    # The body of its errors in the OpenAPI document (None: app.api.schemas.ErrorOut).
    error_body: type[BaseModel] | None = None
    # The body may also be sent as a form (application/x-www-form-urlencoded), as Mastodon's
    # clients do; documented beside JSON.
    forms: bool = False

    def __post_init__(self) -> None:
        # Checked once, at import: a row whose `auth` disagrees with its handler's signature
        # would document one thing and do another.
        takes_user = len(inspect.signature(self.handler).parameters) == 2
        if takes_user != self.auth:
            raise TypeError(
                f"{self.method} {self.path}: auth={self.auth} but the handler "
                f"{'takes' if takes_user else 'does not take'} the user"
            )

    async def __call__(self, request: Request) -> Response:
        # The casts are what __post_init__ checked: `auth` says which of the two kinds it is.
        if self.auth:
            me = await current_user(request)
            if not self.path.startswith(SCOPED_PREFIXES):
                # A Mastodon API token (app.domain.oauth) on a native endpoint: read or write scope.
                require_native_scope(me, request.method)
            result = await cast(UserHandler, self.handler)(request, me)
        else:
            result = await cast(PublicHandler, self.handler)(request)
        status, payload, headers = self.ok, result, None
        if isinstance(result, Reply):
            if result.status not in self.also_ok and result.status != self.ok:
                raise AssertionError(f"{self.method} {self.path} answered {result.status}")
            status, payload, headers = result.status, result.payload, result.headers or None
        if self.response is None:
            if payload is not None:
                raise AssertionError(f"{self.method} {self.path} has no response body")
            return Response(status_code=status, headers=headers)
        if payload is None:
            raise AssertionError(f"{self.method} {self.path} returned no body")
        # Serialised by pydantic-core (compact, UTF-8, as JSONResponse writes it), not dumped to
        # Python values and encoded again by `json`: a page of 20 statuses costs a third less.
        body = self.response.model_validate(payload).model_dump_json(by_alias=True)
        return Response(body, status_code=status, headers=headers, media_type=JSON)
