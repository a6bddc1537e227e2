"""Replica frames on a node's gRPC port, sent by anyone (a3redis.core.replica_frames).

Each test runs a real node process and speaks frames to it over a raw socket
on loopback: well-formed calls are answered as their gRPC calls are, a
malformed body is INVALID_ARGUMENT, broken frames close their connection,
frames that would hold more than the inbound budget close theirs, and with
a cluster secret an unsigned or forged call is refused. The node serves
afterwards every time.
"""

from __future__ import annotations

import socket
import struct
from contextlib import ExitStack

from a3redis.api import wire
from a3redis.core.hlc import Version
from a3redis.core.record import Record
from a3redis.core.replica_frames import (
    ANSWER,
    APPLY,
    FAILURE,
    MAX_FRAME_BYTES,
    PREFACE,
    READ,
    Frame,
    FrameReader,
    parse_failure,
    request,
)
from a3redis.core.validation import Limits
from a3redis.net.grpc_server import INBOUND_BUFFER_LIMIT
from a3redis.v1 import replica_pb2 as rpb
from tests.conftest import NodeFactory
from tests.hostile.raw import now_ms, pb_record
from tests.hostile.test_transport import closed_by_peer, get, put
from tests.support.node_http import metric
from tests.support.processes import HOST, NodeProcess

ALONE = {"REPLICATION_FACTOR": "1"}


def frames_socket(node: NodeProcess) -> socket.socket:
    """A connection to the node's gRPC port that has exchanged the frames preface."""
    sock = socket.create_connection((HOST, node.grpc_port), timeout=10)
    sock.sendall(PREFACE)
    received = b""
    while len(received) < len(PREFACE):
        chunk = sock.recv(len(PREFACE) - len(received))
        assert chunk, "the node closed the connection instead of answering the preface"
        received += chunk
    assert received == PREFACE
    return sock


def answers(sock: socket.socket, count: int) -> list[Frame]:
    reader = FrameReader(MAX_FRAME_BYTES, requests=False)
    found: list[Frame] = []
    while len(found) < count:
        data = sock.recv(65536)
        assert data, "the node closed the connection before answering"
        found += reader.feed(data)
    return found


def serves(node: NodeProcess) -> bool:
    return put(node.endpoint, b"still", b"here").version.wall_ms > 0


def test_reads_and_applies_are_answered_as_their_grpc_calls_are(node_factory: NodeFactory) -> None:
    node = node_factory("n1", **ALONE).start()
    put(node.endpoint, b"k", b"v")
    record = pb_record(b"applied", b"by a frame", now_ms(), 0, "node-9")
    with frames_socket(node) as sock:
        sock.sendall(
            request(READ, 5, rpb.ReadRequest(keys=[b"k", b"missing"]).SerializeToString())
            + request(
                APPLY,
                6,
                rpb.ApplyRequest(coordinator="node-9", records=[record]).SerializeToString(),
            )
            + request(READ, 7, b"\xff\xff not a ReadRequest")
        )
        by_call = {frame.call_id: frame for frame in answers(sock, 3)}
    assert by_call[5].kind == ANSWER
    read = rpb.ReadResponse.FromString(by_call[5].body)
    assert [result.present for result in read.results] == [True, False]
    assert read.results[0].record.value == b"v"
    assert by_call[6].kind == ANSWER
    assert list(rpb.ApplyResponse.FromString(by_call[6].body).outcomes) == [rpb.APPLY_STORED]
    assert get(node.endpoint, b"applied").value == b"by a frame"
    assert by_call[7].kind == FAILURE
    assert parse_failure(by_call[7].body)[0] == "INVALID_ARGUMENT"
    assert metric(node, "a3redis_grpc_frame_connections_total") == 1
    assert metric(node, "a3redis_requests_total", code="OK", rpc="Read", service="Replica") == 1
    assert serves(node)


