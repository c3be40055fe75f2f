"""`timeline serve`'s HTTP protocol and connection bounds: uvicorn's, and the three it lacks.

The protocol is uvicorn's httptools one (llhttp, a C parser) on uvloop: a page over HTTP cost
0.31 ms more in uvicorn's h11 protocol (a pure-Python parser) than the same request's database
work, a fifth of the gap to the driver's page rate (docs/benchmarks.md, "The HTTP path").

uvicorn (0.54) caps concurrent connections (`limit_concurrency`: a request beyond the cap is
answered 503) and closes a keep-alive connection idle after a response (`timeout_keep_alive`),
but it never times out a connection that has not yet sent a whole request: one that connects and
sends nothing, or trickles its header at a byte a second, is kept for ever (50 of them were all
still open after 45 s in the probe of docs/security.md), and each holds a place under the cap.
Nor does it bound a client that stops reading a response: the handler waits on the socket. And
its httptools protocol, unlike its h11 one, takes a request head of any size. So the protocol
here adds:

- a *request timeout*: from a connection's start, and from the first byte of each further
  request, the request head and body must have arrived within `request_timeout_s`, else the
  connection is closed;
- a *write timeout*: a response that cannot be written for `write_timeout_s` (the client's
  receive window stays shut) aborts the connection;
- a *head limit*: a request line and headers over MAX_HEAD_BYTES are answered 400 and the
  connection closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.settings import Settings

# The longest request head (request line and headers) read, as uvicorn's h11 default: far above
# any real request here (a bearer token, a few headers), and what a client may make us buffer.
MAX_HEAD_BYTES = 16 * 1024


class HeadTooLarge(Exception):
    """Raised from a parser callback: llhttp stops and uvicorn answers 400 and closes."""


class BoundedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request timeout, a write timeout and a head limit
    (class attributes: set by `bounded_protocol`)."""

    request_timeout_s: float = 10.0
    write_timeout_s: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_request_timer()  # the first request, from the moment of connecting

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel(self._request_timer)
        self._cancel(self._write_timer)
        self._request_timer = self._write_timer = None
        super().connection_lost(exc)

    # -- the request: its head bounded, its arrival timed --------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        if self._request_timer is None:
            self._arm_request_timer()  # the first byte of a further request

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        super().on_header(name, value)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._cancel(self._request_timer)
        self._request_timer = None

    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD_BYTES:
            raise HeadTooLarge

    def _arm_request_timer(self) -> None:
        self._cancel(self._request_timer)
        self._request_timer = self.loop.call_later(self.request_timeout_s, self._request_late)

    def _request_late(self) -> None:
        self._request_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    # -- the response: a client that stops reading is dropped ----------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.write_timeout_s, self._write_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel(self._write_timer)
        self._write_timer = None

    def _write_stalled(self) -> None:
        self._write_timer = None
        if not self.transport.is_closing():
            self.transport.abort()  # close() would wait to flush what the client will not read

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()


def bounded_protocol(request_timeout_s: float, write_timeout_s: float) -> type[BoundedProtocol]:
    return type(
        "BoundedProtocol",
        (BoundedProtocol,),
        {"request_timeout_s": request_timeout_s, "write_timeout_s": write_timeout_s},
    )


def uvicorn_config(
    app: Any, settings: Settings, *, host: str, port: int, keep_alive_s: int
) -> uvicorn.Config:
    """The uvicorn configuration `timeline serve` runs with (the tests serve the same one)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        timeout_keep_alive=keep_alive_s,
        limit_concurrency=settings.serve_max_connections,
        loop="uvloop",
        http=bounded_protocol(settings.serve_request_timeout_s, settings.serve_write_timeout_s),
        # The client address is the rate limits' to decide (TRUSTED_PROXY_HOPS): uvicorn's proxy
        # headers would otherwise let any loopback client name its own address.
        proxy_headers=False,
    )
