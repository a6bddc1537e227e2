"""What a node's listeners do with clients that misuse the connection itself.

Each test runs a real node process and attacks it on loopback, bounded in
count and time, then checks the node is alive and still serves: a
compressed bomb, more connections than MAX_CONNECTIONS, silent sockets,
more descriptors than the process may open, a flood of streams, and an
HTTP body that trickles in.
"""

from __future__ import annotations

import socket
import struct
import time
from contextlib import ExitStack

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events

from a3redis.net.grpc_server import HANDSHAKE_TIMEOUT, INBOUND_BUFFER_LIMIT
from a3redis.net.grpc_socket import MAX_CONCURRENT_STREAMS
from a3redis.v1 import kv_pb2 as pb
from tests.conftest import NodeFactory
from tests.hostile.raw import grpc_request_headers
from tests.support.node_http import get_json, metric
from tests.support.processes import HOST, NodeProcess

OPTIONS = [("grpc.enable_http_proxy", 0)]


def put(endpoint: str, key: bytes, value: bytes, **call: object) -> pb.PutResponse:
    with grpc.insecure_channel(endpoint, options=OPTIONS) as channel:
        method = channel.unary_unary(
            "/a3redis.v1.KeyValue/Put",
            request_serializer=pb.PutRequest.SerializeToString,
            response_deserializer=pb.PutResponse.FromString,
        )
        response: pb.PutResponse = method(pb.PutRequest(key=key, value=value), timeout=10, **call)
        return response


def get(endpoint: str, key: bytes) -> pb.GetResponse:
    with grpc.insecure_channel(endpoint, options=OPTIONS) as channel:
        method = channel.unary_unary(
            "/a3redis.v1.KeyValue/Get",
            request_serializer=pb.GetRequest.SerializeToString,
            response_deserializer=pb.GetResponse.FromString,
        )
        response: pb.GetResponse = method(pb.GetRequest(key=key), timeout=10)
        return response


