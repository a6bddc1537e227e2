"""Fixtures for the fault tests: one private network namespace per session, clusters per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.faults import FAST_TIMERS, Agent, FaultCluster, Namespace, fault_session

ClusterFactory = Callable[..., FaultCluster]


@pytest.fixture(scope="session")
def fault_namespace() -> Iterator[tuple[Namespace, Agent, dict[str, str]]]:
    with fault_session() as session:
        yield session


@pytest.fixture
def make_cluster(
    fault_namespace: tuple[Namespace, Agent, dict[str, str]], tmp_path: Path
) -> Iterator[ClusterFactory]:
    """Make a cluster inside the namespace; every process is killed and the cut healed after."""
    namespace, agent, security = fault_namespace
    made: list[FaultCluster] = []

    def make(size: int = 3, fast: bool = True, **env: str) -> FaultCluster:
        assert not made, "one cluster per test: the nodes share addresses and ports"
        settings = {**(FAST_TIMERS if fast else {}), **security, **env}
        cluster = FaultCluster(namespace, agent, tmp_path, size, settings)
        made.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            cluster.close()
        namespace.heal()
