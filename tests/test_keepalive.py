"""`timeline serve` keeps an idle connection open longer than an HTTP client keeps it for reuse.

With uvicorn's default keep-alive (5 s), equal to httpx's `keepalive_expiry`, a client could
send a request on a connection in the moment the server closed it: a ReadError in a 50-client
load run (docs/benchmarks.md). This reuses a connection after an idle longer than both.
"""

from __future__ import annotations

import http.client
import time
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks.services import own_service
from entrypoints.serve import KEEP_ALIVE_S

# Longer than uvicorn's default keep-alive and httpx's keepalive_expiry (both 5 s).
IDLE_S = 6.0


def test_an_idle_connection_outlives_the_clients_keepalive(tmp_path: Path) -> None:
    assert KEEP_ALIVE_S > IDLE_S
    with own_service(tmp_path) as url:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        try:
            conn.request("GET", "/health")
            assert conn.getresponse().read() and conn.sock is not None
            sock = conn.sock
            time.sleep(IDLE_S)
            conn.request("GET", "/health")  # on the same connection: raises if it was closed
            response = conn.getresponse()
            assert response.status == 200 and response.read()
            assert conn.sock is sock  # not silently reconnected
        finally:
            conn.close()