def serves(node: NodeProcess) -> bool:
    return put(node.endpoint, b"still", b"here").version.wall_ms > 0


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """Whether the node closes the connection within `within` seconds (what it sent is read)."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def test_a_compressed_bomb_is_refused_without_inflating_it(node_factory: NodeFactory) -> None:
    # 40 MiB of zeros gzip to ~40 KiB; the message limit is 32 MiB.
    node = node_factory("n1", MAX_VALUE_BYTES=str(16 * 1024 * 1024)).start()
    try:
        put(node.endpoint, b"bomb", bytes(40 * 1024 * 1024), compression=grpc.Compression.Gzip)
        raise AssertionError("the bomb was accepted")
    except grpc.RpcError as error:
        assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)
    assert node.process is not None and node.process.poll() is None
    assert not get(node.endpoint, b"bomb").found
    # A compressed request within the limit is still served.
    put(node.endpoint, b"small", b"x" * 1000, compression=grpc.Compression.Gzip)
    assert get(node.endpoint, b"small").value == b"x" * 1000


def test_connections_over_the_limit_and_silent_ones_are_closed(
    node_factory: NodeFactory,
) -> None:
    node = node_factory("n1", MAX_CONNECTIONS="20").start()
    with ExitStack() as stack:
        silent = [
            stack.enter_context(socket.create_connection((HOST, node.grpc_port), timeout=5))
            for _ in range(30)
        ]
        # Ten were over the limit: closed at once. The node's own answer
        # shows in its metrics.
        over = [sock for sock in silent[20:] if closed_by_peer(sock, within=5)]
        assert len(over) == 10
        assert metric(node, "a3redis_grpc_connections") == 20
        assert metric(node, "a3redis_grpc_connections_refused_total", reason="over_limit") == 10
        # The twenty that never spoke are dropped once HANDSHAKE_TIMEOUT passes.
        started = time.monotonic()
        for sock in silent[:20]:
            assert closed_by_peer(sock, within=HANDSHAKE_TIMEOUT + 5)
        assert time.monotonic() - started < HANDSHAKE_TIMEOUT + 5
    assert serves(node)
    assert metric(node, "a3redis_grpc_connections_refused_total", reason="silent") == 20


def test_running_out_of_file_descriptors_pauses_accepting_and_never_ends_the_node(
    node_factory: NodeFactory, tmp_path: object
) -> None:
    node = node_factory("n1")
    # The node gets a hard limit of 96 descriptors; 150 connections exhaust it.
    node.start(prefix=["prlimit", "--nofile=96:96"])
    with ExitStack() as stack:
        held = []
        for _ in range(150):
            try:
                held.append(
                    stack.enter_context(socket.create_connection((HOST, node.grpc_port), timeout=2))
                )
            except OSError:
                break
        time.sleep(1)
        assert node.running, node.output()
    # Descriptors are free again: the node accepts and serves.
    deadline = time.monotonic() + 10
    while True:
        try:
            assert serves(node)
            break
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert metric(node, "a3redis_grpc_connections_refused_total", reason="accept_error") > 0
    assert "cannot accept gRPC connections (EMFILE" in node.output()


def test_a_connection_is_offered_a_bounded_number_of_streams(node_factory: NodeFactory) -> None:
    node = node_factory("n1").start()
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    with socket.create_connection((HOST, node.grpc_port), timeout=10) as sock:
        connection.initiate_connection()
        sock.sendall(connection.data_to_send())
        settings: dict[int, int] = {}
        while not settings:
            for event in connection.receive_data(sock.recv(65536)):
                if isinstance(event, h2.events.RemoteSettingsChanged):
                    settings = {
                        code: change.new_value for code, change in event.changed_settings.items()
                    }
        assert connection.remote_settings.max_concurrent_streams == MAX_CONCURRENT_STREAMS


def test_a_trickling_http_body_is_cut_and_health_stays_up(node_factory: NodeFactory) -> None:
    node = node_factory("n1").start()
    with socket.create_connection((HOST, node.http_port), timeout=30) as sock:
        sock.sendall(
            b"POST /gossip HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        started = time.monotonic()
        answer = b""
        while time.monotonic() - started < 25:
            sock.settimeout(3)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                sock.sendall(b" ")  # one byte every 3 s
                assert get_json(node, "/health", timeout=5)["status"] == "ok"
                continue
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer:
                break
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert time.monotonic() - started < 20


def test_the_starts_of_many_large_messages_are_refused_past_the_inbound_budget(
    node_factory: NodeFactory,
) -> None:
    node = node_factory("n1", DEBUG_ENDPOINTS="1").start()
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    promised = 32 * 1024 * 1024 - 1  # purerpc's message limit
    sent_per_stream = 24 * 1024 * 1024
    streams = INBOUND_BUFFER_LIMIT // sent_per_stream + 2
    reset: set[int] = set()
    with socket.create_connection((HOST, node.grpc_port), timeout=30) as sock:
        connection.initiate_connection()
        sock.sendall(connection.data_to_send())
        # The node's settings raise the frame size; read them before sending.
        while connection.remote_settings.max_frame_size == 16384:
            connection.receive_data(sock.recv(65536))
        sock.sendall(connection.data_to_send())
        for _ in range(streams):
            stream_id = connection.get_next_available_stream_id()
            connection.send_headers(stream_id, grpc_request_headers(node))
            chunk = b"\x00" + struct.pack(">I", promised) + bytes(sent_per_stream)
            for start in range(0, len(chunk), connection.max_outbound_frame_size):
                connection.send_data(
                    stream_id, chunk[start : start + connection.max_outbound_frame_size]
                )
            sock.sendall(connection.data_to_send())
        connection.ping(b"budget!!")
        sock.sendall(connection.data_to_send())
        answered = False
        while not answered:
            data = sock.recv(1 << 20)
            assert data, "the node closed the connection"
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.StreamReset):
                    assert event.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
                    reset.add(event.stream_id)
                answered |= isinstance(event, h2.events.PingAcknowledged)
            sock.sendall(connection.data_to_send())
        # Enough streams were refused to stay within the budget; the rest are held.
        held = (streams - len(reset)) * sent_per_stream
        assert reset and held <= INBOUND_BUFFER_LIMIT, (len(reset), streams)
        assert metric(node, "a3redis_grpc_streams_over_budget_total") == len(reset)
        assert metric(node, "a3redis_grpc_inbound_buffered_bytes") == held
    assert serves(node)
