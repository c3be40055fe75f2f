"""The embedded server runs with app.storage.embedded's glibc allocator settings (two arenas, a
fixed mmap threshold), which keep its RSS near its data instead of its threads' largest result
sets (docs/benchmarks.md, "Soak"); an operator's own MALLOC_* settings win over them. Its
WiredTiger cache is the configured EMBEDDED_DB_CACHE_MB, not SecantusDB's 1 GiB, so that it
stops growing once full (docs/benchmarks.md, "The database server's memory")."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from app.settings import (
    EMBEDDED_DB_CACHE_MB_DEFAULT,
    EMBEDDED_DB_CACHE_MB_MIN,
    ConfigError,
    load_settings,
)
from app.storage.embedded import SERVER_MALLOC_ENV, EmbeddedServer
from entrypoints.database import start_embedded
from tests import harness

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc/PID/environ; glibc settings"
)


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _cmdline(pid: int) -> list[str]:
    return [arg.decode() for arg in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]


def test_the_server_gets_the_allocator_settings_unless_the_operator_set_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "3")
    settings = harness.test_settings("mongodb://unused", "receiver_copies")
    settings = settings.model_copy(update={"timeline_data_dir": tmp_path})
    server = start_embedded(settings)  # exactly as the commands start it
    try:
        assert server.process is not None
        env = _environ(server.process.pid)
    finally:
        server.stop()
    assert env["MALLOC_ARENA_MAX"] == "3"
    mmap_threshold = "MALLOC_MMAP_THRESHOLD_"
    assert env[mmap_threshold] == SERVER_MALLOC_ENV[mmap_threshold]


def test_the_server_runs_with_the_configured_cache_size(tmp_path: Path) -> None:
    settings = harness.test_settings("mongodb://unused", "receiver_copies")
    settings = settings.model_copy(
        update={"timeline_data_dir": tmp_path, "embedded_db_cache_mb": 160}
    )
    server = start_embedded(settings)  # it starts, so SecantusDB accepted the size
    try:
        assert server.process is not None
        args = _cmdline(server.process.pid)
    finally:
        server.stop()
    assert args[args.index("--cache-size") + 1] == "160M"


def test_the_cache_size_defaults_to_the_setting_and_is_bounded(tmp_path: Path) -> None:
    assert load_settings(_env_file=None).embedded_db_cache_mb == EMBEDDED_DB_CACHE_MB_DEFAULT
    assert EmbeddedServer(tmp_path).cache_mb == EMBEDDED_DB_CACHE_MB_DEFAULT
    for bad in (EMBEDDED_DB_CACHE_MB_MIN - 1, "1G"):
        with pytest.raises(ConfigError, match="EMBEDDED_DB_CACHE_MB"):
            load_settings(_env_file=None, embedded_db_cache_mb=bad)
