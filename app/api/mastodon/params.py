"""Reading a Mastodon client's request: bodies sent as a form (Mastodon.py, toot's login) or as
JSON (toot's posts, markers), and the query parameters this API reads. Bodies keep the native
API's 64 KB limit (413 before they are read); nothing is written before they are valid."""

from __future__ import annotations

import json
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from bson import ObjectId
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from app.api.parsing import read_body
from app.cursors import parse_id
from app.domain.errors import BadRequest, NotFound, UnsupportedMediaType, ValidationFailed

M = TypeVar("M", bound=BaseModel)

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
# Fields in one form body: the largest a client sends here is registration's ten; the bound
# keeps a body of 64 KB of `a=&a=&...` from becoming tens of thousands of list entries.
MAX_FORM_FIELDS = 100
# Mastodon's page sizes: 20 by default, at most 40 (a larger `limit` is served as 40, as
# Mastodon does; docs/mastodon.md).
DEFAULT_LIMIT = 20
MAX_LIMIT = 40
# A limit longer than this is certainly over MAX_LIMIT: not worth int() (CPython refuses
# 4,300-digit strings).
MAX_LIMIT_DIGITS = 16
ID_PATTERN = r"^[0-9a-fA-F]{24}$"


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _nest(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Rails' form conventions, one level deep: `a[]=x&a[]=y` is a list, `home[last_read_id]=x`
    an object. A plain key given twice is refused (which one would count is a guess)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key.endswith("[]"):
            out.setdefault(key[:-2], [])
            if not isinstance(out[key[:-2]], list):
                raise ValidationFailed(f"{key[:-2][:40]}: given both as a list and not")
            out[key[:-2]].append(value)
        elif "[" in key and key.endswith("]"):
            outer, _, inner = key[:-1].partition("[")
            group = out.setdefault(outer, {})
            if not isinstance(group, dict) or inner in group:
                raise ValidationFailed(f"{outer[:40]}[{inner[:40]}]: given twice")
            group[inner] = value
        elif key in out:
            raise ValidationFailed(f"{key[:40]}: given twice")
        else:
            out[key] = value
    return out


async def body_params(request: Request) -> dict[str, Any]:
    """The body as a dict: a form or a JSON object; an empty body (no content type needed) is
    {}. 415 for any other type (multipart: no media here), 413 over 64 KB, 400 for JSON that
    does not parse, 422 for JSON that is not an object."""
    ctype = _content_type(request)
    raw = await read_body(request)
    if not raw.strip() and ctype in ("", FORM, JSON):
        return {}
    if ctype == JSON:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise BadRequest("the body is not valid JSON", code="malformed_json") from None
        if not isinstance(data, dict):
            raise ValidationFailed("the body must be a JSON object")
        return data
    if ctype == FORM:
        try:
            text = raw.decode("utf-8")
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
        except UnicodeDecodeError:
            raise BadRequest("the form is not UTF-8", code="malformed_form") from None
        except ValueError:
            raise BadRequest(
                f"the form has more than {MAX_FORM_FIELDS} fields", code="malformed_form"
            ) from None
        return _nest(pairs)
    raise UnsupportedMediaType(f"send the body as {FORM} or {JSON}")


def validate(model: type[M], data: dict[str, Any]) -> M:
    """`data` as `model` (422 naming the first bad field). Lax where a form needs it (`"1"` is
    true), never a dict or a number for a string."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ValidationFailed(f"{where[:80]}: {first['msg']}") from None


async def body(request: Request, model: type[M]) -> M:
    return validate(model, await body_params(request))


def limit_param(request: Request) -> int:
    """`limit`: a positive integer, DEFAULT_LIMIT when absent, served as MAX_LIMIT above it."""
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    # ASCII digits only (str.isdigit() also accepts "１" and "²"); no int() of a huge string.
    digits = raw.lstrip("0") if raw.isascii() and raw.isdigit() else ""
    if not digits:
        raise BadRequest("limit must be a positive integer", code="invalid_limit")
    if len(digits) > MAX_LIMIT_DIGITS:
        return MAX_LIMIT
    return min(int(digits), MAX_LIMIT)


def id_param(request: Request, name: str) -> ObjectId | None:
    """A status id in the query (`max_id`, `since_id`, `min_id`); 400 when malformed."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    oid = parse_id(raw) if len(raw) == 24 else None
    if oid is None:
        raise BadRequest(f"{name} must be a status id (24 hex digits)", code="invalid_id")
    return oid


def path_id(request: Request, name: str = "id") -> ObjectId:
    """An id in the path; a malformed one names nothing that exists, so it is 404."""
    raw = request.path_params[name]
    oid = parse_id(raw) if len(raw) == 24 else None
    if oid is None:
        raise NotFound("Record not found")
    return oid


def list_param(request: Request, name: str) -> list[str]:
    """`name[]=a&name[]=b` or `name=a` (both are sent by Mastodon clients)."""
    return [*request.query_params.getlist(f"{name}[]"), *request.query_params.getlist(name)]


def flag_param(request: Request, name: str) -> bool:
    """A boolean query flag as Rails reads one: absent, "", "0", "false" are false."""
    raw = request.query_params.get(name)
    return raw is not None and raw.lower() not in ("", "0", "false", "f", "off", "no")
