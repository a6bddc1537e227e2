"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.processes import NodeProcess

NodeFactory = Callable[..., NodeProcess]


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[NodeFactory]:
    """Make node processes that are always stopped after the test."""
    started: list[NodeProcess] = []

    def make(name: str = "node", **env: str) -> NodeProcess:
        # One node alone can only meet QUORUM with one replica; cluster tests set their own.
        env.setdefault("REPLICATION_FACTOR", "1")
        node = NodeProcess(tmp_path / f"{name}-data", tmp_path / f"{name}.log", env)
        started.append(node)
        return node

    yield make
    for node in started:
        node.kill()
