"""Serving purerpc services on a socket we bound ourselves, with a graceful drain.

Rules: purerpc's own `Server.serve_async` listens on every interface with
SO_REUSEPORT, so a second node on a taken port would start silently; here
the node binds the socket (and fails on a taken port) and this module only
accepts on it. Shutdown: stop accepting, let in-flight calls finish within
the grace period (new calls get UNAVAILABLE meanwhile), then close the
connections. Each call runs as a plain trio task of its connection's nursery
(purerpc's handler starts it through an anyio task group instead). A call
that fails answers a gRPC status whose message says what was wrong, never
a Python repr; a call the client reset ends quietly.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
from collections.abc import Iterable

import anyio
import anyio.abc
import purerpc
import trio
from google.protobuf.message import DecodeError
from purerpc.grpclib.events import RequestReceived
from purerpc.grpclib.exceptions import RpcFailedError, StreamClosedError
from purerpc.grpclib.status import Status, StatusCode
from purerpc.rpc import Cardinality
from purerpc.server import ConnectionHandler
from purerpc.wrappers import (
    call_server_stream_stream,
    call_server_stream_unary,
    call_server_unary_stream,
    call_server_unary_unary,
)

from a3redis import h2_tuning
from a3redis.grpc_socket import LeanSocket, LeanStream

log = logging.getLogger(__name__)


class ShuttingDownError(Exception):
    """The node is draining and takes no new requests."""


class RequestGate:
    """Counts calls in flight; once closed, refuses new ones."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.closed = False
        # Only close_and_wait needs to hear that the last call finished: no
        # Event is made and set on every call that finds the node idle.
        self._idle: trio.Event | None = None

    def __enter__(self) -> RequestGate:
        if self.closed:
            raise ShuttingDownError("the node is shutting down")
        self.in_flight += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle is not None:
            self._idle.set()

    async def close_and_wait(self, grace: float) -> bool:
        """Refuse new calls and wait up to `grace` seconds; True if all finished."""
        self.closed = True
        if self.in_flight:
            self._idle = trio.Event()
            with trio.move_on_after(grace):
                await self._idle.wait()
        else:
            await trio.lowlevel.checkpoint()
        return self.in_flight == 0


async def serve_grpc(
    sock: socket.socket,
    services: Iterable[purerpc.Service],
    gate: RequestGate,
    stop: trio.Event,
    grace: float,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    listener = await anyio.abc.SocketListener.from_socket(sock)
    h2_tuning.install()
    handler = _Connection({service.name: service for service in services}, purerpc.Server())
    async with anyio.create_task_group() as connections:
        async with trio.open_nursery() as acceptor:
            acceptor.start_soon(_accept, listener, handler, connections)
            task_status.started()
            await stop.wait()
            acceptor.cancel_scope.cancel()
        await listener.aclose()
        await gate.close_and_wait(grace)
        connections.cancel_scope.cancel()


_CALLERS = {
    Cardinality.UNARY_UNARY: call_server_unary_unary,
    Cardinality.UNARY_STREAM: call_server_unary_stream,
    Cardinality.STREAM_UNARY: call_server_stream_unary,
    Cardinality.STREAM_STREAM: call_server_stream_stream,
}


class _Connection(ConnectionHandler):  # type: ignore[misc]
    """purerpc's per-connection handler, with each call a plain trio task.

    purerpc starts every call through an anyio task group, whose per-task
    handle (a cancel scope, an Event, a name) cost ~5 % of a node's CPU per
    request under load (py-spy). Unlike purerpc's handler, this one lets
    cancellation through (a node that stops closes its connections instead
    of logging them as errors), closes the socket when the connection ends,
    on bad input too, and answers a malformed message INVALID_ARGUMENT
    (purerpc answered CANCELLED with the exception's repr).
    """

    async def request_received(self, stream: LeanStream) -> None:
        try:
            await stream.start_response()
            event = await stream.receive_event()
            if not isinstance(event, RequestReceived):
                await stream.close(Status(StatusCode.INTERNAL, "expected request headers"))
                return
            service = self.services.get(event.service_name)
            method = None if service is None else service.methods.get(event.method_name)
            if method is None:
                what = "service" if service is None else "method"
                await stream.close(
                    Status(
                        StatusCode.UNIMPLEMENTED,
                        f"{what} {event.service_name}/{event.method_name} is not served here",
                    )
                )
                return
            stream.expect_message_type(method.signature.request_type)
            call = _CALLERS[method.signature.cardinality]
            try:
                await call(functools.partial(method.method_fn, request=event), stream)
            except RpcFailedError as error:
                await stream.close(error.status)
            except DecodeError:
                await stream.close(
                    Status(
                        StatusCode.INVALID_ARGUMENT,
                        f"malformed {method.signature.request_type.DESCRIPTOR.full_name} message",
                    )
                )
        except StreamClosedError:
            pass  # the client reset the call or the connection ended: nobody to answer
        except Exception:
            # A bug of ours or a broken connection: say so without internals.
            log.exception("gRPC call failed")
            with contextlib.suppress(Exception):
                await stream.close(Status(StatusCode.INTERNAL, "internal error"))

    async def __call__(self, stream: anyio.abc.SocketStream) -> None:
        # The socket is closed here whatever happens: purerpc's handler leaves
        # it to the garbage collector, so a client that sent garbage kept its
        # connection (and a file descriptor) until it hung up itself.
        async with stream:
            try:
                async with (
                    LeanSocket(self.config, stream) as grpc_socket,
                    trio.open_nursery() as calls,
                ):
                    async for call in grpc_socket.listen():
                        calls.start_soon(self.request_received, call)
            except Exception as error:  # bad frames or a broken socket end this connection only
                log.debug("gRPC connection ended: %r", error)


async def _accept(
    listener: anyio.abc.SocketListener,
    handler: _Connection,
    connections: anyio.abc.TaskGroup,
) -> None:
    while True:
        stream = await listener.accept()
        connections.start_soon(handler, stream)
