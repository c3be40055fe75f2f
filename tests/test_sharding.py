"""`timeline shard` and the shard plan: its refusal anywhere but a mongos (against the embedded
server, a real process), and the commands it sends to a mongos, recorded by a fake at the
network edge (no sharded cluster runs here)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from app.storage import sharding
from app.storage.sharding import model_indexes, plan_by_collection, shard_database
from tests.test_cli import run

PLAN_BY_COLLECTION = plan_by_collection()

DB = "timeline"


class RecordingMongos:
    """Answers like a mongos and records every command, in order. `sharded` holds the shard
    keys config.collections reports (what an earlier run left)."""

    def __init__(self, *, mongos: bool = True, sharded: dict[str, Any] | None = None) -> None:
        self.mongos = mongos
        self.sharded = dict(sharded or {})
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def command(self, db: str, cmd: Mapping[str, Any]) -> Mapping[str, Any]:
        self.sent.append((db, dict(cmd)))
        name = next(iter(cmd))
        if name == "hello":
            return (
                {"ok": 1, "msg": "isdbgrid"}
                if self.mongos
                else {"ok": 1, "isWritablePrimary": True}
            )
        if name == "find":
            ns = cmd["filter"]["_id"]
            batch = [{"_id": ns, "key": self.sharded[ns]}] if ns in self.sharded else []
            return {"ok": 1, "cursor": {"firstBatch": batch, "id": 0}}
        if name == "shardCollection":
            self.sharded[cmd["shardCollection"]] = dict(cmd["key"])
        return {"ok": 1}

    def names(self) -> list[str]:
        return [next(iter(cmd)) for _, cmd in self.sent]


async def _shard(fake: RecordingMongos) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = await shard_database(fake, DB, lines.append)
    return code, lines


def test_every_declared_collection_has_a_plan() -> None:
    missing = [c for c in model_indexes() if c not in PLAN_BY_COLLECTION]
    assert not missing, f"no row in app.storage.sharding.plan() (and docs/scaling.md) for {missing}"


def test_unique_indexes_are_prefixed_by_the_shard_key() -> None:
    """A sharded cluster enforces a unique index only when the shard key's fields prefix it."""
    for name, indexes in model_indexes().items():
        plan = PLAN_BY_COLLECTION[name]
        if plan.key is None:
            continue
        for index in indexes:
            doc = index.document
            if doc.get("unique"):
                first = next(iter(doc["key"]))
                assert first == plan.routing_field, (name, doc["key"], plan.key)


async def test_refuses_a_server_that_is_not_a_mongos() -> None:
    fake = RecordingMongos(mongos=False)
    with pytest.raises(sharding.NotAMongos, match="isdbgrid"):
        await _shard(fake)
    assert fake.names() == ["hello"]  # nothing else was sent


async def test_command_sequence_on_a_fresh_cluster() -> None:
    fake = RecordingMongos()
    code, lines = await _shard(fake)
    assert code == 0
    assert fake.sent[:2] == [("admin", {"hello": 1}), ("admin", {"enableSharding": DB})]
    sharded = [p for p in PLAN_BY_COLLECTION.values() if p.key is not None]
    shard_cmds = [cmd for _, cmd in fake.sent if "shardCollection" in cmd]
    planned = {p.collection: p for p in sharded}
    assert shard_cmds == [  # in the order of the declared collections
        {"shardCollection": f"{DB}.{name}", "key": planned[name].key_document()}
        for name in model_indexes()
        if name in planned
    ]
    # Every collection's indexes, the shard key's included, are created before it is sharded.
    for p in sharded:
        at = fake.sent.index(
            ("admin", {"shardCollection": f"{DB}.{p.collection}", "key": p.key_document()})
        )
        created = [
            cmd
            for db, cmd in fake.sent[:at]
            if db == DB and cmd.get("createIndexes") == p.collection
        ]
        assert created, p.collection
        keys = [dict(i["key"]) for i in created[-1]["indexes"]]
        assert p.key_document() in keys
    # Unsharded collections get their indexes, and no shardCollection.
    assert {"createIndexes"} <= set(fake.names())
    assert not any(cmd.get("shardCollection") == f"{DB}.users" for _, cmd in fake.sent)
    assert "statuses: sharded on {author_id: 'hashed', _id: 1}" in lines
    assert any(line.startswith("users: stays unsharded") for line in lines)


async def test_a_second_run_changes_nothing() -> None:
    fake = RecordingMongos()
    await _shard(fake)
    again = RecordingMongos(sharded=fake.sharded)
    code, lines = await _shard(again)
    assert code == 0
    assert "shardCollection" not in again.names()
    assert "timeline_entries: already sharded on {owner_id: 'hashed'}" in lines


async def test_a_collection_sharded_on_another_key_is_reported_not_changed() -> None:
    fake = RecordingMongos(sharded={f"{DB}.statuses": {"_id": "hashed"}})
    code, lines = await _shard(fake)
    assert code == 1
    assert not any(cmd.get("shardCollection") == f"{DB}.statuses" for _, cmd in fake.sent)
    assert any("statuses: already sharded on {_id: 'hashed'}" in line for line in lines)


def _one_line_refusal(result: Any) -> str:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return str(lines[0])


def test_cli_refuses_the_embedded_server(tmp_path: Path, mongo_url: str) -> None:
    line = _one_line_refusal(run(["shard"], tmp_path, MONGODB_URL=mongo_url))
    assert "not a mongos" in line


def test_cli_refuses_without_mongodb_url(tmp_path: Path) -> None:
    line = _one_line_refusal(run(["shard"], tmp_path))
    assert "MONGODB_URL" in line and "not a mongos" in line
    assert not (tmp_path / "data").exists()  # no embedded server was started
