"""Malformed and oversized input is refused precisely and never crashes a node (issue #12).

Against a real node process: the replica path (Apply, Read) is held to the
same key and value limits as the client API, a node id in a version must
be a node id, and bytes that are not a protobuf message are answered
INVALID_ARGUMENT "malformed request" with protobuf's reason, never a Python
repr. After each, the node still serves.
"""

from __future__ import annotations

import grpc
import pytest

from a3redis.v1 import kv_pb2 as pb
from a3redis.v1 import replica_pb2 as rpb
from tests.conftest import NodeFactory
from tests.hostile.raw import RawClient, now_ms, pb_record, refused
from tests.support.node_http import counters, rejected_counts
from tests.support.processes import NodeProcess

GARBAGE = b"\xff\xff\xff\xff\x00garbage"
# A string field (ApplyRequest.coordinator) that is not UTF-8: protobuf refuses it too.
BAD_UTF8 = b"\x0a\x02\xff\xfe"


@pytest.fixture
def node(node_factory: NodeFactory) -> NodeProcess:
    return node_factory("single").start()


def assert_alive(node: NodeProcess) -> None:
    assert node.process is not None and node.process.poll() is None
    with RawClient(node) as raw:
        raw.put(b"alive?", b"yes")
        assert raw.get(b"alive?").value == b"yes"


def test_apply_holds_keys_and_values_to_the_limits_record_by_record(node: NodeProcess) -> None:
    now = now_ms()
    with RawClient(node) as raw:
        outcomes = raw.apply(
            [
                pb_record(b"", b"empty key", now, 0, "node-9"),
                pb_record(b"k" * 100_000, b"100 KB key", now, 0, "node-9"),
                pb_record(b"big", b"v" * (20 * 1024 * 1024), now, 0, "node-9"),
                pb_record(b"big-tombstone" + b"k" * 2000, None, now, 0, "node-9"),
                pb_record(b"good", b"v" * (1024 * 1024), now, 0, "node-9"),
            ]
        )
        assert outcomes == [rpb.APPLY_REJECTED] * 4 + [rpb.APPLY_STORED]
        assert not raw.get(b"big", pb.CONSISTENCY_LOCAL).found
        assert raw.get(b"good", pb.CONSISTENCY_LOCAL).found
    assert rejected_counts(node) == {("Apply", "key"): 3.0, ("Apply", "value"): 1.0}
    output = node.output()
    assert "(Apply): key must not be empty" in output
    assert "(Apply): value is 20971520 bytes; the limit is MAX_VALUE_BYTES=1048576" in output
    assert_alive(node)


def test_a_huge_node_id_is_refused_precisely_not_internal(node: NodeProcess) -> None:
    huge = "n" * 70_000
    with RawClient(node) as raw:
        assert raw.apply([pb_record(b"k", b"v", now_ms(), 0, huge)]) == [rpb.APPLY_REJECTED]
        # The coordinator's name is only for log lines: a huge one is not repeated there.
        assert raw.apply([pb_record(b"k", b"v", now_ms(), 0, "node-9")], coordinator=huge) == [
            rpb.APPLY_STORED
        ]
        after = pb.Version(wall_ms=now_ms(), logical=0, node_id=huge)
        code, message = refused(raw.put, b"k", b"v", after=after)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert message == (
            "after.node_id is 70000 characters long; a node id is 1-64 letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
        code, message = refused(raw.put, b"k", b"v", after=pb.Version(wall_ms=1, node_id=""))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith(
            "after.node_id is ''"
        )
    output = node.output()
    assert "(Apply): record.version.node_id is 70000 characters long" in output
    assert huge not in output
    assert rejected_counts(node) == {("Apply", "node_id"): 1.0}
    assert_alive(node)


@pytest.mark.parametrize(
    ("path", "message_type"),
    [
        ("/a3redis.v1.KeyValue/Put", "a3redis.v1.PutRequest"),
        ("/a3redis.v1.KeyValue/Get", "a3redis.v1.GetRequest"),
        ("/a3redis.v1.KeyValue/BatchPut", "a3redis.v1.BatchPutRequest"),
        ("/a3redis.v1.Replica/Apply", "a3redis.v1.ApplyRequest"),
        ("/a3redis.v1.Replica/Read", "a3redis.v1.ReadRequest"),
        ("/a3redis.v1.Replica/Entries", "a3redis.v1.EntriesRequest"),
    ],
)
def test_garbage_bytes_are_invalid_argument_and_the_node_lives(
    node: NodeProcess, path: str, message_type: str
) -> None:
    with RawClient(node) as raw:
        code, message = refused(raw.call, path, GARBAGE, pb.PutResponse)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message == (
        f"malformed request: the bytes sent are not a valid {message_type} message "
        "(Wire format was corrupt)"
    )
    assert_alive(node)


def test_garbage_scans_and_bad_utf8_strings_are_malformed_requests(node: NodeProcess) -> None:
    with RawClient(node) as raw:
        code, message = refused(raw.stream, "/a3redis.v1.KeyValue/Scan", GARBAGE, pb.Entry)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert message.startswith("malformed request: the bytes sent are not a valid ")
        code, message = refused(raw.call, "/a3redis.v1.Replica/Apply", BAD_UTF8, rpb.ApplyResponse)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert message.endswith("(String field had bad UTF-8)")
    # Counted like any other answer, under the method they were sent to.
    requests = counters(node, "a3redis_requests")
    for rpc, service in (("Scan", "KeyValue"), ("Apply", "Replica")):
        labels = frozenset({("service", service), ("rpc", rpc), ("code", "INVALID_ARGUMENT")})
        assert requests[labels] == 1.0
    assert_alive(node)


def test_replica_reads_are_bounded_and_their_keys_checked(node: NodeProcess) -> None:
    with RawClient(node) as raw:
        assert raw.read([]) == []  # what a peer link's keepalive sends
        code, message = refused(raw.read, [b"k"] * 10_001)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert message == "batch has 10001 keys; the limit is 10000 per call"
        code, message = refused(raw.read, [b"a", b"k" * 1025])
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert message == "key 1: key is 1025 bytes; the limit is MAX_KEY_BYTES=1024"
        code, message = refused(raw.apply, [pb_record(b"k", b"v", 1, 0, "node-9")] * 10_001)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert message == "batch has 10001 keys; the limit is 10000 per call"
    assert_alive(node)
