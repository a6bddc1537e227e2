"""Serving purerpc services on a socket we bound ourselves, with a graceful drain.

Rules: purerpc's own `Server.serve_async` listens on every interface with
SO_REUSEPORT, so a second node on a taken port would start silently; here
the node binds the socket (and fails on a taken port) and this module only
accepts on it. Shutdown: stop accepting, let in-flight calls finish within
the grace period (new calls get UNAVAILABLE meanwhile), then close the
connections. Incomplete request messages held over all connections stay
within INBOUND_BUFFER_LIMIT (a3redis.net.grpc_socket.InboundBudget). At most
`max_connections` connections are served at once
(those beyond are closed as they are accepted, and counted); a connection
that has not started HTTP/2 within HANDSHAKE_TIMEOUT is closed; running
out of file descriptors pauses accepting (logged), it never ends the node.
Each call runs as a plain trio task of its connection's nursery
(purerpc's handler starts it through an anyio task group instead). A call
that fails answers a gRPC status whose message says what was wrong, never
a Python repr; a call the client reset ends quietly.

Keepalive, as gRPC clients expect (grpc core's ping-abuse rules with a more
permissive interval, a3redis.net.grpc_socket.KeepalivePolicy): h2 answers
every HTTP/2 PING; a client may ping every 10 s or more, with or without
calls open; pings sooner than PING_MIN_INTERVAL after the previous one, with
nothing sent by the node in between, are strikes, and the third strike is
answered GOAWAY ENHANCE_YOUR_CALM "too_many_pings" (as grpc core does) and
the connection closes. grpc core's own server default (5 min, no pings
without calls) would send a client configured with keepalive_time_ms=10 s
away within a minute of idling; a database's clients are idle between
requests and keep connections warm through load balancers and NATs with
just such pings, which cost the node one h2 frame each. Every response
advertises `grpc-accept-encoding: identity,deflate,gzip`: requests
compressed either way are inflated (up to the message limit, grpc_socket);
answers go uncompressed.

With TLS (`tls`, a3redis.net.tls) the port speaks only TLS, ALPN `h2`: each
accepted connection completes its handshake within TLS_HANDSHAKE_TIMEOUT or
is closed (a client that stalls or speaks plain text costs one connection
slot for that long at most, and is counted and logged, throttled). The
services named in `members_only` (the Replica service) then answer
UNAUTHENTICATED on a connection that presented no certificate signed by
TLS_CA_FILE: with a CA, replica traffic is mutual TLS.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import errno
import functools
import logging
import socket
import ssl
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import purerpc
import trio
from anyio.streams.tls import TLSAttribute, TLSStream
from hpack import NeverIndexedHeaderTuple
from purerpc.grpc_socket import GRPCStreamState
from purerpc.grpclib.config import GRPCConfiguration
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

from a3redis.core.errors import NodeUnavailableError
from a3redis.core.replica_frames import (
    MAX_BODY_BYTES,
    MAX_FRAME_BYTES,
    Frame,
    failure,
    preface_answer,
)
from a3redis.core.throttle import LogThrottle
from a3redis.net import h2_tuning
from a3redis.net.frames import FrameServer, Handle, serve_frames
from a3redis.net.grpc_socket import InboundBudget, KeepalivePolicy, LeanSocket, LeanStream
from a3redis.net.tls import TLS_HANDSHAKE_TIMEOUT, NodeTls

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 1024
# A client that connects but does not speak within this long is dropped:
# idle sockets must not hold descriptors and connection slots.
HANDSHAKE_TIMEOUT = 10.0
# Out of descriptors or memory: wait this long before accepting again
# (trio's own serve_listeners does the same).
ACCEPT_RETRY_DELAY = 0.1
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
LOG_INTERVAL = 10.0
# Bytes of incomplete request messages the node holds over all connections:
# four messages of purerpc's 32 MiB limit.
INBOUND_BUFFER_LIMIT = 128 * 1024 * 1024
# The largest gRPC message either way (purerpc's limit, said here so the README can cite
# it): the bound of a replica frame's body too, so a call too large one way is too large
# the other.
MAX_MESSAGE_BYTES = MAX_BODY_BYTES
# Client keepalive: pings every 10 s are welcome; a second of slack for the client's timers.
PING_MIN_INTERVAL = 9.0
# Too-soon pings tolerated before GOAWAY (grpc core's GRPC_ARG_HTTP2_MAX_PING_STRIKES default).
MAX_PING_STRIKES = 2
# Message encodings a request may use (grpc_socket inflates deflate and gzip, bounded).
ACCEPTED_ENCODINGS = ("identity", "deflate", "gzip")

# The trailer of a failed call's google.rpc.Status (gRPC's richer error model).
DETAILS_TRAILER = "grpc-status-details-bin"

# The stream of the call the current task serves: a call that waits long with
# nothing to send (a health Watch) looks at it to notice that its client is gone.
_CURRENT_CALL: contextvars.ContextVar[LeanStream] = contextvars.ContextVar("current_call")


# Set in a connection's task, so every call of the connection sees it: whether the
# client presented a certificate signed by TLS_CA_FILE (it is a cluster member).
_CERTIFIED: contextvars.ContextVar[bool] = contextvars.ContextVar("certified", default=False)


def current_call() -> LeanStream | None:
    """The stream of the call this task serves (None outside a call)."""
    return _CURRENT_CALL.get(None)


def connection_certified() -> bool:
    """Whether this call's connection has a client certificate signed by TLS_CA_FILE."""
    return _CERTIFIED.get()


