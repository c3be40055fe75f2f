"""The web client in a real browser: headless Chromium (the system's, driven by Playwright)
against a real `timeline serve` on the embedded database.

Two people sign up, befriend, and read: one posts, the other sees the "1 new post" button, uses
it, and keeps what they were reading in place; older pages, unfriending, errors, keyboard and
phone width. Every request the pages make is recorded: none may leave the service's origin.

Skipped, saying why, where /usr/bin/chromium or Playwright is missing (`.ci/run` installs the
browser). Set WEB_CLIENT_SCREENSHOT=docs/img/web-client.png to refresh the README's screenshot.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.test_persistence import serve

CHROMIUM = Path("/usr/bin/chromium")
# Never a downloaded browser build: the system's, with nothing that phones home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The page polls every 15 s by default; the test asks for this (its floor is 500 ms).
POLL_MS = 500
# Waits for the page (polls, the worker, the marker's debounce) end well before this.
UI_TIMEOUT_MS = 15_000
WORKER_TIMEOUT_S = 20.0
OLDER_POSTS = 24  # more than one page of 20

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"no browser at {CHROMIUM}: install the chromium package to run the browser tests",
    ),
]

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    workdir = tmp_path_factory.mktemp("browser")
    with serve(workdir / "data", "receiver_copies", workdir) as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


class Recorder:
    """Every URL any page of a context asked for."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def foreign(self, base: str) -> list[str]:
        return [u for u in self.urls if not (u == base or u.startswith(base + "/"))]


def open_page(browser: Any, base: str, recorder: Recorder, **context: Any) -> Any:
    ctx = browser.new_context(viewport={"width": 1000, "height": 800}, **context)
    ctx.on("request", lambda request: recorder.urls.append(request.url))
    page = ctx.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(f"{base}/?poll_ms={POLL_MS}")
    return page


def password_of(handle: str) -> str:
    return f"{handle}'s password"


def sign_up(page: Any, handle: str) -> str:
    """Sign up with a handle, an e-mail and a password (the Mastodon API's registration)."""
    page.get_by_label("Handle", exact=True).fill(handle)
    page.get_by_label("E-mail", exact=True).fill(f"{handle}@example.org")
    page.locator("#signup-password").fill(password_of(handle))
    page.get_by_role("button", name="Create account").click()
    page.locator("#signed-in").wait_for(state="visible")
    token: str = page.evaluate("localStorage.getItem('timeline.token')")
    return token


