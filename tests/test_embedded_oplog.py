"""The embedded server's oplog stays bounded: `timeline serve`, `worker` and `db` start SecantusDB
with app.storage.embedded's OPLOG_MAX_ENTRIES and OPLOG_RETENTION_S, so writes past the cap prune
its
oldest entries (the soak's data directory grew 13 -> 261 MiB in an hour without them)."""

from __future__ import annotations

from pathlib import Path

from pymongo import MongoClient

from app.storage.embedded import OPLOG_MAX_ENTRIES
from entrypoints.database import start_embedded
from tests import harness

# SecantusDB prunes its oplog once every this many writes, so the count can exceed the cap by
# up to this much between two prunes (secantus.storage._OPLOG_PRUNE_INTERVAL).
SERVER_PRUNE_INTERVAL = 1_000
INSERT_BATCH = 1_000


def test_the_oplog_keeps_at_most_its_cap(tmp_path: Path) -> None:
    settings = harness.test_settings("mongodb://unused", "receiver_copies")
    settings = settings.model_copy(update={"timeline_data_dir": tmp_path})
    server = start_embedded(settings)  # exactly as the commands start it
    try:
        client: MongoClient[dict[str, object]] = MongoClient(server.url)
        with client:
            oplog = client.local["oplog.rs"]
            written = OPLOG_MAX_ENTRIES + 3 * SERVER_PRUNE_INTERVAL
            for start in range(0, written, INSERT_BATCH):
                docs = [{"n": n} for n in range(start, start + INSERT_BATCH)]
                client.scratch.docs.insert_many(docs)
            assert client.scratch.docs.count_documents({}) == written
            kept = oplog.count_documents({})
            # Without the cap the server keeps 100,000 entries (an hour's): all of these.
            assert kept <= OPLOG_MAX_ENTRIES + SERVER_PRUNE_INTERVAL, kept
            assert kept >= OPLOG_MAX_ENTRIES // 2  # the oplog is read: the bound is not vacuous
    finally:
        server.stop()
