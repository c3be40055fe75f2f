"""The machinery of materialized timelines (timelines.py) and the storage protocol its layouts
implement (layout.py)."""

from app.strategies.materialized.layout import Item, Layout
from app.strategies.materialized.timelines import (
    FANOUT_BATCH,
    REBUILD_PASSES,
    MaterializedTimelines,
    Unsettled,
)

__all__ = ["FANOUT_BATCH", "REBUILD_PASSES", "Item", "Layout", "MaterializedTimelines", "Unsettled"]
