"""`timeline serve`'s connection bounds (entrypoints/connections.py), with real slow clients over
sockets against the app served by uvicorn with the configuration `timeline serve` uses (short
timeouts, so that the test takes seconds)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from app.api import create_app
from app.storage.embedded import free_port
from entrypoints.connections import MAX_HEAD_BYTES, uvicorn_config
from entrypoints.serve import KEEP_ALIVE_S
from tests import harness

REQUEST_TIMEOUT_S = 1.0
WRITE_TIMEOUT_S = 1.0
# The probe's figure: 50 clients trickling headers at a byte a second held the server.
SLOW_CLIENTS = 50
# A connection the server dropped is seen as closed within this long after its timeout.
SLACK_S = 2.0
# Requests a client that reads nothing sends at once: 32 pages of 500 KB.
PIPELINED = 32


@dataclass
class Served:
    port: int

    def connect(self, rcvbuf: int | None = None) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect(("127.0.0.1", self.port))
        return sock

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)


@pytest.fixture(scope="module")
def served(mongo_url: str) -> Iterator[Served]:
    settings = harness.test_settings(
        mongo_url,
        "receiver_copies",
        serve_request_timeout_s=REQUEST_TIMEOUT_S,
        serve_write_timeout_s=WRITE_TIMEOUT_S,
    )
    port = free_port()
    config = uvicorn_config(
        create_app(settings), settings, host="127.0.0.1", port=port, keep_alive_s=KEEP_ALIVE_S
    )
    config.log_level = "warning"
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="connections-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield Served(port)
    finally:
        server.should_exit = True
        thread.join(30)


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server closed `sock` (end of file or reset), without blocking."""
    sock.setblocking(False)
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)


def test_clients_trickling_headers_are_dropped_and_others_served(served: Served) -> None:
    slow = [served.connect() for _ in range(SLOW_CLIENTS)]
    head = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 200
    started = time.monotonic()
    try:
        with served.client() as client:
            sent = 0
            while time.monotonic() - started < REQUEST_TIMEOUT_S + SLACK_S and sent < len(head):
                for sock in slow:
                    try:
                        sock.send(head[sent : sent + 1])
                    except OSError:
                        pass  # already dropped
                sent += 1
                # Everyone else is served meanwhile.
                assert client.get("/health").status_code == 200
                time.sleep(0.05)
            dropped = sum(closed_by_peer(s) for s in slow)
        assert dropped == SLOW_CLIENTS, f"{SLOW_CLIENTS - dropped} slow clients still open"
    finally:
        for sock in slow:
            sock.close()


def test_a_connection_that_sends_nothing_is_closed(served: Served) -> None:
    sock = served.connect()
    try:
        time.sleep(REQUEST_TIMEOUT_S + 0.5)
        deadline = time.monotonic() + SLACK_S
        while not closed_by_peer(sock):
            assert time.monotonic() < deadline, "an idle new connection is still open"
            time.sleep(0.1)
    finally:
        sock.close()


def test_a_request_head_over_the_limit_is_refused_and_closed(served: Served) -> None:
    """httptools takes a head of any size (h11 had a limit): the protocol counts it."""
    sock = served.connect()
    try:
        big = b"x" * (MAX_HEAD_BYTES + 1)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: " + big + b"\r\n\r\n")
        sock.settimeout(SLACK_S)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 400"), reply[:80]
    finally:
        sock.close()
    with served.client() as client:  # a head within the limit is served
        r = client.get("/health", headers={"X-Big": "x" * (MAX_HEAD_BYTES // 2)})
        assert r.status_code == 200


def test_a_client_that_stops_reading_is_cut_off(served: Served) -> None:
    with served.client() as client:
        token = client.post("/users", json={"handle": "reader"}).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        for i in range(25):  # a 500 KB page: 25 statuses of 5,000 four-byte characters
            r = client.post("/statuses", json={"text": "😀" * 4999 + str(i % 10)}, headers=auth)
            assert r.status_code == 201, r.text
        whole = len(client.get("/timeline?limit=100", headers=auth).content)
    sock = served.connect(rcvbuf=4096)
    try:
        # Pipelined, so that more is owed than the kernel's socket buffers hold (up to 4 MB).
        request = (
            b"GET /timeline?limit=100 HTTP/1.1\r\nHost: localhost\r\n"
            + f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        sock.sendall(request * PIPELINED)
        time.sleep(WRITE_TIMEOUT_S + SLACK_S)  # reads nothing meanwhile
        got = 0
        sock.settimeout(5)
        try:
            while chunk := sock.recv(65536):
                got += len(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        assert got < whole * PIPELINED, "the responses waited for a client that did not read"
    finally:
        sock.close()
