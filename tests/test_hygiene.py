"""Response headers, duplicate JSON keys, markers ahead of every status, the embedded data
directory's permissions, and the /metrics guard."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from app.api.routes import ENDPOINTS
from app.settings import ConfigError, load_settings
from app.storage.embedded import EmbeddedServer
from tests import harness
from tests.harness import Harness, running

pytestmark = pytest.mark.parametrize("strategy", ["receiver_copies"])


async def test_every_response_is_no_store_and_nosniff(h: Harness) -> None:
    await h.user("alice")
    status = await h.post("alice", "hello")
    seen = 0
    for ep in ENDPOINTS:
        path = ep.path.replace("{handle}", "alice").replace("{id}", status["id"])
        r = await h.client.request(ep.method, path, headers=h.auth("alice"), json={})
        assert r.headers["cache-control"] == "no-store", (ep.method, ep.path)
        assert r.headers["x-content-type-options"] == "nosniff", (ep.method, ep.path)
        seen += 1
    for path in ("/no/such/path", "/openapi.json", "/metrics"):
        r = await h.client.get(path)
        assert r.headers["cache-control"] == "no-store", path
        assert r.headers["x-content-type-options"] == "nosniff", path
    created = await h.client.post("/users", json={"handle": "bob"})
    assert created.headers["cache-control"] == "no-store"  # the token-bearing reply
    assert seen == len(ENDPOINTS)


async def test_duplicate_json_keys_are_refused(h: Harness) -> None:
    await h.user("alice")
    await h.user("bob")
    for path, raw in (
        ("/friend-requests", b'{"to": "bob", "to": "alice"}'),
        ("/statuses", b'{"text": "a", "text": "b"}'),
        ("/markers", b'{"home": {"last_read_id": "0", "last_read_id": "1"}}'),
    ):
        r = await h.client.post(
            path, content=raw, headers={**h.auth("alice"), "content-type": "application/json"}
        )
        assert r.status_code == 422 and r.json()["error"]["code"] == "duplicate_key", r.text
    assert await h.ctx.store.statuses.count_documents({}) == 0
    assert await h.ctx.store.friend_requests.count_documents({}) == 0


async def test_a_marker_cannot_move_past_the_newest_status(h: Harness) -> None:
    await h.user("alice")
    newest = (await h.post("alice", "hello"))["id"]
    for ahead in ("f" * 24, format(int(newest, 16) + 1, "024x")):
        r = await h.client.post(
            "/markers", json={"home": {"last_read_id": ahead}}, headers=h.auth("alice")
        )
        assert r.status_code == 422 and r.json()["error"]["code"] == "marker_ahead", r.text
    r = await h.client.post(
        "/markers", json={"home": {"last_read_id": newest}}, headers=h.auth("alice")
    )
    assert r.status_code == 200, r.text
    # Later posts still count as unread: the marker never went to the end of time.
    await h.post("alice", "later")
    r = await h.client.get("/timeline/unread_count", headers=h.auth("alice"))
    assert r.json()["count"] == 1


async def test_metrics_can_require_a_token_or_an_address(mongo_url: str, strategy: str) -> None:
    settings = harness.test_settings(mongo_url, strategy, metrics_token="s3cret")
    async with running(settings) as h:
        assert (await h.client.get("/metrics")).status_code == 403
        wrong = await h.client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "forbidden"
        ok = await h.client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and "timeline_http_requests_total" in ok.text
    # httpx's in-process client connects from 127.0.0.1.
    for allow, expected in (("127.0.0.0/8", 200), ("10.0.0.0/8, ::1", 403)):
        settings = harness.test_settings(mongo_url, strategy, metrics_allow=allow)
        async with running(settings) as h:
            assert (await h.client.get("/metrics")).status_code == expected, allow
    with pytest.raises(ConfigError, match="METRICS_ALLOW"):
        load_settings(_env_file=None, metrics_allow="10.0.0.0/8, not-a-net")


def test_the_embedded_data_directory_is_private(tmp_path: Path, strategy: str) -> None:
    data = tmp_path / "data" / "db"
    data.parent.mkdir()
    data.mkdir(mode=0o755)  # made by an older version: tightened at start
    with EmbeddedServer(data, log_path=tmp_path / "server.log"):
        pass
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = [p for p in data.rglob("*") if p.is_file()]
    assert files, "the server wrote nothing?"
    loose = {str(p.relative_to(data)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert {p: m for p, m in loose.items() if int(m, 8) & 0o077} == {}
    dirs = [p for p in data.rglob("*") if p.is_dir()]
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in dirs)
