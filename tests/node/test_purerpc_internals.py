"""The internals of purerpc, h2 and anyio that a3redis.net.grpc_socket and grpc_server rely on.

Both modules reach past purerpc's public API (purerpc 0.8 is in maintenance
and exposes no hooks): they replace a connection's event loop and its
stream's inbox, bound h2's tables and purerpc's decompression, and run each
call themselves. A release that renames or drops one of these breaks the
node in ways far from the cause; this test names the cause instead.
"""

from __future__ import annotations

import inspect

import anyio
import h2.connection
import purerpc.grpc_socket
import purerpc.grpclib.connection
import purerpc.grpclib.events
import purerpc.server
import purerpc.wrappers
import pytest
from purerpc.grpclib.buffers import MessageReadBuffer
from purerpc.grpclib.config import GRPCConfiguration
from purerpc.grpclib.connection import GRPCConnection

from a3redis.net.grpc_socket import BoundedMessageReadBuffer

CONNECTION_ATTRIBUTES = [
    "h2_connection",
    "message_read_buffers",
    "_stream_reset",
    "_set_h2_connection_local_settings",
    "MAX_CONCURRENT_STREAMS",
    "receive_data",
    "acknowledge_received_data",
]
H2_ATTRIBUTES = ["_closed_streams", "_data_to_send", "reset_stream", "local_settings"]
BUFFER_ATTRIBUTES = [
    "_buffer",
    "_message_encoding",
    "_max_message_length",
    "_flow_controlled_length",
]


def test_the_grpc_connection_has_what_the_lean_socket_changes() -> None:
    connection = GRPCConnection(GRPCConfiguration(client_side=False))
    missing = [name for name in CONNECTION_ATTRIBUTES if not hasattr(connection, name)]
    missing += [
        f"h2_connection.{name}"
        for name in H2_ATTRIBUTES
        if not hasattr(connection.h2_connection, name)
    ]
    assert missing == [], f"purerpc/h2 changed: {missing}"
    assert isinstance(connection.h2_connection, h2.connection.H2Connection)


def test_purerpc_makes_stream_parsers_from_the_bounded_class() -> None:
    # grpc_socket replaces the module attribute purerpc's connection uses.
    assert purerpc.grpclib.connection.MessageReadBuffer is BoundedMessageReadBuffer
    source = inspect.getsource(GRPCConnection)
    assert "MessageReadBuffer(" in source, "purerpc no longer makes parsers where we bound them"
    buffer = MessageReadBuffer("gzip", 1024)
    missing = [name for name in BUFFER_ATTRIBUTES if not hasattr(buffer, name)]
    assert missing == [], f"purerpc's MessageReadBuffer changed: {missing}"


@pytest.mark.parametrize(
    ("owner", "names"),
    [
        (purerpc.grpc_socket.GRPCSocket, ["_allocate_stream", "_listen", "listen", "StreamClass"]),
        (purerpc.grpc_socket.GRPCStream, ["_close_remote", "_close_local", "_send", "close"]),
        (purerpc.grpc_socket.SocketWrapper, ["_writer_thread", "flush", "recv"]),
        (purerpc.server.ConnectionHandler, ["request_received"]),
        (purerpc.wrappers, ["call_server_unary_unary", "call_server_stream_stream"]),
        (purerpc.grpclib.events, ["RequestReceived", "RequestEnded", "ResponseEnded"]),
        (anyio, ["BrokenResourceError", "EndOfStream"]),
    ],
)
def test_the_classes_and_functions_relied_on_exist(owner: object, names: list[str]) -> None:
    missing = [name for name in names if not hasattr(owner, name)]
    assert missing == [], f"{getattr(owner, '__name__', owner)} changed: {missing}"


def test_the_stream_attributes_lean_stream_sets_are_the_ones_purerpc_reads() -> None:
    # LeanStream.__init__ sets these instead of calling GRPCStream.__init__.
    source = inspect.getsource(purerpc.grpc_socket.GRPCStream.__init__)
    expected = [
        "_stream_id",
        "_grpc_connection",
        "_grpc_socket",
        "_socket",
        "_flow_control_update_event",
        "_incoming_events",
        "_response_started",
        "_state",
        "_start_stream_event",
        "_end_stream_event",
    ]
    assigned = [name for name in expected if f"self.{name} =" in source]
    assert assigned == expected, (
        "GRPCStream.__init__ changed: check a3redis.net.grpc_socket.LeanStream"
    )