def sign_in(page: Any, login: str, password: str) -> None:
    page.get_by_label("Handle or e-mail").fill(login)
    page.locator("#signin-password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def drained(client: httpx.Client) -> None:
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    while client.get("/health").json()["pending_events"]:
        assert time.monotonic() < deadline, "the worker did not drain"
        time.sleep(0.1)


def post_ids(page: Any) -> list[str]:
    ids: list[str] = page.locator("#timeline > li").evaluate_all(
        "els => els.map(e => e.dataset.id)"
    )
    return ids


def in_viewport(page: Any, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    height = page.viewport_size["height"]
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= height


def test_two_people_use_the_web_client(service: httpx.Client, browser: Any, tmp_path: Path) -> None:
    base = str(service.base_url).rstrip("/")
    page = service.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "access-control-allow-origin" not in page.headers
    recorder = Recorder()
    alice = open_page(browser, base, recorder)
    bob = open_page(browser, base, recorder)
    sign_up(alice, "alice")
    bob_token = sign_up(bob, "bob")
    bob_auth = {"Authorization": f"Bearer {bob_token}"}

    # alice asks, bob accepts; carol's request bob declines.
    alice.get_by_label("Send a friend request to").fill("bob")
    alice.get_by_role("button", name="Send request").click()
    alice.get_by_text("Friend request sent to @bob.").wait_for()
    carol = service.post("/users", json={"handle": "carol"}).json()
    service.post(
        "/friend-requests",
        json={"to": "bob"},
        headers={"Authorization": f"Bearer {carol['token']}"},
    )
    bob.get_by_role("button", name="Refresh").click()
    bob.get_by_role("button", name="Decline @carol").click()
    bob.get_by_text("Declined: @carol.").wait_for()
    bob.get_by_role("button", name="Accept @alice").click()
    bob.get_by_text("You and @alice are friends now.").wait_for()
    bob.locator("#friends").get_by_text("@alice").wait_for()

    for i in range(OLDER_POSTS):
        r = service.post("/statuses", json={"text": f"bob's older post {i}"}, headers=bob_auth)
        assert r.status_code == 201

    # A lost answer: the post is created but the page never hears back. Posting again sends
    # the same Idempotency-Key, and the service replays the first post instead of a second.
    def lose_answer(route: Any) -> None:
        route.fetch()  # reaches the service
        route.abort()  # the answer is lost on the way back

    bob.route("**/statuses", lose_answer, times=1)
    bob.get_by_label("What's happening?").fill("posted once, answered twice")
    bob.get_by_role("button", name="Post", exact=True).click()
    bob.get_by_text("cannot be reached").wait_for()
    bob.get_by_role("button", name="Post", exact=True).click()
    bob.locator("#timeline").get_by_text("posted once, answered twice").wait_for()
    mine = service.get("/users/bob/statuses?limit=100", headers=bob_auth).json()["items"]
    assert [s["text"] for s in mine].count("posted once, answered twice") == 1
    assert bob.get_by_text("posted once, answered twice").count() == 1
    drained(service)
    alice.get_by_role("button", name="Refresh").click()
    alice.locator("#timeline > li").nth(19).wait_for()
    top = post_ids(alice)[0]
    # The top post was read: the marker moves there and the badge has nothing to show.
    alice.locator("#unread-badge").wait_for(state="hidden")

    # bob posts; a double click sends one post (one Idempotency-Key, the button disabled).
    bob.get_by_label("What's happening?").fill("hello alice, this is new")
    bob.get_by_role("button", name="Post", exact=True).dblclick()
    bob.locator("#timeline").get_by_text("hello alice, this is new").wait_for()
    mine = service.get("/users/bob/statuses?limit=100", headers=bob_auth).json()["items"]
    assert [s["text"] for s in mine].count("hello alice, this is new") == 1

    new_posts = alice.get_by_role("button", name="1 new post")
    new_posts.wait_for()
    alice.get_by_text("1 unread").wait_for()
    shot = Path(os.environ.get("WEB_CLIENT_SCREENSHOT") or tmp_path / "web-client.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    alice.screenshot(path=str(shot))
    new_posts.click()
    ids = post_ids(alice)
    assert ids[0] == mine[0]["id"] and ids[1] == top
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    assert in_viewport(alice, f'#timeline > li[data-id="{top}"]')
    assert new_posts.is_hidden()
    alice.locator("#unread-badge").wait_for(state="hidden")  # read, the marker moved on

    # Reading further down: what is on screen stays where it is when new posts come in.
    # (By id: a locator is resolved at each use, and nth(6) would be another post afterwards.)
    reading = alice.locator(f'#timeline > li[data-id="{post_ids(alice)[6]}"]')
    reading.evaluate("el => el.scrollIntoView()")
    before = reading.bounding_box()["y"]
    for i in range(2):
        service.post("/statuses", json={"text": f"while alice reads {i}"}, headers=bob_auth)
    alice.get_by_role("button", name="2 new posts").click()
    assert abs(reading.bounding_box()["y"] - before) <= 1
    assert post_ids(alice)[:2] == [
        s["id"] for s in service.get("/timeline?limit=2", headers=bob_auth).json()["items"]
    ]

    # Older pages continue below, without repeats.
    shown = len(post_ids(alice))
    alice.get_by_role("button", name="Load older posts").click()
    alice.get_by_text("older posts.").wait_for()
    ids = post_ids(alice)
    assert len(ids) > shown and ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)

    # Keyboard: j moves to the next post.
    alice.locator("#timeline > li").first.focus()
    alice.keyboard.press("j")
    assert alice.evaluate("document.activeElement.dataset.id") == ids[1]

    # alice unfriends bob: after the worker, a refresh shows none of bob's posts.
    alice.get_by_role("button", name="Unfriend @bob").click()
    alice.get_by_text("no longer friends").wait_for()
    drained(service)
    alice.get_by_role("button", name="Refresh").click()
    alice.locator("#timeline-empty").wait_for(state="visible")
    assert alice.locator("#timeline > li").count() == 0

    # Error paths: an unknown user (404), a taken handle (409), a revoked token (401).
    alice.get_by_label("Send a friend request to").fill("nobody_here")
    alice.get_by_role("button", name="Send request").click()
    assert "Not found" in alice.get_by_role("alert").inner_text()
    stranger = open_page(browser, base, recorder)
    stranger.get_by_label("Handle", exact=True).fill("alice")
    stranger.get_by_label("E-mail", exact=True).fill("someone@example.org")
    stranger.locator("#signup-password").fill("a long password")
    stranger.get_by_role("button", name="Create account").click()
    assert "handle is taken" in stranger.get_by_role("alert").inner_text()
    # Password sign-in: a wrong password is said as such, the right one (by e-mail, any case)
    # signs in; the token is in localStorage and no cookie is set.
    sign_in(stranger, "alice", "not her password")
    stranger.get_by_text("Wrong handle, e-mail or password.").wait_for()
    sign_in(stranger, "Alice@Example.org", password_of("alice"))
    stranger.get_by_text("Signed in as @alice.").wait_for()
    assert stranger.context.cookies() == []
    alice_token = stranger.evaluate("localStorage.getItem('timeline.token')")
    assert (
        service.get("/me", headers={"Authorization": f"Bearer {alice_token}"}).json()["handle"]
        == "alice"
    )
    # Signing out revokes the token it got.
    stranger.get_by_role("button", name="Sign out").click()
    stranger.locator("#signed-out").wait_for(state="visible")
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    while service.get("/me", headers={"Authorization": f"Bearer {alice_token}"}).status_code != 401:
        assert time.monotonic() < deadline, "signing out did not revoke the token"
        time.sleep(0.1)
    stranger.evaluate(
        "() => { localStorage.setItem('timeline.token', 'forged');"
        " localStorage.setItem('timeline.handle', 'alice'); }"
    )
    stranger.reload()
    assert "Sign in again" in stranger.get_by_role("alert").inner_text()
    stranger.locator("#signed-out").wait_for(state="visible")
    # An account made by POST /users (carol) has no password: it signs in with its token.
    stranger.get_by_label("Token", exact=True).fill(carol["token"])
    stranger.get_by_role("button", name="Sign in with the token").click()
    stranger.get_by_text("Signed in as @carol.").wait_for()
    stranger.get_by_role("button", name="Sign out").click()
    stranger.locator("#signed-out").wait_for(state="visible")
    # bob's token, as if copied from his other browser.
    stranger.get_by_label("Token", exact=True).fill(bob_token)
    stranger.get_by_role("button", name="Sign in with the token").click()
    stranger.get_by_text("Signed in as @bob.").wait_for()
    stranger.locator("#timeline").get_by_text("hello alice, this is new").wait_for()
    stranger.get_by_role("button", name="Sign out").click()
    stranger.locator("#signed-out").wait_for(state="visible")
    assert stranger.evaluate("localStorage.getItem('timeline.token')") is None

    # A database outage (503, faked at the network edge for one request) is said as such.
    alice.route(
        "**/friend-requests",
        lambda route: route.fulfill(
            status=503,
            content_type="application/json",
            body='{"error": {"code": "database_unavailable", "message": "retry later"}}',
        ),
        times=1,
    )
    alice.get_by_label("Send a friend request to").fill("carol")
    alice.get_by_role("button", name="Send request").click()
    alice.get_by_text("database is unavailable").wait_for()

    # Phone width: nothing wider than the screen.
    alice.set_viewport_size({"width": 360, "height": 740})
    assert alice.evaluate("document.documentElement.scrollWidth") <= 360

    assert recorder.urls and recorder.foreign(base) == []
