"""Settings that shape derived data, recorded with it (`service_config.settings`).

A receiver_copies timeline holds the newest TIMELINE_MAX entries and recipients_embedded
backfills the newest TIMELINE_MAX statuses of an author: data built under one value is short or
long under another, and nothing at read time can tell. So the values the data was built with are
stored beside it, a process configured differently is refused at start-up, and `timeline
rebuild` rebuilds every strategy's data under the new values and then records them.
"""

from __future__ import annotations

from typing import Any, cast

from app import maintenance
from app.settings import DERIVED_DATA_SETTINGS, Settings, StrategyName
from app.storage.models import utcnow
from app.storage.store import Store


class SettingsMismatch(Exception):
    """One line: the variable, both values, and the command that fixes it."""


def current(settings: Settings) -> dict[str, Any]:
    """The values of DERIVED_DATA_SETTINGS in `settings`, keyed by environment variable."""
    return {var: getattr(settings, name) for var, name in DERIVED_DATA_SETTINGS.items()}


def defaults() -> dict[str, Any]:
    """What data built before a setting joined the table was shaped by: its default."""
    fields = Settings.model_fields
    return {var: fields[name].default for var, name in DERIVED_DATA_SETTINGS.items()}


def derived_strategies(config: dict[str, Any]) -> list[StrategyName]:
    """Strategies whose derived data this database holds or is building (a switch)."""
    names = {*config.get("built", []), *config.get("maintained", [])}
    return cast(list[StrategyName], sorted(names - set(maintenance.always_built())))


async def _set(store: Store, values: dict[str, Any]) -> None:
    fields = {f"settings.{var}": value for var, value in values.items()}
    await store.service_config.update_one(
        {"_id": maintenance.CONFIG_ID}, {"$set": {**fields, "updated_at": utcnow()}}
    )


async def mismatches(store: Store, settings: Settings) -> dict[str, tuple[Any, Any]]:
    """{variable: (recorded, configured)} for every setting whose derived data disagrees.

    Records what is missing first: a database from before this record gets the configured
    values (the data is assumed built under them, as it was served with them), a setting
    that joined the table later gets its default. A database without derived data (only
    fanout_on_read) takes the configured values: nothing was shaped by the old ones."""
    config = await maintenance.service_config(store)
    if config is None:
        return {}  # nothing recorded yet: the first `ensure_ready` creates the document
    wanted = current(settings)
    recorded = config.get("settings")
    if recorded is None:
        await _set(store, wanted)
        return {}
    missing = {var: value for var, value in defaults().items() if var not in recorded}
    if missing:
        await _set(store, missing)
        recorded = {**recorded, **missing}
    differ = {
        var: (recorded[var], value) for var, value in wanted.items() if recorded[var] != value
    }
    if differ and not derived_strategies(config):
        await _set(store, wanted)
        return {}
    return differ


def fix_hint(var: str, recorded: Any, configured: Any) -> str:
    return (
        f"{var} is {configured} but this database's derived data was built with {var}="
        f"{recorded}; stop every API and worker, run `{var}={configured} timeline rebuild`, "
        f"then restart them (or set {var}={recorded})"
    )


async def ensure_matching(store: Store, settings: Settings) -> None:
    """Refuse to run on derived data shaped by other values of DERIVED_DATA_SETTINGS."""
    for var, (recorded, configured) in (await mismatches(store, settings)).items():
        raise SettingsMismatch(fix_hint(var, recorded, configured))


async def record(store: Store, settings: Settings) -> None:
    """After every strategy's derived data was rebuilt under `settings`."""
    await _set(store, current(settings))
