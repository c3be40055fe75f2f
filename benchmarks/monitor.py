"""Counting what the driver sends: commands (round trips) and documents/bytes written.

A PyMongo `CommandListener` registered on the benchmark's own client sees every command the
domain code sends while Beanie is bound to that client. The benchmark runs one operation at a
time, so a counting window around an operation attributes exactly its commands to it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import bson
from pymongo import monitoring

WRITE_COMMANDS = frozenset({"insert", "update", "delete", "findAndModify"})
# Commands that are not part of an operation: the driver's session housekeeping.
IGNORED_COMMANDS = frozenset({"endSessions", "hello", "isMaster", "ismaster"})


@dataclass
class Sent:
    """One command as sent and the documents its reply says it wrote (kept only by a recording
    counter: `benchmarks run --shards` routes them through the shard plan afterwards)."""

    name: str
    command: Mapping[str, Any]
    written: int = 0


@dataclass
class Window:
    """What one operation (or a group of them) sent."""

    round_trips: int = 0
    # (command name, collection) -> count, e.g. ("find", "statuses") or ("getMore", "friendships")
    commands: Counter[tuple[str, str]] = field(default_factory=Counter)
    docs_written: int = 0
    bytes_written: int = 0
    docs_by_collection: Counter[str] = field(default_factory=Counter)
    sent: list[Sent] = field(default_factory=list)
    # What the server rewrote for the window's writes (BSON bytes of the documents they changed,
    # benchmarks/rewrite.py), where measured; None elsewhere.
    bytes_rewritten: int | None = None

    def queries(self, collection: str) -> int:
        """`find` and `aggregate` commands on `collection` (a cursor's getMores not included)."""
        return self.commands[("find", collection)] + self.commands[("aggregate", collection)]


def _bson_size(value: Any) -> int:
    """BSON bytes of a document, or of an array (an update's or `$merge`'s pipeline) as the
    array it is sent as (a document keyed "0", "1", ...)."""
    if isinstance(value, Mapping):
        return len(bson.encode(value))
    if isinstance(value, list):
        return len(bson.encode({str(k): v for k, v in enumerate(value)}))
    return 0


def writes_through_pipeline(name: str, command: Mapping[str, Any]) -> bool:
    """An `aggregate` whose pipeline writes (`$merge` or `$out`): counted as a write."""
    if name != "aggregate":
        return False
    stages = command.get("pipeline", [])
    return any(isinstance(s, Mapping) and ("$merge" in s or "$out" in s) for s in stages)


def _payload_bytes(name: str, command: Mapping[str, Any]) -> int:
    """BSON bytes of what a write command carries for the server to write: inserted documents,
    update specs (a document or a pipeline), a writing aggregate's pipeline. Filters, options
    and the command's envelope are not counted, for every strategy alike; nor is what the
    server rewrites itself (a whole document for a small update: see `fold_rewrite_*`)."""
    if name == "insert":
        return sum(_bson_size(d) for d in command.get("documents", []))
    if name == "update":
        return sum(_bson_size(u["u"]) for u in command.get("updates", []) if "u" in u)
    if name == "findAndModify":
        return _bson_size(command.get("update"))
    if writes_through_pipeline(name, command):
        return _bson_size(command.get("pipeline", []))
    return 0


def one_document_pipeline(command: Mapping[str, Any]) -> bool:
    """A writing aggregate whose first stage matches one `_id` (a value, not an operator): it
    writes at most one document."""
    stages = command.get("pipeline", [])
    first = stages[0] if stages and isinstance(stages[0], Mapping) else {}
    match = first.get("$match")
    return isinstance(match, Mapping) and "_id" in match and not isinstance(match["_id"], Mapping)


def _docs_written(name: str, reply: Mapping[str, Any], command: Mapping[str, Any]) -> int:
    if name == "aggregate":
        # A writing aggregate's reply is a cursor: it does not say what `$merge` or `$out`
        # wrote. One that starts by matching one `_id` (inbox_buckets' split of a head into a
        # new lower bucket) is counted as the one document it may write: an upper bound (none
        # when the match failed). Any other is counted as none: no strategy sends one.
        return 1 if one_document_pipeline(command) else 0
    if name == "findAndModify":
        return int(reply.get("lastErrorObject", {}).get("n", 0))
    if name == "update":
        # `n` counts matched documents (upserts included); count only real changes.
        return int(reply.get("nModified", 0)) + len(reply.get("upserted", []))
    return int(reply.get("n", 0))


class CommandCounter(monitoring.CommandListener):
    """Accumulates into the innermost open window; commands outside any window are ignored.
    With `record`, every window also keeps the commands themselves (`Window.sent`)."""

    def __init__(self, *, record: bool = False) -> None:
        self.record = record
        self._windows: list[Window] = []
        self._started: dict[int, tuple[str, str, int, Sent | None]] = {}
        # Writing aggregates in flight (their reply alone does not say what they wrote).
        self._commands: dict[int, Mapping[str, Any]] = {}

    @contextmanager
    def window(self) -> Iterator[Window]:
        w = Window()
        self._windows.append(w)
        try:
            yield w
        finally:
            self._windows.remove(w)

    def external(self, target: str, commands: int, *, docs: int, nbytes: int) -> None:
        """One round trip to another server (the redis peer's pipelines: `commands` commands
        writing `docs` members of `nbytes` bytes), counted in the open windows like a command."""
        for w in self._windows:
            w.round_trips += 1
            w.commands[("pipeline", target)] += commands
            w.docs_written += docs
            w.bytes_written += nbytes
            if docs:
                w.docs_by_collection[target] += docs

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if not self._windows or name in IGNORED_COMMANDS:
            return
        cmd = event.command
        target = cmd.get(name)
        collection = str(cmd.get("collection", "")) if name == "getMore" else str(target)
        sent = Sent(name, cmd) if self.record else None
        for w in self._windows:
            w.round_trips += 1
            w.commands[(name, collection)] += 1
            if sent is not None:
                w.sent.append(sent)
        if name in WRITE_COMMANDS or writes_through_pipeline(name, cmd):
            self._started[event.request_id] = (name, collection, _payload_bytes(name, cmd), sent)
            if name == "aggregate":
                self._commands[event.request_id] = cmd

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        started = self._started.pop(event.request_id, None)
        if started is None:
            return
        name, collection, nbytes, sent = started
        docs = _docs_written(name, event.reply, self._commands.pop(event.request_id, {}))
        if sent is not None:
            sent.written = docs
        for w in self._windows:
            w.docs_written += docs
            w.bytes_written += nbytes
            w.docs_by_collection[collection] += docs

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._started.pop(event.request_id, None)
        self._commands.pop(event.request_id, None)
