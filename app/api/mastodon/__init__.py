"""A subset of Mastodon's client API (/api/v1, /api/v2, /oauth) over the same domain as the
native API, so that Mastodon clients (Mastodon.py, toot) use this service unmodified.
docs/mastodon.md lists the endpoints and what differs from Mastodon."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from app.api.endpoint import Endpoint
from app.api.mastodon.avatar import AVATAR_PATH, missing_avatar
from app.api.mastodon.errors import dispatch, unknown_endpoint
from app.api.mastodon.routes import MASTODON_ENDPOINTS

# Mastodon's clients ask for some paths with a trailing slash (`/api/v1/instance/`).
SLASHED = ("/api/v1/instance", "/api/v2/instance")
# Every method reaches `dispatch`, which answers the ones a path lacks with its exact `Allow`.
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def mastodon_routes() -> list[BaseRoute]:
    """One route per path (its methods dispatched and its 405s answered Mastodon's way), the
    instance paths also with a trailing slash, and a Mastodon 404 for every other path under
    /api/ and /oauth/."""
    by_path: dict[str, dict[str, Endpoint]] = {}
    for ep in MASTODON_ENDPOINTS:
        by_path.setdefault(ep.path, {})[ep.method] = ep
    routes: list[BaseRoute] = []
    for path, endpoints in by_path.items():
        handler = dispatch(endpoints)
        routes.append(Route(path, handler, methods=METHODS))
        if path in SLASHED:
            routes.append(Route(path + "/", handler, methods=METHODS))
    routes.append(Route(AVATAR_PATH, missing_avatar, methods=["GET"]))
    routes.append(Route("/api/{rest:path}", unknown_endpoint, methods=METHODS))
    routes.append(Route("/oauth/{rest:path}", unknown_endpoint, methods=METHODS))
    return routes


__all__ = ["MASTODON_ENDPOINTS", "mastodon_routes"]
