"""Clusters of real node processes on loopback, configured the seed's way (PEERS).

Rules: nodes are made by the `node_factory` fixture (so they are always stopped),
numbered 1..count (node ids node-1..node-count), each seeded with the others'
gRPC addresses; a cluster is started when every node is ready and every node
sees every node alive, within a bound.
"""

from __future__ import annotations

from a3redis.client import Client
from a3redis.core.consistency import Consistency
from tests.conftest import NodeFactory
from tests.support.node_http import membership, ready
from tests.support.processes import NodeProcess
from tests.support.waiting import wait_for


def peered_nodes(node_factory: NodeFactory, count: int = 3, /, **env: str) -> list[NodeProcess]:
    """`count` nodes (not started), each seeded with the other nodes' gRPC addresses."""
    nodes = [node_factory(f"n{i}", NODE_NUM=str(i), **env) for i in range(1, count + 1)]
    for node in nodes:
        # The seed's form: the other nodes' gRPC addresses.
        node.extra_env["PEERS"] = ",".join(o.endpoint for o in nodes if o is not node)
    return nodes


def start_peered(nodes: list[NodeProcess], alive_within: float = 10) -> list[NodeProcess]:
    """Start `nodes` one by one, then wait until every one sees every one alive and
    every one coordinates requests (they founded their ring)."""
    for node in nodes:
        node.start()
    wait_all_alive_and_ready(nodes, alive_within)
    return nodes


def wait_all_alive_and_ready(nodes: list[NodeProcess], within: float = 10) -> None:
    """Wait until every node sees every node alive and `normal` (the ring formed, as
    every node knows), and every node coordinates requests."""
    everyone = {f"node-{i}": ("alive", "normal") for i in range(1, len(nodes) + 1)}

    def formed(node: NodeProcess) -> bool:
        return {
            node_id: (entry["status"], entry.get("role"))
            for node_id, entry in membership(node).items()
        } == everyone

    wait_for(
        lambda: all(formed(n) for n in nodes) and all(ready(n) for n in nodes),
        within,
        "all alive, normal and ready",
    )


def start_cluster(
    node_factory: NodeFactory, factor: int, count: int = 3, /, **env: str
) -> list[NodeProcess]:
    """`count` started nodes with REPLICATION_FACTOR=`factor`, all seeing each other alive."""
    return start_peered(peered_nodes(node_factory, count, REPLICATION_FACTOR=str(factor), **env))


async def local_copies(nodes: list[NodeProcess], keys: list[bytes]) -> list[int]:
    """How many nodes hold each key in their own store."""
    counts = [0] * len(keys)
    for node in nodes:
        async with Client.connect(node.endpoint) as client:
            results = await client.batch_get(keys, Consistency.LOCAL)
        for index, result in enumerate(results):
            counts[index] += result.found
    return counts
