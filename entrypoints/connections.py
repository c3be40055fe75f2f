"""`timeline serve`'s connection bounds: uvicorn's, and the two it lacks.

uvicorn (0.54) caps concurrent connections (`limit_concurrency`: a request beyond the cap is
answered 503) and closes a keep-alive connection idle after a response (`timeout_keep_alive`),
but it never times out a connection that has not yet sent a whole request: one that connects and
sends nothing, or trickles its header at a byte a second, is kept for ever (50 of them were all
still open after 45 s in the probe of docs/security.md), and each holds a place under the cap.
Nor does it bound a client that stops reading a response: the handler waits on the socket. So
the h11 protocol here adds:

- a *request timeout*: from a connection's start, and from the first byte of each further
  request, the request head and body must have arrived within `request_timeout_s`, else the
  connection is closed;
- a *write timeout*: a response that cannot be written for `write_timeout_s` (the client's
  receive window stays shut) aborts the connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.settings import Settings

# h11's limit on a request head (request line and headers), as uvicorn's default: far above
# any real request here (a bearer token, a few headers), and what a client may make us buffer.
MAX_HEAD_BYTES = 16 * 1024
# States in which the peer has not yet sent its whole request.
_RECEIVING = (h11.IDLE, h11.SEND_BODY)


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request timeout and a write timeout (class attributes: set
    by `bounded_protocol`)."""

    request_timeout_s: float = 10.0
    write_timeout_s: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_request_timer()  # the first request, from the moment of connecting

    def data_received(self, data: bytes) -> None:
        if self._request_timer is None and self.conn.their_state is h11.IDLE:
            self._arm_request_timer()  # the first byte of a further request
        super().data_received(data)
        if self.conn.their_state not in _RECEIVING:
            self._cancel(self._request_timer)
            self._request_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel(self._request_timer)
        self._cancel(self._write_timer)
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.write_timeout_s, self._write_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel(self._write_timer)
        self._write_timer = None

    def _arm_request_timer(self) -> None:
        self._cancel(self._request_timer)
        self._request_timer = self.loop.call_later(self.request_timeout_s, self._request_late)

    def _request_late(self) -> None:
        self._request_timer = None
        if self.conn.their_state in _RECEIVING and not self.transport.is_closing():
            self.transport.close()

    def _write_stalled(self) -> None:
        self._write_timer = None
        if not self.transport.is_closing():
            self.transport.abort()  # close() would wait to flush what the client will not read

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()


def bounded_protocol(request_timeout_s: float, write_timeout_s: float) -> type[H11Protocol]:
    return type(
        "BoundedH11Protocol",
        (BoundedH11Protocol,),
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
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        http=bounded_protocol(settings.serve_request_timeout_s, settings.serve_write_timeout_s),
        # The client address is the rate limits' to decide (TRUSTED_PROXY_HOPS): uvicorn's proxy
        # headers would otherwise let any loopback client name its own address.
        proxy_headers=False,
    )
