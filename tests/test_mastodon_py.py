"""Mastodon.py (unmodified, pinned in the dev extras) runs a whole session against a real
`timeline serve` over a socket, on every strategy: registration, password log-in, a follow
authorized (friendship), 45 posts, the home timeline walked with fetch_next to the end, then
fetch_previous / min_id / since_id after new posts, markers, a delete, an unfollow, and what
each step shows in the other account's timeline. Pages are also compared with the native
`GET /timeline` of the same strategy, through the same token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.mastodon_service import Service, serve

mastodon = pytest.importorskip("mastodon", reason="Mastodon.py is in the dev extras")
Mastodon = mastodon.Mastodon

POSTS = 45  # alice's; with bob's one, bob's timeline holds 46: three pages of 20
PAGE = 20
LATER = 3  # posts after the walk, found by fetch_previous, min_id and since_id


def ids(page: Any) -> list[str]:
    return [str(s["id"]) for s in page]


def native_ids(service: Service, token: str, **params: Any) -> list[str]:
    """The native API's page for the same token (a Mastodon token works on both)."""
    r = service.http.get("/timeline", params=params, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return [s["id"] for s in r.json()["items"]]


def client(base: str, app: tuple[str, str]) -> Any:
    # ratelimit_method="throw": a 429 fails the test instead of sleeping in it.
    return Mastodon(
        client_id=app[0], client_secret=app[1], api_base_url=base, ratelimit_method="throw"
    )


@pytest.mark.slow
def test_a_mastodon_py_session(mongo_url: str, strategy: str, tmp_path: Path) -> None:
    with serve(mongo_url, strategy, tmp_path) as service:
        _session(service)


def _session(service: Service) -> None:
    base = service.base_url
    app = Mastodon.create_app("timeline-test", api_base_url=base)
    assert Mastodon(api_base_url=base).instance()["version"].startswith("4.3.0 (compatible;")

    # Registration (an application token, then the account's), then a password log-in: by
    # e-mail for alice, by username for bob.
    assert client(base, app).create_account(
        "alice", "alice-secret-1", "Alice@Example.org", agreement=True
    )
    assert client(base, app).create_account(
        "bob", "bob-secret-12", "bob@example.org", agreement=True
    )
    alice, bob = client(base, app), client(base, app)
    alice_token = alice.log_in("alice@example.org", "alice-secret-1")
    bob_token = bob.log_in("bob", "bob-secret-12")
    me = alice.account_verify_credentials()
    assert me["username"] == "alice" and me["locked"] is True
    bob_acct = alice.account_lookup("bob")
    assert bob_acct["username"] == "bob"
    [found] = alice.search_v2("bob", result_type="accounts")["accounts"]
    assert found["id"] == bob_acct["id"]

    # bob posts before they are friends: alice cannot see it yet.
    early = bob.status_post("early bird")
    assert early["content"] == "<p>early bird</p>" and early["visibility"] == "private"
    with pytest.raises(mastodon.MastodonNotFoundError):
        alice.status(early["id"])

    # Follow = friend request; authorize = friendship, mutual.
    rel = alice.account_follow(bob_acct["id"])
    assert rel["requested"] is True and rel["following"] is False
    [asker] = bob.follow_requests()
    assert asker["id"] == me["id"]
    rel = bob.follow_request_authorize(me["id"])
    assert rel["following"] is True and rel["followed_by"] is True
    [rel] = alice.account_relationships(bob_acct["id"])
    assert rel["following"] is True and rel["followed_by"] is True and not rel["requested"]
    assert bob.follow_requests() == []
    assert alice.status(early["id"])["id"] == early["id"]  # the truth: at once

    # alice posts 45; one retried with the same Idempotency-Key is one status.
    posted = [alice.status_post(f"post {i}\n\nsecond <paragraph>") for i in range(POSTS - 1)]
    again = [alice.status_post("retried", idempotency_key="k-1") for _ in range(2)]
    assert again[0]["id"] == again[1]["id"]
    posted.append(again[0])
    assert posted[0]["content"] == "<p>post 0</p><p>second &lt;paragraph&gt;</p>"
    service.drained()

    # bob walks his home timeline, 20 at a time, to the end: all 46 once, newest first.
    first = bob.timeline_home(limit=PAGE)
    walked, page, pages = [], first, 0
    while page:
        assert len(page) <= PAGE
        walked += ids(page)
        pages += 1
        page = bob.fetch_next(page)
    expected = [*reversed(ids(posted)), early["id"]]
    assert walked == expected and pages == 3
    assert ids(first) == native_ids(service, bob_token, limit=PAGE)
    assert walked == native_ids(service, bob_token, limit=100)
    # alice's timeline is the same 46 (her own and her friend's).
    assert ids(alice.timeline_home(limit=40)) == expected[:40]

    # Nothing newer yet: the previous page of the first page is empty.
    assert list(bob.fetch_previous(first)) == []
    later = [alice.status_post(f"later {i}") for i in range(LATER)]
    service.drained()
    newest_first = list(reversed(ids(later)))
    assert ids(bob.fetch_previous(first)) == newest_first
    # min_id: the ones just above it (no gap), newest first; since_id: the newest above it.
    top = first[0]["id"]
    assert ids(bob.timeline_home(min_id=top, limit=2)) == newest_first[1:]
    assert ids(bob.timeline_home(since_id=top, limit=2)) == newest_first[:2]
    assert ids(bob.timeline_home(min_id=top, since_id=later[1]["id"], limit=2)) == newest_first[1:]
    assert ids(bob.timeline_home(max_id=later[2]["id"], since_id=top)) == newest_first[1:]
    assert ids(bob.timeline_home(min_id=expected[5], limit=3)) == expected[2:5]

    # Markers: set, read back; an older id leaves it where it is (forward only).
    marker = bob.markers_set("home", later[1]["id"])["home"]
    assert marker["last_read_id"] == later[1]["id"]
    assert bob.markers_get("home")["home"]["last_read_id"] == later[1]["id"]
    assert bob.markers_set("home", early["id"])["home"]["last_read_id"] == later[1]["id"]
    assert bob.markers_set("home", later[2]["id"])["home"]["last_read_id"] == later[2]["id"]
    assert alice.markers_get() == {}

    # bob cannot delete alice's status (the same 404 as a missing one); alice can.
    victim = posted[10]["id"]
    with pytest.raises(mastodon.MastodonNotFoundError):
        bob.status_delete(victim)
    assert bob.status(victim)["id"] == victim
    deleted = alice.status_delete(victim)
    assert deleted["id"] == victim and deleted["text"] == "post 10\n\nsecond <paragraph>"
    service.drained()
    assert victim not in ids(bob.timeline_home(limit=40))
    assert victim not in native_ids(service, alice_token, limit=100)
    with pytest.raises(mastodon.MastodonNotFoundError):
        bob.status(victim)

    # alice unfollows: each sees only their own statuses again.
    rel = alice.account_unfollow(bob_acct["id"])
    assert rel["following"] is False and rel["followed_by"] is False
    service.drained()
    assert ids(bob.timeline_home()) == [early["id"]]
    assert early["id"] not in ids(alice.timeline_home(limit=40))
    assert alice.account_relationships(bob_acct["id"])[0]["following"] is False

    # Revoked: the token stops working on both APIs.
    bob.revoke_access_token()
    assert (
        service.http.get("/me", headers={"Authorization": f"Bearer {bob_token}"}).status_code == 401
    )
