"""Clock skew between coordinators must not lose sequential overwrites (the HLC orders them)."""

from __future__ import annotations

import pytest

from a3redis.client import Client, ClientError
from a3redis.core.consistency import Consistency
from a3redis.core.hlc import Version
from tests.conftest import NodeFactory
from tests.support.clusters import peered_nodes, wait_all_alive_and_ready

QUORUM = Consistency.QUORUM


async def test_sequential_overwrites_through_skewed_coordinators_are_never_lost(
    node_factory: NodeFactory,
) -> None:
    nodes = peered_nodes(node_factory, REPLICATION_FACTOR="3")
    nodes[0].extra_env["A3REDIS_CLOCK_OFFSET_MS"] = "30000"
    nodes[1].extra_env["A3REDIS_CLOCK_OFFSET_MS"] = "-5000"
    for node in nodes:
        node.start()
    wait_all_alive_and_ready(nodes)

    keys = [f"skew-{i}".encode() for i in range(10)]
    # One client per coordinator, not routed by key: every write goes where we say.
    # The clients share what they saw, as one application's requests would: each
    # write carries the newest version seen, and the coordinator's HLC moves past it.
    clients = [Client.connect(node.endpoint, route_by_key=False) for node in nodes]
    async with clients[0] as fast, clients[1] as slow, clients[2] as right:
        coordinators = [fast, slow, right]
        last: dict[bytes, Version] = {}
        for round_number in range(12):
            writer = coordinators[round_number % 3]
            writer.seen = max((c.seen for c in coordinators if c.seen), default=None)
            for key in keys:
                version = await writer.put(key, f"{round_number}".encode(), QUORUM)
                assert key not in last or version > last[key], (round_number, version, last[key])
                last[key] = version
        for key in keys:
            for reader in coordinators:
                result = await reader.get(key, QUORUM)
                assert result.value == b"11", (key, result)


async def test_a_write_that_loses_last_write_wins_is_reported_not_acknowledged(
    node_factory: NodeFactory,
) -> None:
    nodes = peered_nodes(node_factory, REPLICATION_FACTOR="3")
    nodes[0].extra_env["A3REDIS_CLOCK_OFFSET_MS"] = "30000"
    for node in nodes:
        node.start()
    wait_all_alive_and_ready(nodes)
    async with Client.connect(nodes[0].endpoint) as ahead:
        future = await ahead.put(b"k", b"from-the-future", Consistency.LOCAL)
    # A client that has seen nothing writes through a node whose clock is 30 s behind
    # node-1's: node-1 holds a newer version, so ALL cannot be met by this write.
    async with Client.connect(nodes[1].endpoint, route_by_key=False) as fresh:
        with pytest.raises(ClientError) as lost:
            await fresh.put(b"k", b"from-now", Consistency.ALL)
        assert lost.value.code == "ABORTED"
        assert "lost last-write-wins" in lost.value.message
        assert (await fresh.get(b"k", Consistency.ALL)).version == future
