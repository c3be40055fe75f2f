"""A strategy added the way docs/design.md says (tests/toy_strategy.py: a layout, a few lines
of strategy, one registration) joins the behaviour suite and the model tests with nothing else
changed: the suite's test functions are collected again here with `strategy` fixed to it, and
the pinned-seed model scripts are played through it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app import strategies
from tests import toy_strategy
from tests.test_api_friends import *  # noqa: F403  (the behaviour suite, collected again)
from tests.test_api_statuses import *  # noqa: F403
from tests.test_api_timeline import *  # noqa: F403
from tests.test_equivalence import SEED, play_everywhere, seeded_scripts


@pytest.fixture(autouse=True, scope="module")
def registered() -> Iterator[None]:
    toy_strategy.register_toy()
    yield
    strategies.unregister(toy_strategy.NAME)


@pytest.fixture
def strategy() -> str:
    """Every test of the suite above, here with the toy strategy only."""
    return toy_strategy.NAME


def test_the_toy_is_a_registered_strategy() -> None:
    assert toy_strategy.NAME in strategies.names()
    assert toy_strategy.NAME not in strategies.STRATEGY_NAMES  # the shipped ones are unchanged


async def test_the_toy_matches_the_model(mongo_url: str) -> None:
    """The pinned seed's rounds, read after every step with the worker stopped, slow or
    failing (tests/test_equivalence.py), through the toy."""
    for turn, script in enumerate(seeded_scripts(SEED)):
        await play_everywhere(mongo_url, script, turn, names=[toy_strategy.NAME])