class FailedWithDetails(RpcFailedError):  # type: ignore[misc]
    """A call's failure with its details: the serialized google.rpc.Status that the
    `grpc-status-details-bin` trailer carries (a3redis.api.status_details makes it)."""

    def __init__(self, status: Status, details: bytes) -> None:
        super().__init__(status)
        self.details = details


class ShuttingDownError(NodeUnavailableError):
    """The node is draining and takes no new requests."""

    reason = "SHUTTING_DOWN"


class RequestGate:
    """Counts calls in flight; once closed, refuses new ones."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.closed = False
        # Client and replica requests served so far (not background copying or repair):
        # how busy the node is, for the pace of background copying.
        self.foreground_served = 0
        # Only close_and_wait needs to hear that the last call finished: no
        # Event is made and set on every call that finds the node idle.
        self._idle: trio.Event | None = None

    def __enter__(self) -> RequestGate:
        self.enter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.leave()

    def enter(self) -> None:
        """A call begins (for calls that end in a callback, not in this block)."""
        if self.closed:
            raise ShuttingDownError("the node is shutting down; retry on another node")
        self.in_flight += 1

    def leave(self) -> None:
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
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    tls: NodeTls | None = None,
    members_only: Collection[str] = (),
    explain: Callable[[StatusCode, str, str], FailedWithDetails] | None = None,
    frames: FrameServer | None = None,
    task_status: trio.TaskStatus[ConnectionStats] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `stop`; report the connection counters once accepting.

    `tls`: serve TLS only; `members_only`: names of services that, when `tls` has a
    CA, need a connection whose certificate the CA signed; `explain(code, message,
    reason)`: the failure, with details, of a call this module refuses itself;
    `frames`: serve replica frames (a3redis.core.replica_frames) to connections that
    start with their preface.
    """
    listener = await anyio.abc.SocketListener.from_socket(sock)
    h2_tuning.install()
    handler = _Connection({service.name: service for service in services}, purerpc.Server())
    handler.tls = tls
    if tls is not None and tls.peers_need_certificates:
        handler.members_only = frozenset(members_only)
    handler.stats.limit = max_connections
    if explain is not None:
        handler.explain = explain
    handler.frames = frames
    async with anyio.create_task_group() as connections:
        async with trio.open_nursery() as acceptor:
            acceptor.start_soon(_accept, listener, handler, connections)
            task_status.started(handler.stats)
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


