"""Read markers (`GET`/`POST /markers`) and the unread count (`GET /timeline/unread_count`).

A user's markers are one document in `markers` keyed by the user's id. The home marker only moves
forward and every change increments its `version`. Each change is a single conditional atomic
update ("set it to X if the stored id is older than X [and the version is still V]"), never a
read followed by a write, so concurrent requests cannot lose one another's change or move the
marker backwards: whichever order they run in, the newest id wins and `version` counts every
request that moved it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, OperationFailure

from app.domain import timeline_reads
from app.domain.errors import Conflict, ValidationFailed
from app.storage.db import Database
from app.storage.models import utcnow
from app.storage.store import Store
from app.strategies import TimelineStrategy
from app.timefmt import rfc3339

# The version of a marker that was never set: `{"version": 0}` means "only if there is none yet".
NO_MARKER_VERSION = 0
# The newest position there is when no status exists yet.
NO_STATUS = ObjectId("0" * 24)
# A first move creates the empty document, then decides as an update; after that every move
# is decided by its one conditional update (or by the stored marker, when that is as new). An
# update that decided on a state older than the one read after it tries once more. Each retry
# follows another request's progress; three attempts are slack, not a spin loop.
MOVE_ATTEMPTS = 3
# Write conflicts a move retries before giving up: racing moves of one user's marker come from
# that user's own tabs and devices, a handful at a time (the tests race 16).
MAX_MOVE_CONFLICTS = 32
# MongoDB's code for a write that conflicted with a concurrent one (also fanout.worker's).
WRITE_CONFLICT = 112


def _is_conflict(exc: OperationFailure) -> bool:
    return exc.code == WRITE_CONFLICT or exc.has_error_label("TransientTransactionError")


@dataclass(frozen=True)
class HomeMarker:
    last_read_id: ObjectId
    version: int
    updated_at: datetime

    def json(self) -> dict[str, Any]:
        return {
            "last_read_id": str(self.last_read_id),
            "version": self.version,
            "updated_at": rfc3339(self.updated_at),
        }


def _home(doc: dict[str, Any] | None) -> HomeMarker | None:
    home = None if doc is None else doc.get("home")
    if not home:
        return None
    return HomeMarker(home["last_read_id"], home["version"], home["updated_at"])


def markers_json(home: HomeMarker | None) -> dict[str, Any]:
    return {"home": None if home is None else home.json()}


async def get_home(store: Store, user_id: ObjectId) -> HomeMarker | None:
    return _home(await store.markers.find_one({"_id": user_id}))


def _move_condition(last_read_id: ObjectId, version: int | None) -> dict[str, Any]:
    """When a move to `last_read_id` applies: the id is newer (or there is no marker yet), and
    with `version`, the stored version is that one."""
    newer = {"home.last_read_id": {"$lt": last_read_id}}
    missing = {"home": {"$exists": False}}
    if version is None:
        return {"$or": [missing, newer]}
    if version == NO_MARKER_VERSION:
        return missing
    return {"home.version": version, **newer}


def _move_update(last_read_id: ObjectId) -> dict[str, Any]:
    return {
        "$set": {"home.last_read_id": last_read_id, "home.updated_at": utcnow()},
        "$inc": {"home.version": 1},
    }


async def _check_not_ahead(store: Store, last_read_id: ObjectId) -> None:
    """Refuse a position past the newest status that exists: a marker at `ffff…` (year 2106)
    would make every later status older than it, and the unread count 0 for good."""
    newest = await store.statuses.find_one({}, {"_id": 1}, sort=[("_id", -1)])
    if last_read_id > (newest["_id"] if newest is not None else NO_STATUS):
        raise ValidationFailed("home.last_read_id is newer than any status", code="marker_ahead")


async def move_home(
    database: Database, user_id: ObjectId, last_read_id: ObjectId, version: int | None
) -> HomeMarker:
    """Move the home marker forward to `last_read_id` and return it.

    An id newer than the newest status is refused (ValidationFailed `marker_ahead`).
    An id that is not newer than the stored one changes nothing (the stored marker is returned).
    With `version`, the change happens only if the stored version equals it (0: no marker yet);
    otherwise `Conflict`, whether or not the id is newer.
    """
    await _check_not_ahead(database.store, last_read_id)
    condition = _move_condition(last_read_id, version)
    # The update runs in a transaction where the server has them: the embedded server settles a
    # write conflict of a plain findAndModify inside the server, and racing first moves then
    # ended with an older id or a move counted twice (full-suite runs here); in a transaction
    # the conflict surfaces and the driver retries the whole update, condition included.
    update = _move_update(last_read_id)
    coll = database.store.markers
    attempts = conflicts = 0
    while attempts < MOVE_ATTEMPTS:
        try:
            changed = await database.in_transaction(
                lambda session: coll.find_one_and_update(
                    {"_id": user_id, **condition},
                    update,
                    return_document=ReturnDocument.AFTER,
                    session=session,
                )
            )
        except OperationFailure as exc:
            # A conflict left over by the driver's own retries: another move committed, so
            # the condition is looked at again. Bounded, though each one is another's progress.
            if not _is_conflict(exc) or conflicts >= MAX_MOVE_CONFLICTS:
                raise
            conflicts += 1
            continue
        attempts += 1
        if changed is not None:
            moved = _home(changed)
            assert moved is not None
            return moved
        doc = await coll.find_one({"_id": user_id})
        if doc is None and (version is None or version == NO_MARKER_VERSION):
            # The user's first marker: the (empty) document is created by a plain insert, and
            # the same condition then decides as an update. Not an upsert retried after a
            # duplicate key: with racing first moves that counted a move twice now and then
            # (versions 1, 3, 4, 5, 6 for five moves, in two full-suite runs on the embedded
            # server); an insert of an empty document has nothing to apply twice.
            with contextlib.suppress(DuplicateKeyError):
                await coll.insert_one({"_id": user_id})
            continue
        stored = _standing(doc, last_read_id, version)
        if stored is not None:
            return stored  # not newer than the stored marker: unchanged
    raise Conflict("the marker kept changing meanwhile; retry")


def _standing(
    doc: dict[str, Any] | None, last_read_id: ObjectId, version: int | None
) -> HomeMarker | None:
    """After a move's update did not apply, what `doc` (read after it) decides: the stored
    marker when it is at least as new as `last_read_id`, `Conflict` for a stale `version`, None
    to decide again."""
    stored = _home(doc)
    stored_version = NO_MARKER_VERSION if stored is None else stored.version
    if version is not None and version != stored_version:
        raise Conflict(f"the marker is at version {stored_version}, not {version}: read it again")
    if stored is not None and stored.last_read_id >= last_read_id:
        return stored
    # Newer than the stored marker, yet the update did not apply: it decided on an older state
    # (a racing first move's document created after the update's snapshot, say). Answering the
    # stored marker here lost the newest of racing first moves (a full-suite run, 2026-12-07:
    # 16 racers ended at the second newest id).
    return None


async def unread_count(
    store: Store, strategy: TimelineStrategy, user_id: ObjectId
) -> tuple[int, bool]:
    """(items of the timeline newer than the home marker, whether that hit TIMELINE_MAX)."""
    home = await get_home(store, user_id)
    after = None if home is None else home.last_read_id
    count = await timeline_reads.count_newer(store.revocations, strategy, user_id, after)
    return count, count >= strategy.max_items
