"""The embedded server runs with app.storage.embedded's glibc allocator settings (two arenas, a
fixed mmap threshold), which keep its RSS near its data instead of its threads' largest result
sets (docs/benchmarks.md, "Soak"); an operator's own MALLOC_* settings win over them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from app.storage.embedded import SERVER_MALLOC_ENV
from entrypoints.database import start_embedded
from tests import harness

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc/PID/environ; glibc settings"
)


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


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
