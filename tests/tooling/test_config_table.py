"""README's table of environment variables is the one scripts/config_table.py generates from
a3redis.config.SETTINGS, and that script finds and replaces it between its markers."""

from __future__ import annotations

import pytest

from a3redis.config import SETTINGS
from scripts import config_table

README = config_table.README.read_text()


def test_the_readme_table_is_the_generated_one() -> None:
    assert config_table.readme_table(README) == config_table.markdown(), (
        "README.md's table of environment variables differs from a3redis/config.py's "
        "SETTINGS; regenerate it with: python scripts/config_table.py --write"
    )


def test_every_documented_variable_has_a_row() -> None:
    table = config_table.readme_table(README)
    for setting in SETTINGS:
        assert (f"| `{setting.env}`" in table) != setting.internal, setting.env


def test_write_replaces_only_the_table() -> None:
    stale = f"intro\n{config_table.BEGIN}\n| old |\n{config_table.END}\noutro\n"
    written = config_table.with_table(stale)
    assert written == (
        f"intro\n{config_table.BEGIN}\n{config_table.markdown()}{config_table.END}\noutro\n"
    )
    assert config_table.with_table(written) == written


@pytest.mark.parametrize(
    "text",
    [
        "no markers",
        f"{config_table.BEGIN}\nonly the start\n",
        f"{config_table.END}\n{config_table.BEGIN}\n",
        f"{config_table.BEGIN}\n{config_table.BEGIN}\n{config_table.END}",
    ],
)
def test_a_readme_without_one_pair_of_markers_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"README\.md"):
        config_table.readme_table(text)


def test_seed_variables_are_marked() -> None:
    seed = {setting.env for setting in SETTINGS if setting.seed}
    assert seed == {
        "GRPC_PORT",
        "GOSSIP_PORT",
        "NODE_NUM",
        "PEERS",
        "REPLICATION_FACTOR",
        "DATA_DIR",
        "TOTAL_NODES",
        "SYNC_INTERVAL",
        "CHUNK_COUNT",
    }
    assert "| `GRPC_PORT` † |" in config_table.markdown()
