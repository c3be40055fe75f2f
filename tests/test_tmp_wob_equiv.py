import pytest

from tests.test_equivalence import SEED, play_everywhere, seeded_scripts


@pytest.mark.parametrize("seed_value", [SEED, 101, 202, 303, 404])
async def test_inbox_only(mongo_url: str, seed_value: int) -> None:
    for turn, script in enumerate(seeded_scripts(seed_value)):
        await play_everywhere(mongo_url, script, turn, names=["inbox_buckets"])
