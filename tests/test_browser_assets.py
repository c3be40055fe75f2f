"""The web client's files as the service serves them (no browser needed): headers, and nothing
in them that would load from another host."""

from __future__ import annotations

import re

import pytest

from app.web.routes import STATIC_DIR, WEB_DIR
from tests.harness import Harness

# Any URL with a scheme or a protocol-relative one ("//host/...") in markup, style or script.
FOREIGN = re.compile(r"""(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}""", re.IGNORECASE)


@pytest.mark.parametrize("strategy", ["receiver_copies"])
async def test_page_and_assets_are_served_with_strict_headers(h: Harness) -> None:
    page = await h.client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    # Same-origin page: the API grants no other origin access.
    assert "access-control-allow-origin" not in page.headers
    for asset, kind in (("app.js", "javascript"), ("app.css", "text/css")):
        r = await h.client.get(f"/static/{asset}")
        assert r.status_code == 200 and kind in r.headers["content-type"], asset
        assert r.headers["x-content-type-options"] == "nosniff"
        assert f"/static/{asset}" in page.text
    missing = await h.client.get("/static/nope.js")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    escape = await h.client.get("/static/../routes.py")
    assert escape.status_code == 404


def test_no_file_of_the_client_names_another_host() -> None:
    files = [WEB_DIR / "index.html", *sorted(STATIC_DIR.iterdir())]
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert FOREIGN.findall(text) == [], path
        # No inline script or style, which the page's CSP would block anyway.
        assert "<style" not in text and 'style="' not in text and "onclick=" not in text, path
    assert "<script>" not in (WEB_DIR / "index.html").read_text(encoding="utf-8")
