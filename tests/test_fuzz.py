"""Schema fuzzing: schemathesis generates requests from /openapi.json (valid and invalid ones) and
checks every answer: no 5xx, a documented status code, a body that matches the documented schema.

The app runs in uvicorn on a loopback port in a thread with its own event loop, on the session's
database server. Why not schemathesis' ASGI transport: it drives the app through Starlette's
TestClient, which runs each request in a fresh event loop and skips the lifespan, while the
app's PyMongo AsyncMongoClient belongs to the one loop that opened it. Real HTTP is also closer
to what clients send (Content-Length, header encoding).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis import AuthContext, Case
from schemathesis.checks import positive_data_acceptance

from app import cursors
from app.api import create_app
from app.api.openapi import build_openapi
from app.domain.errors import DomainError
from app.storage.embedded import free_port
from tests import harness

# Per operation (hypothesis examples; schemathesis mixes valid and invalid data). 15 native
# operations * this is about twice the 500 requests the issue asks for (~15 s on 2 cores); with
# the Mastodon API's 22 the run is ~1,500 requests, 53 s on 2 cores shared with other work.
MAX_EXAMPLES = 40
# The floor on the number of fuzzing requests in one run.
MIN_REQUESTS = 500
# Every this-many-th request goes without a token, so authenticated operations also see 401s.
UNAUTHENTICATED_EVERY = 7
# uvicorn starts in well under a second; a bound so a broken start fails instead of hanging.
SERVER_START_TIMEOUT_S = 30.0

# Not on xdist's workers (`make test` runs it in its own pytest process after them): SENT is
# counted in one process's memory and test_enough_requests_were_sent must run after every
# fuzzing case; and schemathesis' items share one node id under pytest 9.2, which xdist's
# grouping schedulers (loadfile, loadgroup) collapse into one item, running 1 case of 40.
# The warning ignored is a false alarm here: the server under test runs in a thread of this
# process, and once a command listener is registered for the whole process (benchmarks/fanout.py
# and benchmarks/http.py register theirs when a test runs them in-process), PyMongo draws each
# operation's id from the global `random` module (pymongo._telemetry._generate_op_id_or_none),
# which hypothesis, drawing a case in the test's thread at that moment, takes for a strategy
# using `random` (6 to 11 of the 40 cases failed so while a test module registered one).
pytestmark = [
    pytest.mark.serial,
    pytest.mark.filterwarnings(
        "ignore:Do not use the `random` module inside strategies"
        ":hypothesis.errors.HypothesisDeprecationWarning"
    ),
]

schema = schemathesis.openapi.from_dict(build_openapi())

SENT: Counter[str] = Counter()
CURSOR_PARAMS = ("cursor", "before", "after")
# The fuzzing user's token, set by the `live` fixture before any case is generated.
TOKEN: list[str] = [""]


@dataclass
class LiveServer:
    base_url: str
    token: str
    session: requests.Session


def _serve(app: object, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fuzz-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    return server, thread


@pytest.fixture(scope="module")
def live(mongo_url: str) -> Iterator[LiveServer]:
    settings_ = harness.test_settings(mongo_url, "receiver_copies")
    port = free_port()
    server, thread = _serve(create_app(settings_), port)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base) as client:
            # A few users so that generated handles sometimes exist and friendships have data.
            token = client.post("/users", json={"handle": "fuzz_me"}).json()["token"]
            auth = {"Authorization": f"Bearer {token}"}
            for other in ("fuzz_friend", "aaa"):
                other_token = client.post("/users", json={"handle": other}).json()["token"]
                client.post("/friend-requests", json={"to": other}, headers=auth)
                client.post(
                    "/friend-requests/fuzz_me/accept",
                    headers={"Authorization": f"Bearer {other_token}"},
                )
            client.post("/statuses", json={"text": "seed"}, headers=auth)
        TOKEN[0] = token
        with requests.Session() as session:
            yield LiveServer(base, token, session)
    finally:
        server.should_exit = True
        thread.join(SERVER_START_TIMEOUT_S)
        import pymongo

        with pymongo.MongoClient(mongo_url) as c:
            c.drop_database(settings_.mongodb_db)


@schema.auth(refresh_interval=None, retry_on=[])
class BearerToken:
    """The fuzzing user's token on most requests; schemathesis itself also sends requests with
    the header removed or garbled (negative testing of the security scheme)."""

    def get(self, case: Case, ctx: AuthContext) -> str:
        return TOKEN[0]

    def set(self, case: Case, token: str, ctx: AuthContext) -> None:
        if sum(SENT.values()) % UNAUTHENTICATED_EVERY == 0:
            return
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_schema(case: Case, live: LiveServer) -> None:
    SENT[case.operation.label] += 1
    response = case.call(base_url=live.base_url, session=live.session)
    refusal = _stateful_refusal(case, response.status_code, response.text)
    case.validate_response(
        response,
        excluded_checks=[positive_data_acceptance] if refusal else None,
        transport_kwargs={"base_url": live.base_url, "session": live.session},
    )


def _stateful_refusal(case: Case, status: int, body: str) -> str | None:
    """Schema-valid requests that the contract refuses for reasons a schema cannot express.
    Only these exact refusals are exempt from "valid data is accepted"; every other check (no
    5xx, documented status, body shape) still applies to them."""
    if status == 409 and case.operation.label == "POST /markers":
        # A `version` other than the stored one (409 by contract).
        return "conflict"
    if case.operation.path.startswith(("/api/", "/oauth/")):
        return _mastodon_refusal(case, status)
    if status not in (400, 422):
        return None
    code = json.loads(body)["error"]["code"]
    query = case.query or {}
    # A cursor of the documented shape that this service never issued.
    if code == "invalid_cursor" and any(_forged(query.get(name)) for name in CURSOR_PARAMS):
        return code
    # `before` and `after` together (each is optional; the pair is refused).
    if code == "invalid_cursor" and "before" in query and "after" in query:
        return code
    # An Idempotency-Key that an earlier example used with another text (422 by contract).
    if code == "idempotency_key_reused" and case.operation.label == "POST /statuses":
        return code
    # A marker id of the documented shape later than the present (422 by contract).
    if code == "marker_ahead" and case.operation.label == "POST /markers":
        return code
    return None


# The Mastodon API (docs/mastodon.md): refusals that depend on what is stored (credentials,
# accounts, statuses) or on a value the schema admits as a string (a scope, a redirect URI).
MASTODON_REFUSALS = {
    "POST /oauth/token": (400, 401, 422, 429),
    "POST /oauth/revoke": (403,),
    "POST /api/v1/apps": (400, 422),
    "POST /api/v1/accounts": (401, 403, 422),
    # media, polls, replies, content warnings, scheduling, a visibility other than private:
    # refused with 422 when non-empty, never dropped.
    "POST /api/v1/statuses": (422,),
    "POST /api/v1/accounts/{id}/follow": (404, 409, 422),
    "POST /api/v1/follow_requests/{id}/authorize": (404, 409),
    "POST /api/v1/markers": (422,),
    "GET /api/v1/accounts/lookup": (404,),
}


def _mastodon_refusal(case: Case, status: int) -> str | None:
    label = case.operation.label
    if status in MASTODON_REFUSALS.get(label, ()):
        return f"{label} {status}"
    if status == 404 and "{id}" in case.operation.path:
        return "no such account or status"  # an id of the documented shape that is not there
    return None


def _forged(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        cursors.decode(value)
    except DomainError:
        return True
    return False


def test_enough_requests_were_sent() -> None:
    """Runs after the fuzzing above (pytest keeps file order). When part of the fuzzing did not
    run (deselected), this fails and says so: the floor is for the whole run, never waived."""
    operations = {op.ok().label for op in schema.get_all_operations()}
    missing = sorted(operations - set(SENT))
    assert not missing, f"not fuzzed in this run (deselected?), so no floor to check: {missing}"
    assert sum(SENT.values()) >= MIN_REQUESTS, SENT
