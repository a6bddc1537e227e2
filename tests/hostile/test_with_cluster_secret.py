"""The hostile-input suite's attacks, against a cluster that has a cluster secret (issue #17).

With CLUSTER_SECRET set, everything an outsider sends to the member-only
paths — every Replica method, gossip, operator requests — is refused before
it is parsed (UNAUTHENTICATED, HTTP 401): the poisoned versions, oversized
records and repair requests, garbage bytes and hostile gossip bodies of the
other modules here change nothing and are not even looked at (no
`a3redis_rejected_total` is counted, only `a3redis_peer_auth_refused_total`).
The client paths are not the secret's business: their hostile input is
refused exactly as without it. Afterwards the cluster is intact: every
member sees every member alive, every key holds its value on every replica,
no clock was poisoned, and writes through every node succeed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import trio

from a3redis.client import Client
from a3redis.core.consistency import Consistency
from a3redis.v1 import kv_pb2 as pb
from a3redis.v1 import replica_pb2 as rpb
from tests.cluster.test_cluster_secret import post, refused
from tests.conftest import NodeFactory
from tests.hostile.raw import RawClient, now_ms, pb_record
from tests.hostile.raw import refused as call_refused
from tests.support.clusters import peered_nodes, start_peered
from tests.support.hostile_gossip import HOSTILE
from tests.support.node_http import membership, rejected_counts, statuses
from tests.support.processes import NodeProcess

SECRET = "the-secret-of-the-hostile-suite-0123456789abcdef"
EVERYONE = {"node-1": "alive", "node-2": "alive", "node-3": "alive"}
GARBAGE = b"\xff\xff\xff\xff\x00garbage"
WALL_MAX = 2**64 - 1
LOGICAL_MAX = 2**32 - 1
KEYS = [b"held-%d" % index for index in range(20)]

# Each Replica method with the worst request the other hostile modules send to it.
REPLICA_ATTACKS: list[tuple[str, Callable[[], Any], Any]] = [
    (
        "Apply",
        lambda: rpb.ApplyRequest(
            coordinator="node-9",
            records=[
                pb_record(KEYS[0], b"poison", WALL_MAX, LOGICAL_MAX, "node-9"),
                pb_record(KEYS[1], b"forged", now_ms(), 0, "node-9"),
                pb_record(b"k" * 70_000, b"v", now_ms(), 0, "x" * 70_000),
            ],
        ),
        rpb.ApplyResponse,
    ),
    ("Apply", lambda: GARBAGE, rpb.ApplyResponse),
    ("Read", lambda: rpb.ReadRequest(keys=[b"k"] * 10_001), rpb.ReadResponse),
    ("Read", lambda: GARBAGE, rpb.ReadResponse),
    ("LocalScan", lambda: GARBAGE, rpb.LocalScanResponse),
    ("Tree", lambda: GARBAGE, rpb.TreeResponse),
    ("Chunks", lambda: rpb.ChunksRequest(partitions=list(range(200_000))), rpb.ChunksResponse),
    (
        "Entries",
        lambda: rpb.EntriesRequest(leaves=[rpb.Leaf(partition=0, chunk=0)] * 2_000_000),
        rpb.EntriesResponse,
    ),
    ("Entries", lambda: GARBAGE, rpb.EntriesResponse),
    ("Stream", lambda: GARBAGE, rpb.StreamResponse),
]


def peer_auth_refusals(node: NodeProcess) -> float:
    return sum(refused(node).values())


async def test_hostile_traffic_is_refused_unread_and_the_cluster_stays_intact(
    node_factory: NodeFactory,
) -> None:
    nodes = start_peered(
        peered_nodes(node_factory, REPLICATION_FACTOR="3", CLUSTER_SECRET=SECRET), 15
    )
    endpoints = [node.endpoint for node in nodes]
    async with Client.connect(endpoints) as client:
        for key in KEYS:
            await client.put(key, b"value of " + key, Consistency.ALL)

    # The member-only gRPC paths: UNAUTHENTICATED, however hostile the request.
    target = nodes[0]
    with RawClient(target) as raw:
        for method, request, response in REPLICA_ATTACKS:
            started = time.monotonic()
            code, message = call_refused(
                raw.call, f"/a3redis.v1.Replica/{method}", request(), response
            )
            assert code == grpc.StatusCode.UNAUTHENTICATED, (method, code, message)
            assert time.monotonic() - started < 5, method
    assert refused(target)[("Apply", "missing")] == 2
    assert rejected_counts(target) == {}  # refused before any record was looked at

    # Gossip and operator requests: 401, whatever the body.
    gossip_target = nodes[1]
    before = peer_auth_refusals(gossip_target)
    for body, _ in HOSTILE:
        status, _answer = post(gossip_target, "/gossip", body, {})
        assert status in (401, 413), (status, body[:80])
    for path in ("/api/members/node-3/remove", "/api/members/node-2/decommission"):
        assert post(gossip_target, path, b"", {})[0] == 401
    assert peer_auth_refusals(gossip_target) > before
    assert "node-9" not in membership(gossip_target)

    # The client paths are open to clients: refused as they are without a secret.
    with RawClient(nodes[2]) as raw:
        code, message = call_refused(raw.call, "/a3redis.v1.KeyValue/Put", GARBAGE, pb.PutResponse)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert message.startswith("malformed request: the bytes sent are not a valid ")
        ahead = pb.Version(wall_ms=WALL_MAX, logical=LOGICAL_MAX, node_id="node-9")
        code, _ = call_refused(raw.put, b"victim", b"v", after=ahead)
        assert code == grpc.StatusCode.INVALID_ARGUMENT

    # Intact: membership, every replica's copy, the clocks, and writes through every node.
    for node in nodes:
        assert node.process is not None and node.process.poll() is None
        assert statuses(node) == EVERYONE
    async with Client.connect(endpoints, route_by_key=False) as client:
        for key in KEYS:
            assert (await client.get(key, Consistency.ALL)).value == b"value of " + key
        for number, node in enumerate(nodes, 1):
            async with Client.connect([node.endpoint], route_by_key=False) as one:
                for key in KEYS:
                    assert (await one.get(key, Consistency.LOCAL)).value == b"value of " + key
                with trio.fail_after(10):
                    put = await one.put(b"after-%d" % number, b"yes", Consistency.ALL)
                # No clock was pushed ahead: the node stamps writes with its own time.
                assert abs(put.wall_ms - now_ms()) < 5_000
