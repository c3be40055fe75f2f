"""`explain` of a page query: the winning plan's stage chain and what it examined.

Works with the classic plan format (mongod's `winningPlan` tree, SecantusDB's too) and with
mongod 7+'s slot-based engine, where the tree is under `winningPlan.queryPlan`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from app.strategies.contract import PageQuery

# A blocking sort: it must read every matching document before returning the first one.
# SORT_MERGE (the merge of ordered index scans) and SORT_KEY_GENERATOR do not block.
BLOCKING_SORT = "SORT"


@dataclass(frozen=True)
class Explained:
    plan: str  # leaf first, e.g. "IXSCAN>FETCH>SORT>PROJECTION_SIMPLE"
    blocking_sort: bool
    keys_examined: int
    docs_examined: int
    returned: int
    # Documents the query's filter selects (counted apart; None: not counted): what a plan with
    # a blocking SORT examines at best, each matching key once, so a bound on any server.
    matching: int | None = None


def stage_chain(stage: Mapping[str, Any]) -> str:
    """The plan tree as a chain from the leaves up; parallel inputs as `n×(child)`."""
    name = str(stage.get("stage", "?"))
    if "inputStage" in stage:
        return f"{stage_chain(stage['inputStage'])}>{name}"
    children = stage.get("inputStages") or []
    if children:
        chains = [stage_chain(c) for c in children]
        inner = chains[0] if len(set(chains)) == 1 else "|".join(chains)
        return f"{len(chains)}×({inner})>{name}"
    return name


def _winning(explain: Mapping[str, Any]) -> Mapping[str, Any]:
    winning: Mapping[str, Any] = explain.get("queryPlanner", {}).get("winningPlan", {})
    inner = winning.get("queryPlan")
    return inner if isinstance(inner, Mapping) else winning


def summarize(explain: Mapping[str, Any]) -> Explained:
    chain = stage_chain(_winning(explain))
    stats = explain.get("executionStats", {})
    return Explained(
        plan=chain,
        blocking_sort=BLOCKING_SORT in chain.replace("(", ">").replace(")", ">").split(">"),
        keys_examined=int(stats.get("totalKeysExamined", 0)),
        docs_examined=int(stats.get("totalDocsExamined", 0)),
        returned=int(stats.get("nReturned", 0)),
    )


async def explain_find(
    db: AsyncDatabase[Any],
    collection: str,
    filter: Mapping[str, Any],
    *,
    sort: Mapping[str, int] | None = None,
    limit: int | None = None,
    projection: Mapping[str, int] | None = None,
) -> Explained:
    find: dict[str, Any] = {"find": collection, "filter": dict(filter)}
    if sort is not None:
        find["sort"] = dict(sort)
    if limit is not None:
        find["limit"] = limit
    if projection is not None:
        find["projection"] = dict(projection)
    result = await db.command("explain", find, verbosity="executionStats")
    return summarize(result)


async def explain_page(db: AsyncDatabase[Any], query: PageQuery) -> Explained:
    return await explain_find(
        db,
        query.collection.name,
        query.filter,
        sort=dict(query.sort),
        limit=query.limit,
        projection=query.projection,
    )
