"""What the server rewrites for a window's writes to one collection, beside what the client sent.

`bytes_written` (benchmarks/monitor.py) counts what the client sends: an update of one entry
into a bucket of fifty counts the entry, while the server writes the whole new version of the
bucket (WiredTiger stores documents whole). inbox_buckets' fold sends little per entry (each
distinct entry once per batch: app/strategies/inbox_buckets/heads.py) and rewrites whole heads;
results.json shows both (`fold_bytes_per_post`, `fold_rewrite_bytes_per_post`).

The rewrite of a window is the BSON size of every document its writes changed, as the document
is after the window (or before it, for one the window deleted afterwards, such as a claimed
loose entry): inserts count their documents; an update counts, for each document its reply
says it modified, the size of a document it named by `_id` (the mean size of those it named,
when it named more than it modified: the reply does not say which); a writing aggregate (a
`$merge` of a new document) counts the documents it gave a literal `_id` that exist after the
window; deletes count nothing.
An estimate by construction (a document changed twice counts twice, at its final size), and the
same for every collection and strategy it is applied to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import bson

from app.storage.chunks import chunked
from app.storage.store import Collection
from benchmarks.monitor import Sent

# Ids per `$in` of a size look-up: bounded lists (app.storage.chunks).
IDS_PER_QUERY = 100


async def sizes(coll: Collection, ids: Iterable[Any]) -> dict[Any, int]:
    """The BSON size of each of the documents `ids` that exists, computed by the server."""
    out: dict[Any, int] = {}
    for chunk in chunked(list(dict.fromkeys(ids)), IDS_PER_QUERY):
        cursor = await coll.aggregate(
            [{"$match": {"_id": {"$in": chunk}}}, {"$project": {"n": {"$bsonSize": "$$ROOT"}}}]
        )
        out.update({d["_id"]: int(d["n"]) async for d in cursor})
    return out


def _named(flt: Mapping[str, Any]) -> list[Any]:
    """The `_id`s an update's filter names (one, or an `$in` list); none for any other."""
    wanted = flt.get("_id")
    if isinstance(wanted, Mapping):
        listed = wanted.get("$in")
        return list(listed) if isinstance(listed, list) else []
    return [] if wanted is None else [wanted]


def _merged(command: Mapping[str, Any]) -> list[Any]:
    """The `_id`s a writing aggregate gives its output by a literal (`$project` stages)."""
    out = []
    for stage in command.get("pipeline", []):
        given = stage.get("$project", {}).get("_id") if isinstance(stage, Mapping) else None
        if isinstance(given, Mapping) and "$literal" in given:
            out.append(given["$literal"])
    return out


def updated_ids(sent: Sequence[Sent], collection: str) -> list[Any]:
    """Every `_id` the window's updates of `collection` named, and those its writing
    aggregates gave their output."""
    named = [
        i
        for s in sent
        if s.name == "update" and s.command.get("update") == collection
        for u in s.command.get("updates", [])
        for i in _named(u.get("q", {}))
    ]
    merged = [
        i
        for s in sent
        if s.name == "aggregate" and s.command.get("aggregate") == collection
        for i in _merged(s.command)
    ]
    return named + merged


def rewritten(
    sent: Sequence[Sent], collection: str, before: Mapping[Any, int], after: Mapping[Any, int]
) -> int:
    """The rewrite of the window's writes `sent` to `collection` (module docstring), from the
    sizes of the documents it named before and after it."""
    total = 0
    for s in sent:
        if s.command.get(s.name) != collection or not s.written:
            continue
        if s.name == "insert":
            total += sum(_doc_size(d) for d in s.command.get("documents", []))
        elif s.name == "aggregate":
            total += sum(after.get(i, 0) for i in _merged(s.command))
        elif s.name == "update":
            named = [i for u in s.command.get("updates", []) for i in _named(u.get("q", {}))]
            known = [after.get(i, before.get(i)) for i in named]
            found = [n for n in known if n is not None]
            if found:
                total += round(s.written * sum(found) / len(found))
    return total


def _doc_size(doc: Mapping[str, Any]) -> int:
    return len(bson.encode(doc))
