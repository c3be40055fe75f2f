"""Which strategies a worker keeps up to date: its own, plus those `service_config.maintained`
names while a switch builds or keeps another one (fanout.switch)."""

from __future__ import annotations

import logging
import time

from app.context import AppContext
from app.maintenance import CONFIG_ID
from app.strategies import TimelineStrategy, names

log = logging.getLogger("timeline.worker")


class Maintained:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._config_read_at: float | None = None
        # Other strategies whose derived data is being built or kept (during a switch).
        self._also: dict[str, TimelineStrategy] = {}

    async def strategies(self, refresh_s: float) -> list[TimelineStrategy]:
        """The configured strategy plus any other that `service_config` says to maintain, as
        read at most `refresh_s` ago."""
        now = time.monotonic()
        if self._config_read_at is None or now - self._config_read_at >= refresh_s:
            doc = await self.ctx.store.service_config.find_one(
                {"_id": CONFIG_ID}, {"maintained": 1}
            )
            own = self.ctx.strategy.name
            known = names()
            wanted = [n for n in (doc or {}).get("maintained", []) if n != own and n in known]
            also = {}
            for name in wanted:
                if name not in self._also:
                    log.info("also maintaining %s's derived data", name)
                    strategy = self.ctx.build_strategy(name)
                    await strategy.ensure_indexes()
                    also[name] = strategy
                else:
                    also[name] = self._also[name]
            self._also = also
            self._config_read_at = now
        return [self.ctx.strategy, *self._also.values()]
