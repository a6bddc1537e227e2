"""Quorum reads and writes between nodes as replica frames, and with a node that has none.

A node with REPLICA_FRAMES=0 stands for a node of an older version: it serves
only gRPC on its port and sends only gRPC. The others offer it frames, fall
back to gRPC when it does not answer the preface, and the cluster serves as
one: every write through every node lands on every replica.
"""

from __future__ import annotations

from a3redis.client import Client
from a3redis.core.consistency import Consistency
from tests.conftest import NodeFactory
from tests.support.clusters import local_copies, peered_nodes, start_peered
from tests.support.node_http import metric


async def test_nodes_speak_frames_and_fall_back_to_grpc_for_a_node_without_them(
    node_factory: NodeFactory,
) -> None:
    nodes = peered_nodes(node_factory, REPLICATION_FACTOR="3")
    nodes[2].extra_env["REPLICA_FRAMES"] = "0"
    start_peered(nodes, 15)
    keys = [f"frames-{i}".encode() for i in range(60)]
    for index, key in enumerate(keys):
        writer, reader = nodes[index % 3], nodes[(index + 1) % 3]
        async with Client.connect(writer.endpoint) as client:
            await client.put(key, b"v-" + key, Consistency.ALL)
        async with Client.connect(reader.endpoint) as client:
            assert (await client.get(key, Consistency.QUORUM)).value == b"v-" + key
    assert await local_copies(nodes, keys) == [3] * len(keys)
    # node-1 and node-2 called each other with frames; nobody called node-3 with them.
    assert metric(nodes[0], "a3redis_grpc_frame_connections_total") >= 1
    assert metric(nodes[1], "a3redis_grpc_frame_connections_total") >= 1
    assert metric(nodes[2], "a3redis_grpc_frame_connections_total") == 0
    # node-3's Replica calls were all served over gRPC, and served.
    assert metric(nodes[2], "a3redis_requests_total", code="OK", rpc="Apply", service="Replica")
    assert metric(nodes[0], "a3redis_replica_write_failures_total") == 0
    assert metric(nodes[1], "a3redis_replica_write_failures_total") == 0
