"""Streams a client opens and abandons cost a node nothing once they are reset.

A raw HTTP/2 client (h2, no gRPC library) opens streams on a node and resets
them half-way: after the headers, or in the middle of a request message.
purerpc ignored RST_STREAM, so each such stream stayed in its connection's
table with a read buffer and a handler waiting for the rest of the request,
for as long as the connection lived. The node's census (DEBUG_ENDPOINTS=1)
counts what is left while the connection is still open.
"""

from __future__ import annotations

import contextlib
import socket
import struct

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events

from a3redis.v1 import kv_pb2 as pb
from tests.conftest import NodeFactory
from tests.hostile.raw import grpc_request_headers
from tests.support.node_http import census
from tests.support.processes import HOST

ABANDONED = 300


def test_streams_reset_before_their_request_ends_leave_nothing_behind(
    node_factory: NodeFactory,
) -> None:
    node = node_factory("n1", DEBUG_ENDPOINTS="1").start()
    census(node)  # the HTTP app's first-request set-up is not what is measured
    before = census(node)
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    with socket.create_connection((HOST, node.grpc_port), timeout=10) as sock:
        connection.initiate_connection()
        sock.sendall(connection.data_to_send())
        for n in range(ABANDONED):
            stream_id = connection.get_next_available_stream_id()
            connection.send_headers(stream_id, grpc_request_headers(node))
            if n % 2:
                # Half a message: the length prefix promises 100 bytes, 10 come.
                connection.send_data(stream_id, b"\x00" + struct.pack(">I", 100) + b"k" * 10)
            connection.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            sock.sendall(connection.data_to_send())
        # A ping answered means the node has read everything sent before it.
        connection.ping(b"12345678")
        sock.sendall(connection.data_to_send())
        answered = False
        while not answered:
            data = sock.recv(65536)
            assert data, "the node closed the connection"
            events = connection.receive_data(data)
            answered = any(isinstance(event, h2.events.PingAcknowledged) for event in events)
        after = census(node)
        # The connection is still open here: what it holds is what is counted.
        for name in (
            "a3redis.net.grpc_socket.LeanStream",
            "trio.lowlevel.Task",
            "purerpc.grpclib.buffers.MessageReadBuffer",
        ):
            grown = after["instances"].get(name, 0) - before["instances"].get(name, 0)
            assert grown < ABANDONED // 10, (name, grown)
        for name in (
            "a3redis.net.grpc_socket.LeanSocket._streams",
            "purerpc.grpclib.connection.GRPCConnection.message_read_buffers",
        ):
            assert after["entries"].get(name, 0) < ABANDONED // 10, (name, after["entries"])
    # And the node still serves.
    with grpc.insecure_channel(node.endpoint, options=[("grpc.enable_http_proxy", 0)]) as channel:
        put = channel.unary_unary(
            "/a3redis.v1.KeyValue/Put",
            request_serializer=pb.PutRequest.SerializeToString,
            response_deserializer=pb.PutResponse.FromString,
        )
        assert put(pb.PutRequest(key=b"after", value=b"streams"), timeout=10).version.wall_ms > 0


def test_a_flood_of_header_only_streams_ends_that_connection_not_the_node(
    node_factory: NodeFactory,
) -> None:
    node = node_factory("n1", DEBUG_ENDPOINTS="1").start()
    census(node)
    before = census(node)
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    with socket.create_connection((HOST, node.grpc_port), timeout=10) as sock:
        connection.initiate_connection()
        sock.sendall(connection.data_to_send())
        # 20,000 streams were +78 MB and a stalled node; the node allows 128 at once.
        # This client ignores the node's setting (h2 would refuse to send them).
        connection.remote_settings.max_concurrent_streams = 2**31 - 1
        for _ in range(2_000):
            connection.send_headers(
                connection.get_next_available_stream_id(), grpc_request_headers(node)
            )
        with contextlib.suppress(OSError):  # the node may already have closed it
            sock.sendall(connection.data_to_send())
        closed = False
        while not closed:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            closed = not data or any(
                isinstance(event, h2.events.ConnectionTerminated)
                for event in connection.receive_data(data)
            )
    after = census(node)
    grown = after["instances"].get("a3redis.net.grpc_socket.LeanStream", 0) - before[
        "instances"
    ].get("a3redis.net.grpc_socket.LeanStream", 0)
    assert grown <= 0, grown
    assert node.health() is not None
    with grpc.insecure_channel(node.endpoint, options=[("grpc.enable_http_proxy", 0)]) as channel:
        put = channel.unary_unary(
            "/a3redis.v1.KeyValue/Put",
            request_serializer=pb.PutRequest.SerializeToString,
            response_deserializer=pb.PutResponse.FromString,
        )
        assert put(pb.PutRequest(key=b"after", value=b"flood"), timeout=10).version.wall_ms > 0
