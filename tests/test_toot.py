"""The toot CLI (unmodified, pinned in the dev extras) as a person would run it, in subprocesses
with its config in a temporary XDG_CONFIG_HOME, against a real `timeline serve`: `login_cli`
(instance, apps, the password grant with the e-mail), `post`, `follow` (found through
/api/v2/search), `follow-requests accept`, and `timelines home --json` paged with `--max-id`
and `--min-id`, compared with the native API's timeline of the same token.

One strategy (receiver_copies): toot's paging is the same API that tests/test_mastodon_py.py runs
on all five, and each toot command is a Python start (about half a second)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.mastodon_service import Service, serve

pytest.importorskip("toot", reason="toot is in the dev extras")
TOOT = Path(sys.executable).with_name("toot")
TOOT_TIMEOUT_S = 60
PASSWORD = "correct horse battery"


def register(service: Service, handle: str) -> None:
    """Registration as a Mastodon client does it, in forms (toot has no command for it)."""
    app = service.http.post(
        "/api/v1/apps",
        data={
            "client_name": "setup",
            "redirect_uris": "urn:ietf:wg:oauth:2.0:oob",
            "scopes": "write",
        },
    ).json()
    creds = {"client_id": app["client_id"], "client_secret": app["client_secret"]}
    token = service.http.post(
        "/oauth/token", data={"grant_type": "client_credentials", "scope": "write", **creds}
    ).json()["access_token"]
    r = service.http.post(
        "/api/v1/accounts",
        data={
            "username": handle,
            "email": f"{handle}@example.org",
            "password": PASSWORD,
            "agreement": "true",
            "locale": "en",
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text


class Toot:
    def __init__(self, home: Path) -> None:
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("XDG_")},
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_CACHE_HOME": str(home / "cache"),
            "NO_COLOR": "1",
        }

    def __call__(self, *args: str) -> str:
        done = subprocess.run(
            [str(TOOT), *args],
            env=self.env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=TOOT_TIMEOUT_S,
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self(*args))

    def token(self, user: str) -> str:
        config = json.loads(Path(self.env["XDG_CONFIG_HOME"], "toot", "config.json").read_text())
        token: str = config["users"][user]["access_token"]
        return token


@pytest.mark.slow
def test_a_toot_session(mongo_url: str, tmp_path: Path) -> None:
    with serve(mongo_url, "receiver_copies", tmp_path) as service:
        host = service.base_url.removeprefix("http://")
        register(service, "carol")
        register(service, "dave")
        toot = Toot(tmp_path)
        for handle in ("carol", "dave"):
            out = toot(
                "login_cli", "-i", service.base_url, "-e", f"{handle}@example.org", "-p", PASSWORD
            )
            assert "Successfully logged in" in out
        carol, dave = f"carol@{host}", f"dave@{host}"
        assert "Toot posted" in toot("--as", dave, "post", "dave was here first")
        assert "now following dave" in toot("--as", carol, "follow", "dave")
        assert "now following you" in toot("--as", dave, "follow-requests", "accept", "carol")
        posted = [toot.json("--as", carol, "post", "--json", f"toot {i}")["id"] for i in range(4)]
        service.drained()

        newest = toot.json("--as", dave, "timelines", "home", "--json", "--limit", "2")
        assert [s["id"] for s in newest] == posted[::-1][:2]
        assert newest[0]["content"] == "<p>toot 3</p>" and newest[0]["account"]["acct"] == "carol"
        older = toot.json(
            "--as",
            dave,
            "timelines",
            "home",
            "--json",
            "--limit",
            "2",
            "--max-id",
            newest[-1]["id"],
        )
        assert [s["id"] for s in older] == posted[::-1][2:4]
        above = toot.json(
            "--as", dave, "timelines", "home", "--json", "--limit", "2", "--min-id", posted[0]
        )
        assert [s["id"] for s in above] == [posted[2], posted[1]]
        # The same timeline as the native API's, through the same token.
        native = service.http.get(
            "/timeline", headers={"Authorization": f"Bearer {toot.token(dave)}"}
        ).json()["items"]
        everything = toot.json("--as", dave, "timelines", "home", "--json")
        assert [s["id"] for s in everything] == [s["id"] for s in native]
        assert [s["content"] for s in everything][-1] == "<p>dave was here first</p>"