@dataclass
class ConnectionStats:
    """The gRPC listener's connections: open now, and refused or dropped so far."""

    limit: int = DEFAULT_MAX_CONNECTIONS
    open: int = 0
    refused_over_limit: int = 0
    dropped_silent: int = 0
    accept_errors: int = 0
    tls_handshakes_failed: int = 0
    frame_connections: int = 0  # connections that spoke replica frames
    budget: InboundBudget = field(default_factory=lambda: InboundBudget(INBOUND_BUFFER_LIMIT))
    keepalive: KeepalivePolicy = field(
        default_factory=lambda: KeepalivePolicy(PING_MIN_INTERVAL, MAX_PING_STRIKES)
    )
    _log: LogThrottle = field(default_factory=lambda: LogThrottle(LOG_INTERVAL))

    def log_throttled(self, what: str, message: str, *args: object) -> None:
        """Log `message` at most once per LOG_INTERVAL for each kind of event."""
        due, held_back = self._log.should_log(what, trio.current_time())
        if due:
            suffix = f" ({held_back} more since the last line)" if held_back else ""
            log.warning(message + suffix, *args)


class _Connection(ConnectionHandler):  # type: ignore[misc]
    """purerpc's per-connection handler, with each call a plain trio task.

    purerpc starts every call through an anyio task group, whose per-task
    handle (a cancel scope, an Event, a name) showed up in py-spy profiles of
    a node under load (benchmarks/README.md). Unlike purerpc's handler, this one lets
    cancellation through (a node that stops closes its connections instead
    of logging them as errors), closes the socket when the connection ends,
    on bad input too, and answers a failure with a status that names no
    Python internals (purerpc answered CANCELLED with the exception's repr).
    Requests are decoded by the services themselves (a3redis.api.grpc_services), so
    a malformed message is their INVALID_ARGUMENT.
    """

    def __init__(self, services: dict[str, purerpc.Service], server: purerpc.Server) -> None:
        super().__init__(services, server)
        self.config = GRPCConfiguration(
            client_side=False,
            message_accept_encoding=ACCEPTED_ENCODINGS,
            max_message_length=MAX_MESSAGE_BYTES,
        )
        self.stats = ConnectionStats()
        self.tls: NodeTls | None = None
        # Services only a connection with a certificate signed by TLS_CA_FILE may call.
        self.members_only: frozenset[str] = frozenset()
        self.explain: Callable[[StatusCode, str, str], RpcFailedError] = _plain_failure
        self.frames: FrameServer | None = None

    async def request_received(self, stream: LeanStream, certified: bool = False) -> None:
        try:
            await stream.start_response()
            event = await stream.receive_event()
            if not isinstance(event, RequestReceived):
                failure = self.explain(StatusCode.INTERNAL, "expected request headers", "INTERNAL")
                await close_failed(stream, failure)
                return
            if not certified and event.service_name in self.members_only:
                failure = self.explain(
                    StatusCode.UNAUTHENTICATED,
                    f"{event.service_name} needs a client certificate signed by the "
                    "cluster's CA (TLS_CA_FILE)",
                    "CLIENT_CERTIFICATE_REQUIRED",
                )
                await close_failed(stream, failure)
                return
            service = self.services.get(event.service_name)
            method = None if service is None else service.methods.get(event.method_name)
            if method is None:
                what = "service" if service is None else "method"
                failure = self.explain(
                    StatusCode.UNIMPLEMENTED,
                    f"{what} {event.service_name}/{event.method_name} is not served here",
                    "NOT_SERVED",
                )
                await close_failed(stream, failure)
                return
            stream.expect_message_type(method.signature.request_type)
            _CURRENT_CALL.set(stream)
            call = _CALLERS[method.signature.cardinality]
            try:
                await call(functools.partial(method.method_fn, request=event), stream)
            except RpcFailedError as error:
                await close_failed(stream, error)
        except StreamClosedError:
            pass  # the client reset the call or the connection ended: nobody to answer
        except Exception:
            # A bug of ours or a broken connection: say so without internals.
            log.exception("gRPC call failed")
            with contextlib.suppress(Exception):
                failure = self.explain(StatusCode.INTERNAL, "internal error", "INTERNAL")
                await close_failed(stream, failure)

    async def __call__(self, stream: anyio.abc.SocketStream) -> None:
        # The socket is closed here whatever happens: purerpc's handler leaves
        # it to the garbage collector, so a client that sent garbage kept its
        # connection (and a file descriptor) until it hung up itself. `open`
        # was counted by the acceptor, so a burst cannot overshoot the limit.
        try:
            async with stream:
                if self.tls is None:
                    await self._serve(stream, certified=False)
                    return
                secured = await self._handshake(stream, self.tls.grpc_server)
                if secured is not None:
                    certificate = secured.extra(TLSAttribute.peer_certificate, None)
                    await self._serve(secured, certified=bool(certificate))
        finally:
            self.stats.open -= 1

    async def _serve(self, stream: anyio.abc.ByteStream, certified: bool) -> None:
        if self.frames is not None:
            received = await self._first_bytes(stream)
            if received is None:
                return
            if preface_answer(received):
                await self._serve_frames(self.frames, stream, received, certified)
                return
            stream = _Replayed(stream, received)
        if certified and self.members_only:
            _CERTIFIED.set(True)  # the calls' tasks, started below, inherit it
        try:
            async with (
                LeanSocket(
                    self.config, stream, self.stats.budget, self.stats.keepalive
                ) as grpc_socket,
                trio.open_nursery() as calls,
            ):
                watch = trio.CancelScope()
                calls.start_soon(self._drop_if_silent, grpc_socket, calls.cancel_scope, watch)
                async for call in grpc_socket.listen():
                    calls.start_soon(self.request_received, call, certified)
                watch.cancel()  # calls still running finish; the watch need not
                # The client is gone: the calls still open have nobody to answer.
                still_open: dict[int, LeanStream] = grpc_socket._streams
                for stream in list(still_open.values()):
                    stream.peer_reset()
        except Exception as error:  # bad frames or a broken socket end this connection
            log.debug("gRPC connection ended: %r", error)

    async def _first_bytes(self, stream: anyio.abc.ByteStream) -> bytes | None:
        """Enough of what a client sends first to tell replica frames from HTTP/2; None
        when it sent nothing within HANDSHAKE_TIMEOUT (counted) or hung up."""
        received = b""
        with trio.move_on_after(HANDSHAKE_TIMEOUT):
            try:
                while preface_answer(received) is None:
                    received += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return None
            return received
        self.stats.dropped_silent += 1
        return None

    async def _serve_frames(
        self, frames: FrameServer, stream: anyio.abc.ByteStream, received: bytes, certified: bool
    ) -> None:
        peer = _host_of(stream.extra(anyio.abc.SocketAttribute.remote_address, "unknown"))
        self.stats.frame_connections += 1
        handle = frames.frames(peer)
        if not certified and frames.service_name in self.members_only:
            handle = _refusing(
                failure(
                    "UNAUTHENTICATED",
                    f"{frames.service_name} needs a client certificate signed by the "
                    "cluster's CA (TLS_CA_FILE)",
                )
            )
        await serve_frames(stream, received, handle, self.stats.budget, MAX_FRAME_BYTES)

    async def _handshake(
        self, stream: anyio.abc.SocketStream, context: ssl.SSLContext
    ) -> TLSStream | None:
        """The connection once its TLS handshake is done; None (counted, logged) if it
        failed or took longer than TLS_HANDSHAKE_TIMEOUT."""
        reason = "timed out"
        with trio.move_on_after(TLS_HANDSHAKE_TIMEOUT):
            try:
                return await TLSStream.wrap(
                    stream, server_side=True, ssl_context=context, standard_compatible=False
                )
            except (ssl.SSLError, OSError) as error:
                reason = getattr(error, "reason", None) or type(error).__name__
            except (anyio.BrokenResourceError, anyio.EndOfStream):
                # A TCP health check, or a client that gave up: nothing to warn about.
                self.stats.tls_handshakes_failed += 1
                return None
        self.stats.tls_handshakes_failed += 1
        peer = stream.extra(anyio.abc.SocketAttribute.remote_address, "unknown")
        self.stats.log_throttled(
            "tls", "gRPC TLS handshake with %s failed: %s", _host_of(peer), reason
        )
        return None

    async def _drop_if_silent(
        self, grpc_socket: LeanSocket, connection: trio.CancelScope, watch: trio.CancelScope
    ) -> None:
        with watch:
            await trio.sleep(HANDSHAKE_TIMEOUT)
        if not watch.cancelled_caught and not grpc_socket.heard_from_peer:
            self.stats.dropped_silent += 1
            connection.cancel()


