"""Keys that expire, between real node processes: the expiry replicates and repairs."""

from __future__ import annotations

import time

import trio

from a3redis.client import Client
from a3redis.core.consistency import Consistency
from tests.conftest import NodeFactory
from tests.support.clusters import start_cluster

LOCAL, ALL = Consistency.LOCAL, Consistency.ALL


async def local_expiries(endpoints: list[str], key: bytes) -> list[tuple[bool, int]]:
    """Each node's own copy of `key`: (found, expires_at_ms)."""
    found = []
    for endpoint in endpoints:
        async with Client.connect(endpoint) as client:
            result = await client.get(key, LOCAL)
            found.append((result.found, result.expires_at_ms))
    return found


async def test_a_ttl_reaches_every_replica_and_the_key_expires_on_each(
    node_factory: NodeFactory,
) -> None:
    nodes = start_cluster(node_factory, 3, SYNC_INTERVAL="3600")
    endpoints = [node.endpoint for node in nodes]
    async with Client.connect(endpoints[0]) as client:
        version = await client.put(b"session", b"s", ALL, ttl=1.0)
        await client.put(b"forever", b"f", ALL)
    expires = version.wall_ms + 1000
    assert await local_expiries(endpoints, b"session") == [(True, expires)] * 3
    assert await local_expiries(endpoints, b"forever") == [(True, 0)] * 3
    await trio.sleep(max(0.0, expires / 1000 - time.time()) + 0.2)
    assert [f for f, _ in await local_expiries(endpoints, b"session")] == [False] * 3
    async with Client.connect(endpoints[1]) as client:
        assert not (await client.get(b"session")).found  # QUORUM, read repair and all
        assert (await client.get(b"forever")).found


async def test_repair_carries_a_ttl_change_to_the_replicas_that_missed_it(
    node_factory: NodeFactory,
) -> None:
    nodes = start_cluster(node_factory, 3, SYNC_INTERVAL="3600", HINT_WINDOW="0")
    endpoints = [node.endpoint for node in nodes]
    async with Client.connect(endpoints[0]) as client:
        await client.batch_put([(b"k%d" % i, b"v") for i in range(200)], ALL)
        # Only node-1's copy changes: an EXPIRE, then a PERSIST, at LOCAL.
        assert await client.expire(b"k7", 600, consistency=LOCAL)
        assert await client.expire(b"k8", 600, consistency=LOCAL)
        assert await client.persist(b"k8", consistency=LOCAL)
    changed = await local_expiries(endpoints, b"k7")
    assert changed[0][1] > 0 and changed[1:] == [(True, 0)] * 2
    async with Client.connect(endpoints[0]) as client:
        reports = await client.repair(wait=True)
    assert sum(r["keys_pushed"] for r in reports) == 4  # k7 and k8, to each of two peers
    assert await local_expiries(endpoints, b"k7") == [changed[0]] * 3
    assert await local_expiries(endpoints, b"k8") == [(True, 0)] * 3
    async with Client.connect(endpoints[2]) as client:
        again = await client.repair(wait=True)
    assert all(r["leaves"] == 0 for r in again)  # the replicas agree, expiries included
