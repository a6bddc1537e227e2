"""Handoff between real node processes: a node that joins gets its partitions, the old
holders give theirs up, and no key is lost or left with extra copies."""

from __future__ import annotations

import trio

from a3redis.client import Client
from a3redis.core.consistency import Consistency
from a3redis.core.ring import Ring
from tests.conftest import NodeFactory
from tests.support.clusters import wait_all_alive_and_ready
from tests.support.node_http import statuses
from tests.support.processes import NodeProcess
from tests.support.waiting import wait_for

LOCAL = Consistency.LOCAL


async def holders(nodes: list[NodeProcess], keys: list[bytes]) -> list[set[str]]:
    """Which nodes hold each key in their own store."""
    found: list[set[str]] = [set() for _ in keys]
    for number, node in enumerate(nodes, start=1):
        async with Client.connect(node.endpoint) as client:
            results = await client.batch_get(keys, LOCAL)
        for index, result in enumerate(results):
            if result.found:
                found[index].add(f"node-{number}")
    return found


async def test_a_joining_node_takes_its_partitions_and_the_old_holders_let_go(
    node_factory: NodeFactory,
) -> None:
    env = {"REPLICATION_FACTOR": "2", "SYNC_INTERVAL": "1", "FAILURE_TIMEOUT": "3"}
    nodes = [node_factory(f"h{i}", NODE_NUM=str(i), **env) for i in (1, 2, 3)]
    nodes[0].extra_env["PEERS"] = nodes[1].endpoint
    nodes[1].extra_env["PEERS"] = nodes[0].endpoint
    nodes[2].extra_env["PEERS"] = f"{nodes[0].endpoint},{nodes[1].endpoint}"
    for node in nodes[:2]:
        node.start()
    wait_all_alive_and_ready(nodes[:2], 5)
    keys = [f"key-{i:04d}".encode() for i in range(600)]
    deleted = keys[::10]
    async with Client.connect(nodes[0].endpoint) as client:
        await client.batch_put([(k, k + b"!") for k in keys], Consistency.ALL)
        for key in deleted:
            await client.delete(key, Consistency.ALL)
    live = [key for key in keys if key not in deleted]
    assert await holders(nodes[:2], live) == [{"node-1", "node-2"}] * len(live)

    nodes[2].start()
    everyone = {"node-1": "alive", "node-2": "alive", "node-3": "alive"}
    wait_for(lambda: all(statuses(n) == everyone for n in nodes), 5, "three up")
    # It joins: it copies its partitions, then owns them (core.transition).
    wait_for(lambda: (nodes[2].health() or {}).get("role") == "normal", 40, "node-3 joined")
    ring = Ring(["node-1", "node-2", "node-3"], 2)
    owners = [set(ring.preference_list(key)) for key in live]
    with trio.fail_after(30):
        while await holders(nodes, live) != owners:
            await trio.sleep(0.5)
    moved = sum("node-3" in o for o in owners)
    assert 270 < moved < 450  # about two thirds of the keys now have node-3 as a replica
    log = "".join(node.output() for node in nodes[:2])
    assert "[handoff] partitions=" in log

    # Every key still reads as written, deletes included, from any coordinator.
    for node in nodes:
        async with Client.connect(node.endpoint) as client:
            results = await client.batch_get(keys, Consistency.ALL)
        assert [r.value for r in results] == [
            None if key in deleted else key + b"!" for key in keys
        ]