def test_log_payloads_are_applied_and_answered_and_malformed_ones_refused(
    node_factory: NodeFactory,
) -> None:
    """Record payloads (a3redis.storage.codec's) as a coordinator sends them once told it
    may: applied and logged as they came; garbled, doubled or too many: INVALID_ARGUMENT.
    Every Apply answer says the node takes payloads; a Read that asks gets them."""
    node = node_factory("n1", **ALONE).start()
    version = Version(now_ms(), 0, "node-9")
    records = [Record(b"p1", b"one", version), Record(b"p2", b"two", version)]
    good = wire.apply_request_to_pb("node-9", records, payloads=True)
    garbled = rpb.ApplyRequest(coordinator="node-9", record_payloads=good.record_payloads[:-1])
    both = wire.apply_request_to_pb("node-9", records, payloads=False)
    both.record_payloads = good.record_payloads
    over = Limits().max_batch_keys + 1
    many = [Record(b"m%d" % n, b"", version) for n in range(over)]
    too_many = wire.apply_request_to_pb("node-9", many, payloads=True)
    with frames_socket(node) as sock:
        sock.sendall(
            b"".join(
                request(APPLY, call_id, message.SerializeToString())
                for call_id, message in enumerate((good, garbled, both, too_many))
            )
        )
        by_call = {frame.call_id: frame for frame in answers(sock, 4)}
    applied = rpb.ApplyResponse.FromString(by_call[0].body)
    assert list(applied.outcomes) == [rpb.APPLY_STORED] * 2 and applied.takes_payloads
    assert get(node.endpoint, b"p2").value == b"two"
    # A Read that asks for payloads gets the records so, and where the missing key was.
    read = rpb.ReadRequest(keys=[b"p2", b"nowhere", b"p1"], payloads=True)
    with frames_socket(node) as sock:
        sock.sendall(request(READ, 9, read.SerializeToString()))
        (answered,) = answers(sock, 1)
    read_answer = rpb.ReadResponse.FromString(answered.body)
    assert not read_answer.results and list(read_answer.missing) == [1]
    assert wire.read_records_from_pb(read_answer, 3) == [records[1], None, records[0]]
    for call_id, reason in (
        (1, "malformed record_payloads: "),
        (2, "both"),
        (3, f"more than {over - 1}"),
    ):
        assert by_call[call_id].kind == FAILURE
        code, message = parse_failure(by_call[call_id].body)
        assert code == "INVALID_ARGUMENT" and reason in message, message
    node.stop()
    node.start()  # what the log holds of the payloads comes back
    assert get(node.endpoint, b"p1").value == b"one"
    assert serves(node)


def test_broken_frames_close_their_connection_and_the_node_serves(
    node_factory: NodeFactory,
) -> None:
    node = node_factory("n1", **ALONE).start()
    broken = [
        struct.pack(">IBIH", 2**32 - 1, READ, 1, 0),  # longer than any frame may be
        struct.pack(">IBIH", 7, 0x42, 1, 0),  # no such kind
        struct.pack(">IBIH", 9, READ, 1, 900) + b"ab",  # credentials past its end
        struct.pack(">IBIH", 7 + 4, READ, 1, 4) + b"\xff\xfe\xfd\xfc",  # credentials not ASCII
    ]
    for data in broken:
        with frames_socket(node) as sock:
            sock.sendall(data)
            assert closed_by_peer(sock, within=5), data
    # A connection that is neither frames nor HTTP/2 is closed too.
    with socket.create_connection((HOST, node.grpc_port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert closed_by_peer(sock, within=5)
    assert node.process is not None and node.process.poll() is None
    assert serves(node)


def test_frames_past_the_inbound_budget_close_their_connections(node_factory: NodeFactory) -> None:
    node = node_factory("n1", **ALONE).start()
    sent_per_connection = 24 * 1024 * 1024
    connections = INBOUND_BUFFER_LIMIT // sent_per_connection + 2
    header = struct.pack(">IBIH", MAX_FRAME_BYTES - 4, APPLY, 1, 0)
    with ExitStack() as stack:
        socks = [stack.enter_context(frames_socket(node)) for _ in range(connections)]
        closed = 0
        for sock in socks:
            try:
                sock.sendall(header + bytes(sent_per_connection))
            except (BrokenPipeError, ConnectionResetError):
                closed += 1
        closed += sum(closed_by_peer(sock, within=2) for sock in socks)
        # Enough connections were closed to stay within the budget; the rest are held.
        assert closed >= 1
        held = metric(node, "a3redis_grpc_inbound_buffered_bytes")
        assert held <= INBOUND_BUFFER_LIMIT
        assert metric(node, "a3redis_grpc_frame_connections_over_budget_total") >= 1
    assert serves(node)


def test_unsigned_and_forged_frames_are_refused_with_a_cluster_secret(
    node_factory: NodeFactory,
) -> None:
    node = node_factory(
        "n1", CLUSTER_SECRET="the-secret-of-the-frames-tests-0123456789", **ALONE
    ).start()
    body = rpb.ReadRequest(keys=[b"k"]).SerializeToString()
    forged = ("node-2", str(now_ms()), "00" * 16, "ab" * 32)
    with frames_socket(node) as sock:
        sock.sendall(request(READ, 1, body) + request(READ, 2, body, forged))
        refusals = {frame.call_id: frame for frame in answers(sock, 2)}
    for frame in refusals.values():
        assert frame.kind == FAILURE
        code, message = parse_failure(frame.body)
        assert code == "UNAUTHENTICATED"
        assert "cluster secret" in message
    refused = "a3redis_peer_auth_refused_total"
    assert metric(node, refused, channel="Read", reason="missing") == 1
    assert metric(node, "a3redis_requests_total", 0, code="OK", rpc="Read", service="Replica") == 0
    assert serves(node)
