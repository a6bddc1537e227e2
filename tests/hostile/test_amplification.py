"""A small request cannot make a node build a huge answer.

BatchGet of one 1 MiB key 400 times (a 2 KiB request) took a node's RSS from
465 MB to 1,665 MB while it copied the value into its answer 400 times. Now
each distinct key is read once and the answer's size is checked before any
of it is copied: over MAX_RESPONSE_BYTES is RESOURCE_EXHAUSTED, naming the
limit. The same holds for a peer's Read.
"""

from __future__ import annotations

import grpc

from a3redis.core.validation import MAX_PEER_RESPONSE_BYTES, MAX_RESPONSE_BYTES
from a3redis.v1 import kv_pb2 as pb
from a3redis.v1 import replica_pb2 as rpb
from tests.conftest import NodeFactory
from tests.hostile.raw import RawClient
from tests.support.node_http import get_json
from tests.support.processes import NodeProcess

MIB = 1024 * 1024


def rss(node: NodeProcess) -> int:
    value: int = get_json(node, "/api/metrics/summary", timeout=10)["process"]["rss_bytes"]
    return value


def test_a_batch_asking_for_one_large_value_many_times_is_refused_cheaply(
    node_factory: NodeFactory,
) -> None:
    node = node_factory("n1", MAX_VALUE_BYTES=str(MIB)).start()
    with RawClient(node) as client:
        client.call(
            "/a3redis.v1.KeyValue/Put",
            pb.PutRequest(key=b"big", value=bytes(MIB)),
            pb.PutResponse,
        )
        before = rss(node)
        for method, request, response, limit in (
            (
                "/a3redis.v1.KeyValue/BatchGet",
                pb.BatchGetRequest(keys=[b"big"] * 400),
                pb.BatchGetResponse,
                MAX_RESPONSE_BYTES,
            ),
            (
                "/a3redis.v1.Replica/Read",
                rpb.ReadRequest(keys=[b"big"] * 400),
                rpb.ReadResponse,
                MAX_PEER_RESPONSE_BYTES,
            ),
        ):
            try:
                client.call(method, request, response)
                raise AssertionError(f"{method} answered 400 MiB")
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
                assert str(limit) in (error.details() or "")
        # What fits is answered, each copy of a repeated key included.
        fits = MAX_RESPONSE_BYTES // MIB - 1
        answer = client.call(
            "/a3redis.v1.KeyValue/BatchGet",
            pb.BatchGetRequest(keys=[b"big"] * fits),
            pb.BatchGetResponse,
        )
        assert isinstance(answer, pb.BatchGetResponse)
        assert [len(r.value) for r in answer.results] == [MIB] * fits
    assert rss(node) - before < 100 * MIB


def test_scan_pages_end_at_the_response_limit_and_the_scan_still_sees_every_key(
    node_factory: NodeFactory,
) -> None:
    node = node_factory("n1", MAX_VALUE_BYTES=str(MIB)).start()
    keys = [b"scan-%02d" % n for n in range(40)]
    with RawClient(node) as client:
        for key in keys:
            client.call(
                "/a3redis.v1.KeyValue/Put",
                pb.PutRequest(key=key, value=bytes(MIB)),
                pb.PutResponse,
            )
        page = client.call(
            "/a3redis.v1.Replica/LocalScan",
            rpb.LocalScanRequest(limit=40),
            rpb.LocalScanResponse,
        )
        assert isinstance(page, rpb.LocalScanResponse)
        # 40 MiB asked for: the page stops within the peer response limit, and says so.
        assert len(page.records) == MAX_PEER_RESPONSE_BYTES // (MIB + len(keys[0]))
        assert page.more
        entries = client.stream(
            "/a3redis.v1.KeyValue/Scan", pb.ScanRequest(prefix=b"scan-"), pb.Entry
        )
    assert [entry.key for entry in entries] == keys
