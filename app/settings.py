"""The one settings object. No other module reads the environment."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# A registered strategy's name (app.strategies: the registry is the list, so that adding a
# strategy touches its own package and one registration line); checked when settings are built.
StrategyName = str

# Settings that shape derived data, not just reads: environment variable -> Settings field.
# Their values are recorded with the data and a process configured otherwise is refused
# (app/storage/recorded_settings.py), since data built under one value is wrong under another.
# A setting that joins later is assumed to have shaped existing data with its default.
DERIVED_DATA_SETTINGS: dict[str, str] = {"TIMELINE_MAX": "timeline_max"}


# Chosen from the benchmark (docs/benchmarks.md, "hybrid"): see HYBRID_THRESHOLD in README.
HYBRID_THRESHOLD_DEFAULT = 1000


# inbox_buckets entries carry the status text (up to 5,000 characters: 20,000 UTF-8 bytes at
# worst) beside ~100 bytes of ids, handle and time, so 500 of them stay near 10 MB, clear of
# MongoDB's 16 MB document limit whatever the texts (tests/test_inbox_buckets.py encodes such a
# bucket); a page is at most 100 items, so bigger buckets would buy no fewer reads.
MAX_INBOX_BUCKET_SIZE = 500


# The embedded server's WiredTiger cache, in MiB (EMBEDDED_DB_CACHE_MB). SecantusDB's own default
# is 1 GiB, which this service rarely fills, so the cache grew with every page touched and was the
# largest part of the server's RSS growth in the soak (docs/benchmarks.md, "The database server's
# memory"). A smaller cache keeps that bounded, but not too small: with 32 MiB the server wedged
# for good in the middle of a `benchmarks run` (2026-12-07), every thread waiting in WiredTiger's
# eviction (`__wt_cache_eviction_worker`) under recipients_embedded's `$set` of a 5,000-id
# audience (a multikey index of 5,000 keys) and the oplog prune SecantusDB runs inside that
# write's transaction; uncommitted pages cannot be evicted, so a cache too small for the largest
# transactions and the rest of the working set never drains. 256 MiB is what the whole test
# suite runs with (hundreds of databases on one server, 2,500-friend fan-outs, killed workers;
# the benchmark runs before the 32 had SecantusDB's 1 GiB). The floor, 128: SecantusDB writes an
# insert in chunks of up to 4 MiB, which it says pin 2-3 times that in the cache, and notes that
# an 11 MB write wedged a 128 MiB cache before it chunked; the ceiling only catches a mistaken
# unit (64 GiB).
EMBEDDED_DB_CACHE_MB_DEFAULT = 256
EMBEDDED_DB_CACHE_MB_MIN = 128
EMBEDDED_DB_CACHE_MB_MAX = 65_536


class Settings(BaseSettings):
    """Configuration from environment variables (and an optional `.env`), see README."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    timeline_strategy: StrategyName = "receiver_copies"
    mongodb_url: str | None = None
    timeline_data_dir: Path = Path("./data")
    mongodb_db: str = Field("timeline", min_length=1, max_length=60)
    # The embedded server's WiredTiger cache (MONGODB_URL unset only), in MiB.
    embedded_db_cache_mb: int = Field(
        EMBEDDED_DB_CACHE_MB_DEFAULT, ge=EMBEDDED_DB_CACHE_MB_MIN, le=EMBEDDED_DB_CACHE_MB_MAX
    )
    # How many of the newest reachable statuses a timeline holds.
    timeline_max: int = Field(1000, ge=1, le=100_000)
    # A user who has not read their timeline for this many days gets no fan-out work
    # (app.domain.activity).
    timeline_active_days: int = Field(7, ge=1, le=3650)
    # Entries per inbox_buckets bucket document, 2 (the least that still splits) to
    # MAX_INBOX_BUCKET_SIZE. Not recorded with the data: buckets written under another size are
    # re-cut as they are next written (docs/design.md).
    inbox_bucket_size: int = Field(50, ge=2, le=MAX_INBOX_BUCKET_SIZE)
    # hybrid: authors with more friends than this are merged into pages at read time instead of
    # fanned out (docs/design.md, "hybrid"). Up to MAX_FRIENDS (5,000, app.domain.graph): above it
    # no
    # author would ever be large. Not recorded with the data: pages are exact under any value,
    # and the worker moves an author over at their next friendship change (docs/operations.md).
    hybrid_threshold: int = Field(HYBRID_THRESHOLD_DEFAULT, ge=1, le=5000)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # Rate limits (app.limits.ratelimit): overrides of the named rules' defaults, as
    # "rule=limit/period,..." (e.g. "sign_up=10/1h,posts=600/3h"), or "off" to disable them all.
    rate_limits: str = Field("", max_length=2000)
    # How many proxies in front of the API append to X-Forwarded-For: the client address is the
    # entry that many from the right. 0 (default): trust no header, use the socket peer.
    trusted_proxy_hops: int = Field(0, ge=0, le=10)
    # GET /metrics: a bearer token it requires, and/or the addresses (comma-separated IPs or
    # CIDR blocks) it answers; both empty (default) leave it open (docs/security.md).
    metrics_token: str = Field("", max_length=512)
    metrics_allow: str = Field("", max_length=2000)
    # `timeline serve`'s connection bounds (entrypoints/serve.py, docs/security.md).
    serve_max_connections: int = Field(1000, ge=1, le=100_000)
    serve_request_timeout_s: float = Field(15.0, gt=0, le=300)
    serve_write_timeout_s: float = Field(30.0, gt=0, le=600)

    @field_validator("timeline_strategy")
    @classmethod
    def _timeline_strategy(cls, value: str) -> str:
        from app.strategies import names

        if value not in names():
            raise ValueError(f"unknown strategy {value!r}")
        return value

    @field_validator("rate_limits")
    @classmethod
    def _rate_limits(cls, value: str) -> str:
        from app.limits.ratelimit import parse_rules

        parse_rules(value)  # a ValueError names what is wrong
        return value

    @field_validator("metrics_allow")
    @classmethod
    def _metrics_allow(cls, value: str) -> str:
        for part in filter(None, (p.strip() for p in value.split(","))):
            ipaddress.ip_network(part, strict=False)  # a ValueError names what is wrong
        return value


class ConfigError(Exception):
    """A configuration problem, phrased as one line that names the variable."""


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with explicit overrides (used by tests and the CLI)."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        variable = str(err["loc"][0]).upper() if err["loc"] else "configuration"
        if variable == "TIMELINE_STRATEGY":
            from app.strategies import names

            raise ConfigError(
                f"TIMELINE_STRATEGY: unknown strategy {err.get('input')!r}; "
                f"choose one of {', '.join(names())}"
            ) from None
        raise ConfigError(f"{variable}: {err['msg']} (got {err.get('input')!r})") from None
