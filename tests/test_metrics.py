"""GET /metrics: Prometheus text format; requests by route template (bounded labels) and status,
latency histograms, pending events refreshed at scrape, events applied, fan-out batch sizes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import harness
from tests.harness import Harness

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
async def hh(mongo_url: str) -> AsyncIterator[Harness]:
    # Fan-out batch sizes are recorded by receiver_copies, the strategy that writes copies.
    async with harness.running(harness.test_settings(mongo_url, "receiver_copies")) as h:
        yield h


async def scrape(h: Harness) -> Samples:
    r = await h.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_requests_are_counted_by_route_template_and_status(hh: Harness) -> None:
    h = hh
    await h.user("alice")
    ids = [(await h.post("alice", f"s{i}"))["id"] for i in range(3)]
    before = await scrape(h)
    for sid in ids:
        assert (await h.client.get(f"/statuses/{sid}", headers=h.auth("alice"))).status_code == 200
    await h.client.get("/statuses/0123456789abcdef01234567", headers=h.auth("alice"))
    await h.client.get("/timeline")  # 401
    for i in range(5):
        await h.client.get(f"/no/such/path/{i}")
    after = await scrape(h)
    route = {"method": "GET", "route": "/statuses/{id}"}
    assert delta(after, before, "timeline_http_requests_total", **route, status="200") == 3
    assert delta(after, before, "timeline_http_requests_total", **route, status="404") == 1
    assert (
        delta(
            after,
            before,
            "timeline_http_requests_total",
            method="GET",
            route="/timeline",
            status="401",
        )
        == 1
    )
    assert (
        delta(
            after,
            before,
            "timeline_http_requests_total",
            method="GET",
            route="unmatched",
            status="404",
        )
        == 5
    )
    # The latency histogram has the same labels; every request lands in the +Inf bucket.
    assert (
        delta(
            after,
            before,
            "timeline_http_request_duration_seconds_bucket",
            **route,
            status="200",
            le="+Inf",
        )
        == 3
    )
    assert (
        delta(after, before, "timeline_http_request_duration_seconds_count", **route, status="200")
        == 3
    )
    # Bounded cardinality: no raw id or raw path ever becomes a label value.
    hexid = re.compile(r"[0-9a-f]{24}")
    for _, labels in after:
        for _, label_value in labels:
            assert not hexid.search(label_value)
            assert "/no/such" not in label_value


async def test_pending_events_applied_events_and_batches(hh: Harness) -> None:
    h = hh
    for name in ("alice", "bob", "carol"):
        await h.user(name)
    await h.befriend("alice", "bob")
    await h.befriend("alice", "carol")
    await h.drain()
    await h.post("alice", "to my two friends")
    await h.post("bob", "to alice")
    before = await scrape(h)
    assert value(before, "timeline_pending_events") == 2  # refreshed at this scrape
    # How stale a timeline may be: the oldest waiting event's age (/health's
    # oldest_pending_age_s), so an alert can say "lagging" before anyone complains.
    assert value(before, "timeline_oldest_pending_event_age_seconds") > 0
    assert value(before, "timeline_dead_events") == 0
    await h.drain()
    after = await scrape(h)
    assert value(after, "timeline_pending_events") == 0
    assert value(after, "timeline_oldest_pending_event_age_seconds") == 0
    assert delta(after, before, "timeline_events_applied_total", kind="status_posted") == 2
    # alice's status went to two friends, bob's to one: at least one bulk write each.
    assert delta(after, before, "timeline_fanout_batch_size_count") >= 2
    assert delta(after, before, "timeline_fanout_batch_size_sum") >= 3


async def test_scrapes_are_counted_and_kept_out_of_the_api_document(hh: Harness) -> None:
    """A scrape is itself counted, and /metrics stays out of the public API document."""
    h = hh
    before = await scrape(h)
    after = await scrape(h)
    assert (
        delta(
            after,
            before,
            "timeline_http_requests_total",
            method="GET",
            route="/metrics",
            status="200",
        )
        == 1
    )
    paths = (await h.client.get("/openapi.json")).json()["paths"]
    assert "/metrics" not in paths
