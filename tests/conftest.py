"""One embedded SecantusDB for the whole session (its stop takes ~2 s); each test gets its own
database. Set TEST_MONGODB_URL to run the suite against a real MongoDB instead."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from app.storage import pymongo_compat
from app.storage.embedded import EmbeddedServer
from app.strategies import STRATEGY_NAMES
from tests.harness import TEST_HYBRID_THRESHOLD, Harness, running, test_settings

# The tests are an entry point too: PyMongo's Python 3.11 fix before any client exists.
pymongo_compat.apply()


# The WiredTiger cache of a test session's embedded server, in MiB. One server holds every
# database of an xdist worker's tests (hundreds, several 2,500-friend fan-outs among them), more
# at once than one deployment's data. With 32 here, one fresh-clone `make test` of three saw
# tests/test_worker_crash.py's restarted worker apply nothing for 180 s (no error logged), the
# signature of the eviction wedge later caught in the act at 32 MiB (app/settings.py,
# EMBEDDED_DB_CACHE_MB_DEFAULT, now 256 too); kept as its own constant so that a smaller
# deployment default never shrinks the test server.
TEST_SERVER_CACHE_MB = 256


@pytest.fixture(scope="session")
def mongo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("TEST_MONGODB_URL")
    if url:
        yield url
        return
    data = Path(tmp_path_factory.mktemp("secantus"))
    with EmbeddedServer(
        data / "db", log_path=data / "server.log", cache_mb=TEST_SERVER_CACHE_MB
    ) as server:
        yield server.url


@pytest.fixture(params=STRATEGY_NAMES)
def strategy(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def timeline_max() -> int:
    """Override with @pytest.mark.parametrize("timeline_max", [...]) to test the bound."""
    return 1000


@pytest.fixture
def inbox_bucket_size() -> int:
    """INBOX_BUCKET_SIZE; override with @pytest.mark.parametrize to cross bucket edges often."""
    return 50


@pytest.fixture
def hybrid_threshold() -> int:
    """HYBRID_THRESHOLD; override with @pytest.mark.parametrize (tests/harness.py's default
    makes every author with two friends large)."""
    return TEST_HYBRID_THRESHOLD


@pytest.fixture
async def h(
    mongo_url: str,
    strategy: str,
    timeline_max: int,
    inbox_bucket_size: int,
    hybrid_threshold: int,
) -> AsyncIterator[Harness]:
    settings = test_settings(
        mongo_url,
        strategy,
        timeline_max,
        inbox_bucket_size=inbox_bucket_size,
        hybrid_threshold=hybrid_threshold,
    )
    async with running(settings) as harness:
        yield harness
