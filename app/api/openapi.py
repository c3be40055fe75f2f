"""The OpenAPI 3.1 document, generated from the endpoint table and the pydantic schemas."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.api import schemas as s
from app.api.endpoint import Endpoint
from app.api.mastodon.routes import MASTODON_ENDPOINTS
from app.api.routes import ENDPOINTS as NATIVE_ENDPOINTS
from app.limits.ratelimit import EXEMPT_PATHS

# The native API and the Mastodon client API beside it (docs/mastodon.md), in one document.
ENDPOINTS = (*NATIVE_ENDPOINTS, *MASTODON_ENDPOINTS)

_REASONS = {
    400: "malformed JSON or parameters (unknown or repeated query parameters too)",
    401: "missing or invalid bearer token",
    403: "not allowed",
    404: "not found (also where existence would leak private data)",
    409: "conflict",
    413: "body too large",
    415: "body is not application/json",
    422: "validation failed",
    429: "a rate limit is over: retry after Retry-After seconds (X-RateLimit-* tell the limit)",
    503: "database unavailable",
}


Ref = Callable[[type[BaseModel]], dict[str, Any]]


def _operation_id(ep: Endpoint) -> str:
    words = f"{ep.method.lower()}_{ep.path.strip('/').replace('/', '_')}"
    return words.replace("{", "").replace("}", "").replace("-", "_") or "root"


def _operation(ep: Endpoint, ref: Ref, error: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": _operation_id(ep),
        "summary": ep.summary,
        "parameters": [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required or p.where == "path",
                "description": p.description,
                "schema": p.schema,
            }
            for p in ep.params
        ],
        "responses": {},
    }
    if ep.auth:
        op["security"] = [{"bearer": []}]
    if ep.body is not None:
        content = {"application/json": {"schema": ref(ep.body)}}
        if ep.forms:
            content["application/x-www-form-urlencoded"] = {"schema": ref(ep.body)}
        op["requestBody"] = {"required": True, "content": content}
    ok: dict[str, Any] = {"description": "success"}
    if ep.response is not None:
        ok["content"] = {"application/json": {"schema": ref(ep.response)}}
    op["responses"][str(ep.ok)] = ok
    for status, description in ep.also_ok.items():
        op["responses"][str(status)] = {"description": description, "content": ok["content"]}
    if ep.error_body is not None:
        error = {"application/json": {"schema": ref(ep.error_body)}}
    # 400: any operation refuses unknown or repeated query parameters (app.api.parsing).
    codes = set(ep.errors) | {400, 503}
    if ep.auth:
        # 403: a Mastodon API token without the scope (docs/mastodon.md).
        codes |= {401, 403}
    if ep.path not in EXEMPT_PATHS:  # app.limits.ratelimit counts every other request
        codes.add(429)
    for code in sorted(codes):
        op["responses"][str(code)] = {"description": _REASONS[code], "content": error}
    return op


def build_openapi() -> dict[str, Any]:
    bodies = {ep.body for ep in ENDPOINTS}
    models: set[type[BaseModel]] = {s.ErrorOut}
    for ep in ENDPOINTS:
        models.update(m for m in (ep.body, ep.response, ep.error_body) if m is not None)

    def mode_of(model: type[BaseModel]) -> Literal["validation", "serialization"]:
        return "validation" if model in bodies else "serialization"

    keyed, defs = models_json_schema(
        [(m, mode_of(m)) for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        return dict(keyed[(model, mode_of(model))])

    error = {"application/json": {"schema": ref(s.ErrorOut)}}
    paths: dict[str, dict[str, Any]] = {}
    for ep in ENDPOINTS:
        paths.setdefault(ep.path, {})[ep.method.lower()] = _operation(ep, ref, error)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Timeline service",
            "version": "1.0.0",
            "description": "A social timeline on MongoDB; see README.md.",
        },
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
