"""What benchmarks/monitor.py counts as written (what the client sends, for every strategy
alike) for the writes beyond plain documents and update specs: an update by an aggregation
pipeline, an aggregate whose `$merge` writes; and benchmarks/rewrite.py's estimate of what the
server rewrites for a window's writes."""

from __future__ import annotations

from typing import Any

import bson
from bson import ObjectId

from benchmarks.monitor import (
    Sent,
    _docs_written,
    _payload_bytes,
    one_document_pipeline,
    writes_through_pipeline,
)
from benchmarks.rewrite import rewritten, updated_ids

PIPELINE = [{"$set": {"items": {"$literal": [{"s": 1, "t": "text"}]}}}, {"$unset": ["x"]}]


def array_bytes(value: list[Any]) -> int:
    """A BSON array's bytes: a document keyed "0", "1", ... (as the driver sends it)."""
    return len(bson.encode({str(k): v for k, v in enumerate(value)}))


def test_a_pipeline_update_counts_its_pipeline() -> None:
    command = {"update": "c", "updates": [{"q": {"_id": 1}, "u": PIPELINE, "multi": True}]}
    assert _payload_bytes("update", command) == array_bytes(PIPELINE) > 0
    sent = bson.encode({"updates": [{"u": PIPELINE}]})
    assert array_bytes(PIPELINE) < len(sent)  # the array only, not the envelope


def test_a_writing_aggregate_counts_its_pipeline_and_what_it_may_write() -> None:
    lower = ObjectId()
    pipeline = [
        {"$match": {"_id": ObjectId(), "v": 3}},
        {"$project": {"_id": {"$literal": lower}, "items": 1}},
        {"$merge": {"into": "c", "on": "_id", "whenNotMatched": "insert"}},
    ]
    command = {"aggregate": "c", "pipeline": pipeline, "cursor": {}}
    assert writes_through_pipeline("aggregate", command)
    assert _payload_bytes("aggregate", command) == array_bytes(pipeline)
    assert one_document_pipeline(command)
    assert _docs_written("aggregate", {"ok": 1, "cursor": {}}, command) == 1
    many = {**command, "pipeline": [{"$match": {"_id": {"$in": [1, 2]}}}, *pipeline[1:]]}
    assert not one_document_pipeline(many)
    assert _docs_written("aggregate", {"ok": 1}, many) == 0
    reading = {"aggregate": "c", "pipeline": [{"$match": {}}], "cursor": {}}
    assert not writes_through_pipeline("aggregate", reading)
    assert _payload_bytes("aggregate", reading) == 0


def test_the_rewrite_counts_whole_documents_the_writes_changed() -> None:
    """An insert counts its documents; an update the size of what it named, for each document
    it modified (the mean, when it named more than it modified); a `$merge` the document it
    created; a delete nothing. A document deleted since counts its size before."""
    head, gone, other, lower = ObjectId(), ObjectId(), ObjectId(), ObjectId()
    inserted = {"_id": ObjectId(), "items": ["x" * 50]}
    sent = [
        Sent("insert", {"insert": "c", "documents": [inserted]}, written=1),
        Sent("update", {"update": "c", "updates": [{"q": {"_id": head}, "u": {}}]}, written=1),
        Sent(
            "update",
            {"update": "c", "updates": [{"q": {"_id": {"$in": [gone, other]}}, "u": {}}]},
            written=1,
        ),
        Sent(
            "aggregate",
            {"aggregate": "c", "pipeline": [{"$project": {"_id": {"$literal": lower}}}]},
            written=1,
        ),
        Sent("delete", {"delete": "c", "deletes": [{"q": {"_id": head}}]}, written=1),
        Sent("update", {"update": "other", "updates": [{"q": {"_id": head}, "u": {}}]}, 1),
        Sent("update", {"update": "c", "updates": [{"q": {"_id": other}, "u": {}}]}, 0),
    ]
    assert set(updated_ids(sent, "c")) == {head, gone, other, lower}
    before = {gone: 300, other: 100, head: 1}
    after = {head: 5000, other: 100, lower: 2000}
    expected = len(bson.encode(inserted)) + 5000 + (300 + 100) // 2 + 2000
    assert rewritten(sent, "c", before, after) == expected
