"""Password hashes (app/domain/passwords.py): scrypt with a salt per password and its parameters in
the
stored string; verification refuses anything else without raising."""

from __future__ import annotations

from app.domain import passwords


async def test_a_hash_verifies_its_password_only() -> None:
    stored = await passwords.hash_password("correct horse")
    scheme, n, r, p, salt, key = stored.split("$")
    assert (scheme, int(n), int(r), int(p)) == (
        "scrypt",
        passwords.SCRYPT_N,
        passwords.SCRYPT_R,
        passwords.SCRYPT_P,
    )
    assert len(passwords._unb64(salt)) == passwords.SALT_BYTES
    assert len(passwords._unb64(key)) == passwords.KEY_BYTES
    assert "correct horse" not in stored
    assert await passwords.verify_password("correct horse", stored)
    assert not await passwords.verify_password("correct horse ", stored)
    assert not await passwords.verify_password("", stored)
    # A salt per password: the same password never hashes the same twice.
    assert await passwords.hash_password("correct horse") != stored


def test_parameters_are_read_from_the_stored_string() -> None:
    # Hashed with cheaper parameters than today's: still verified with its own.
    weak = passwords._derive("pw", b"s" * 16, 2**4, 1, 1)
    stored = f"scrypt$16$1$1${passwords._b64(b's' * 16)}${passwords._b64(weak)}"
    assert passwords.verify_password_sync("pw", stored)
    assert not passwords.verify_password_sync("px", stored)


async def test_malformed_or_missing_hashes_never_verify() -> None:
    for stored in ("", "scrypt$x", "bcrypt$1$2$3$4$5", "scrypt$16$1$1$!!$!!", "scrypt$3$1$1$AA$AA"):
        assert not passwords.verify_password_sync("pw", stored), stored
    # An account without a password (made by POST /users): no match, after the same work.
    assert not await passwords.verify_password("pw", None)
