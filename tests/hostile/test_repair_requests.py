"""Repair requests are bounded by the ring they describe: an oversized one is refused at once.

`Chunks` with 200,000 partitions stalled a node's event loop for 0.9 s; the
same holds for `Tree` indexes and `Entries` leaves. A request may name at
most what exists (the ring's partitions, a level's nodes, the leaves).
"""

from __future__ import annotations

import time

import grpc

from a3redis.v1 import replica_pb2 as rpb
from tests.conftest import NodeFactory
from tests.hostile.raw import RawClient


def refused(client: RawClient, method: str, request: object, response: type) -> grpc.RpcError:
    started = time.monotonic()
    try:
        client.call(f"/a3redis.v1.Replica/{method}", request, response)
    except grpc.RpcError as error:
        assert time.monotonic() - started < 5
        return error
    raise AssertionError(f"{method} accepted an oversized request")


def test_oversized_repair_requests_are_refused_naming_the_bound(
    node_factory: NodeFactory,
) -> None:
    node = node_factory("n1").start()
    client = RawClient(node)
    # A small one is answered (and makes the node build its Merkle index).
    client.call("/a3redis.v1.Replica/Chunks", rpb.ChunksRequest(partitions=[0]), rpb.ChunksResponse)
    error = refused(
        client,
        "Chunks",
        rpb.ChunksRequest(partitions=list(range(200_000))),
        rpb.ChunksResponse,
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "200000 partitions" in (error.details() or "")
    leaves = [rpb.Leaf(partition=0, chunk=0)] * 2_000_000
    error = refused(client, "Entries", rpb.EntriesRequest(leaves=leaves), rpb.EntriesResponse)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "2000000 leaves" in (error.details() or "")
    assert node.health() is not None
    client.close()
