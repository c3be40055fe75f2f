"""Serving the web client. Everything it loads comes from this service: the page, one script,
one style sheet (system fonts only), so a strict Content-Security-Policy can forbid every other
source, inline scripts and inline styles included.

The API itself sends no CORS headers: the page is same-origin, and pages on other origins have
no business reading users' timelines through visitors' browsers. Tokens are sent as a bearer
header from `localStorage`, never as cookies, so cross-site requests carry no credentials.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"

# Only this origin, for everything; no inline script or style (the page has none), no plugins,
# no framing (clickjacking), no <base> rewriting, forms post only here.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Assets are not versioned by name: revalidate each time (cheap, StaticFiles answers 304).
    "Cache-Control": "no-cache",
}


@cache
def _page() -> str:
    return (WEB_DIR / "index.html").read_text(encoding="utf-8")


async def index(request: Request) -> Response:
    return HTMLResponse(_page(), headers={**SECURITY_HEADERS, "Content-Security-Policy": PAGE_CSP})


class _Assets(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def web_routes() -> list[BaseRoute]:
    return [
        Route("/", index, methods=["GET"]),
        Mount("/static", app=_Assets(directory=STATIC_DIR), name="static"),
    ]
