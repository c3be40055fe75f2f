"""The one avatar every account has (Mastodon's path for an account without one): a plain
48×48 grey PNG, built here from a few bytes rather than kept as a binary file."""

from __future__ import annotations

import struct
import zlib

from starlette.requests import Request
from starlette.responses import Response

AVATAR_PATH = "/avatars/original/missing.png"
SIZE = 48
GREY = 0x8B
# Immutable: a client may cache it for a day.
CACHE_SECONDS = 24 * 3600


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def _png() -> bytes:
    header = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 0, 0, 0, 0)  # 8-bit greyscale
    rows = b"".join(b"\x00" + bytes([GREY]) * SIZE for _ in range(SIZE))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


MISSING_AVATAR = _png()


async def missing_avatar(request: Request) -> Response:
    return Response(
        MISSING_AVATAR,
        media_type="image/png",
        headers={
            "Cache-Control": f"public, max-age={CACHE_SECONDS}",
            "X-Content-Type-Options": "nosniff",
        },
    )
