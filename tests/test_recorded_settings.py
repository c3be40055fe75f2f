"""Settings that shape derived data (TIMELINE_MAX) are recorded with it: a process configured
otherwise is refused with one line naming the variable and the fixing command, and that command
(`TIMELINE_MAX=N timeline rebuild`) makes every timeline right under the new value."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from pathlib import Path

import pytest
from bson import ObjectId

from app import maintenance
from app.storage import recorded_settings
from fanout import switch
from tests.harness import Harness, running
from tests.worker_workload import random_workload, reference_timelines, run_cli, worker_env

OLD_MAX = 3
NEW_MAX = 7
USERS = 6
OPERATIONS = 80


async def first_start(h: Harness) -> None:
    """What `timeline serve` / `timeline worker` check before they run."""
    assert await maintenance.ensure_ready(h.ctx.store, h.ctx.strategy.name) is None
    await recorded_settings.ensure_matching(h.ctx.store, h.ctx.settings)


async def wrong_under(h: Harness, name: str, max_items: int) -> list[ObjectId]:
    """Users whose timeline under `max_items`, as stored, differs from the reference model."""
    knob = h.ctx.settings.model_copy(update={"timeline_max": max_items})
    strategy = h.ctx.build_strategy(name, settings=knob)
    reference = await reference_timelines(max_items)
    return [u for u, ids in reference.items() if await strategy.timeline_ids(u) != ids]


@pytest.mark.parametrize("timeline_max", [OLD_MAX])
# TIMELINE_MAX shapes hybrid's materialized side only (large authors are read from `statuses`),
# so nobody may be large here: with USERS people no one has more than USERS - 1 friends. Under
# a threshold of 1, which authors are large depends on the order the worker met friendship
# changes (the hysteresis band keeps them large down to 0 friends), and a run where every
# window was on the large side had no short data to refuse (fresh clone of 082c36e).
@pytest.mark.parametrize("hybrid_threshold", [USERS])
@pytest.mark.parametrize("strategy", ["receiver_copies", "recipients_embedded", "hybrid"])
async def test_changed_timeline_max_is_refused_then_rebuilt(h: Harness, tmp_path: Path) -> None:
    await random_workload(h, random.Random(8), USERS, OPERATIONS, drain_every=10)
    await h.drain()
    await first_start(h)
    config = await maintenance.service_config(h.ctx.store)
    assert config is not None and config["settings"] == {"TIMELINE_MAX": OLD_MAX}
    assert await wrong_under(h, h.ctx.strategy.name, OLD_MAX) == []
    # The data is short under the new value: serving it would be wrong (the point of refusing).
    assert await wrong_under(h, h.ctx.strategy.name, NEW_MAX) != []

    env = {**worker_env(h.ctx.settings), "TIMELINE_MAX": str(NEW_MAX)}
    for command in ("worker", "serve"):
        refused = await asyncio.to_thread(run_cli, env, tmp_path, command)
        assert refused.returncode == 2, (command, refused.stderr)
        assert refused.stderr.count("\n") == 1, refused.stderr
        assert refused.stderr.startswith(
            f"error: TIMELINE_MAX is {NEW_MAX} but this database's derived data was built "
            f"with TIMELINE_MAX={OLD_MAX}"
        ), refused.stderr
        assert f"`TIMELINE_MAX={NEW_MAX} timeline rebuild`" in refused.stderr
    one = await asyncio.to_thread(run_cli, env, tmp_path, "rebuild", "--user", "user0")
    assert one.returncode == 2 and one.stderr.startswith("error: --user: TIMELINE_MAX"), one.stderr

    rebuilt = await asyncio.to_thread(run_cli, env, tmp_path, "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"recorded TIMELINE_MAX={NEW_MAX} (was {OLD_MAX})" in rebuilt.stdout
    assert await wrong_under(h, h.ctx.strategy.name, NEW_MAX) == []
    config = await maintenance.service_config(h.ctx.store)
    assert config is not None and config["settings"] == {"TIMELINE_MAX": NEW_MAX}
    with pytest.raises(recorded_settings.SettingsMismatch, match="TIMELINE_MAX is 3 but"):
        # now the old value is refused
        await recorded_settings.ensure_matching(h.ctx.store, h.ctx.settings)

    # Served under the new value, through the API, and kept right by its worker afterwards.
    new = h.ctx.settings.model_copy(update={"timeline_max": NEW_MAX})
    async with running(new) as hn:
        hn.tokens = h.tokens
        await first_start(hn)
        reference = await reference_timelines(NEW_MAX)
        handles = {
            (await maintenance.user_ids(hn.ctx.store, f"user{i}"))[0][0]: f"user{i}"
            for i in range(USERS)
        }
        for uid, handle in handles.items():
            assert await hn.timeline_ids(handle) == [str(i) for i in reference[uid]], handle
        for i in range(USERS):
            await hn.post(f"user{i}", "under the new TIMELINE_MAX")
        await hn.befriend("user0", "user5")
        await hn.unfriend("user0", "user5")
        await hn.befriend("user0", "user5")
        await hn.drain()
        assert await wrong_under(h, hn.ctx.strategy.name, NEW_MAX) == []


@pytest.mark.parametrize("strategy", ["fanout_on_read"])
async def test_no_derived_data_takes_any_timeline_max(h: Harness) -> None:
    """fanout_on_read stores nothing shaped by TIMELINE_MAX: a new value is just recorded."""
    await random_workload(h, random.Random(2), 3, 10)
    await first_start(h)
    other = h.ctx.settings.model_copy(update={"timeline_max": 5})
    await recorded_settings.ensure_matching(h.ctx.store, other)
    config = await maintenance.service_config(h.ctx.store)
    assert config is not None and config["settings"] == {"TIMELINE_MAX": 5}


@pytest.mark.parametrize("strategy", ["receiver_copies"])
async def test_settings_recorded_later_default_or_configured(h: Harness) -> None:
    """A database from before the record takes the configured values; a setting missing from
    an existing record takes its default (what shaped the data before it was configurable)."""
    await random_workload(h, random.Random(4), 3, 10)
    assert await maintenance.ensure_ready(h.ctx.store, "receiver_copies") is None
    config = await maintenance.service_config(h.ctx.store)
    assert config is not None and "settings" not in config
    # configured: 1000, recorded
    await recorded_settings.ensure_matching(h.ctx.store, h.ctx.settings)
    coll = h.ctx.store.service_config
    await coll.update_one({"_id": maintenance.CONFIG_ID}, {"$set": {"settings": {}}})
    small = h.ctx.settings.model_copy(update={"timeline_max": 10})
    with pytest.raises(recorded_settings.SettingsMismatch, match="TIMELINE_MAX=1000"):
        await recorded_settings.ensure_matching(h.ctx.store, small)
    # Nor is another strategy built under another value.
    with pytest.raises(switch.SwitchError, match=r"^TIMELINE_MAX is 10 but"):
        await switch.switch_to(replace(h.ctx, settings=small), "recipients_embedded")
    config = await maintenance.service_config(h.ctx.store)
    assert config is not None and config["maintained"] == ["receiver_copies"]
