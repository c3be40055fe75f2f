"""The endpoint table's plumbing (app.api.endpoint): rows are keyword-only, `auth` agrees with
what the handler receives, every reply goes through the row's response model, and the HTTP
status of each domain error comes from one table (app.api.errors), not from the error."""

from __future__ import annotations

import inspect

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api import schemas as s
from app.api.endpoint import Endpoint, Payload, Reply
from app.api.errors import EXCEPTION_HANDLERS, HTTP_STATUS, http_status
from app.api.routes import ENDPOINTS
from app.domain import errors
from app.domain.users import Account


async def public(request: Request) -> Payload | Reply | None:
    return request.app.state.result  # type: ignore[no-any-return]


async def private(request: Request, me: Account) -> Payload:
    return {}


def row(**overrides: object) -> Endpoint:
    fields: dict[str, object] = {
        "summary": "a test row",
        "auth": False,
        "ok": 201,
        "response": s.FriendRequestOut,
        "also_ok": {200: "a replay"},
    }
    fields.update(overrides)
    return Endpoint("POST", "/x", public, **fields)  # type: ignore[arg-type]


async def call(ep: Endpoint, result: object) -> httpx.Response:
    async def view(request: Request) -> Response:
        return await ep(request)

    app = Starlette(
        routes=[Route("/x", view, methods=["POST"])], exception_handlers=EXCEPTION_HANDLERS
    )
    app.state.result = result
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post("/x")


def test_rows_are_keyword_only_after_method_path_and_handler() -> None:
    with pytest.raises(TypeError):
        Endpoint("GET", "/x", public, "summary", False, 200, None)  # type: ignore[misc]


def test_a_row_whose_auth_disagrees_with_its_handler_is_refused() -> None:
    with pytest.raises(TypeError, match="auth=True"):
        row(auth=True)
    with pytest.raises(TypeError, match="auth=False"):
        Endpoint("GET", "/x", private, summary="s", auth=False, ok=200, response=None)


def test_every_authenticated_row_hands_its_handler_the_user() -> None:
    for ep in ENDPOINTS:
        names = list(inspect.signature(ep.handler).parameters)
        assert (names == ["request", "me"]) == ep.auth, (ep.method, ep.path, names)


async def test_the_reply_is_dumped_through_the_response_model() -> None:
    # Declared order and the wire name (`from`, an alias), whatever order the handler used.
    r = await call(row(), {"status": "pending", "to": "bob", "from": "alice"})
    assert r.status_code == 201
    assert r.content == b'{"from":"alice","to":"bob","status":"pending"}'
    r = await call(row(), Reply({"from": "alice", "to": "bob", "status": "accepted"}, 200))
    assert r.status_code == 200 and r.json()["status"] == "accepted"


@pytest.mark.parametrize(
    "result",
    [
        {"from": "alice", "to": "bob", "status": "pending", "extra": 1},  # undocumented field
        {"from": "alice", "to": "bob", "status": "maybe"},  # undocumented value
        {"from": "alice", "to": "bob"},  # a documented field missing
        Reply({"from": "alice", "to": "bob", "status": "pending"}, 202),  # undocumented status
        None,  # no body where one is documented
    ],
)
async def test_a_reply_the_document_does_not_describe_is_a_server_error(result: object) -> None:
    r = await call(row(), result)
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"


async def test_a_bodiless_row_answers_its_status_with_no_body() -> None:
    r = await call(row(ok=204, response=None, also_ok={}), None)
    assert r.status_code == 204 and r.content == b""
    r = await call(row(ok=204, response=None, also_ok={}), {"from": "alice"})
    assert r.status_code == 500


def test_domain_errors_carry_no_http_status() -> None:
    classes = [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.DomainError)
    ]
    assert len(classes) > 1
    for cls in classes:
        assert not hasattr(cls, "status"), cls
        assert cls in HTTP_STATUS, f"{cls.__name__} has no HTTP status in app.api.errors"


def test_an_unlisted_subclass_answers_with_its_ancestors_status() -> None:
    class Gone(errors.NotFound):
        pass

    assert http_status(Gone("gone")) == 404
    assert http_status(errors.Unavailable("down")) == 503