def _refusing(refusal: bytes) -> Handle:
    """A frame handler that fails every call with `refusal` (a FAILURE's body)."""

    async def refuse(_frame: Frame) -> tuple[bytes, bool]:
        return refusal, True

    return refuse


class _Replayed(anyio.abc.ByteStream):
    """A stream whose first bytes were already read: they are received again first."""

    def __init__(self, stream: anyio.abc.ByteStream, received: bytes) -> None:
        self._stream = stream
        self._received = received

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._received:
            data, self._received = self._received[:max_bytes], self._received[max_bytes:]
            return data
        return await self._stream.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        await self._stream.send(item)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._stream.extra_attributes


def _plain_failure(code: StatusCode, message: str, _reason: str) -> RpcFailedError:
    return RpcFailedError(Status(code, message))


async def close_failed(stream: LeanStream, error: RpcFailedError) -> None:
    """End a failed call with its status and, for FailedWithDetails, the details trailer.

    purerpc refuses metadata whose name starts with `grpc-` (the names it sends
    itself), so the trailers of a call with details are sent here, as its own
    close would send them, plus `grpc-status-details-bin` (never indexed by HPACK:
    each is different).
    """
    details = getattr(error, "details", None)
    if details is None:
        await stream.close(error.status)
        return
    if stream.reset_by_peer or stream.state in (
        GRPCStreamState.HALF_CLOSED_LOCAL,
        GRPCStreamState.CLOSED,
    ):
        return
    status = error.status
    trailers: list[tuple[str, str]] = []
    if not stream._response_started:
        trailers += [(":status", "200"), ("content-type", "application/grpc+proto")]
    trailers.append(("grpc-status", str(status.int_value)))
    if status.status_message:
        trailers.append(("grpc-message", urllib.parse.quote(status.status_message, safe="")))
    encoded = base64.b64encode(details).rstrip(b"=").decode("ascii")
    trailers.append(NeverIndexedHeaderTuple(DETAILS_TRAILER, encoded))
    stream._close_local()
    stream._grpc_connection.h2_connection.send_headers(stream.stream_id, trailers, end_stream=True)
    await stream._socket.flush()


def _host_of(address: object) -> str:
    return str(address[0]) if isinstance(address, tuple) and address else str(address)


async def _accept(
    listener: anyio.abc.SocketListener,
    handler: _Connection,
    connections: anyio.abc.TaskGroup,
) -> None:
    stats = handler.stats
    while True:
        try:
            stream = await listener.accept()
        except (OSError, anyio.BrokenResourceError) as error:
            # anyio reports the OSError of a failed accept as its cause.
            cause = error if isinstance(error, OSError) else error.__cause__
            if not isinstance(cause, OSError) or cause.errno not in _RESOURCE_ERRNOS:
                raise
            stats.accept_errors += 1
            stats.log_throttled(
                "accept",
                "cannot accept gRPC connections (%s, %d open): retrying",
                errno.errorcode.get(cause.errno or 0, cause),
                stats.open,
            )
            await trio.sleep(ACCEPT_RETRY_DELAY)
            continue
        if stats.open >= stats.limit:
            stats.refused_over_limit += 1
            stats.log_throttled(
                "limit",
                "refusing gRPC connections: MAX_CONNECTIONS=%d are open",
                stats.limit,
            )
            await stream.aclose()
            continue
        stats.open += 1
        connections.start_soon(handler, stream)
