"""The Redis-protocol (RESP2/RESP3) listener of a node: connections, limits and drain.

Rules: this shell only moves bytes and keeps time. The codec (a3redis.core.resp)
turns bytes into requests and replies into bytes; a `RespHandler` (the command
layer) turns requests into replies. Per connection, every complete request
that has arrived goes to the handler in one `run` (so a pipeline becomes
batched reads and writes), and all of their replies leave in one send, in
order. A protocol error answers the complete requests before it, then
`-ERR Protocol error: ...`, and closes the connection, as Redis does.

Limits: at most RESP_MAX_CONNECTIONS connections (one more is answered
`-ERR max number of clients reached` and closed); a connection silent for
RESP_IDLE_TIMEOUT is closed (0: never); unparsed input is bounded by the
codec's limits and MAX_QUERY_BYTES; replies a client leaves unread are
bounded by RESP_MAX_REPLY_BUFFER. Running out of file descriptors pauses
accepting (logged), it never ends the node.

Each connection is one task on a non-blocking socket, waiting with trio's
`wait_readable`. Replies are written straight to the socket; what the kernel
does not take is queued for a writer task started only then, while the
connection goes on reading: a client that writes a long pipeline before it
reads (redis-py's pipeline does) is never deadlocked against us, and one that
never reads is found by the size of its queue, without a timer or a thread.

Shutdown: stop accepting; connections waiting for input close at once; a
`run` in flight finishes (up to SHUTDOWN_GRACE), its replies are sent, and
its connection closes; requests not started by then are not run.
"""

from __future__ import annotations

import errno
import itertools
import logging
import math
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import trio

from a3redis.core.redis_pipeline import protocol_runs
from a3redis.core.resp import ProtocolError, RequestReader, RespLimits, encode, encode_all
from a3redis.core.resp_values import Reply, error
from a3redis.core.throttle import LogThrottle
from a3redis.net.grpc_server import RequestGate

log = logging.getLogger(__name__)

# One read takes what the kernel holds, up to this much: a 16-deep pipeline of
# small commands is one read, a large value a few.
READ_SIZE = 64 * 1024
# Bytes of one connection's input not yet forming complete requests (a request
# still arriving). Redis's client-query-buffer-limit is 1 GiB; this is a
# node's budget for all of gRPC's incomplete messages (INBOUND_BUFFER_LIMIT).
MAX_QUERY_BYTES = 128 * 1024 * 1024
# A closing connection (QUIT, protocol error) has this long to read its last
# replies and hang up, so the kernel does not reset it while they are unread.
CLOSE_LINGER = 2.0
# Out of descriptors or memory: wait this long before accepting again.
ACCEPT_RETRY_DELAY = 0.1
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
LOG_INTERVAL = 10.0
TOO_MANY_CLIENTS = b"-ERR max number of clients reached\r\n"


class RespSession(Protocol):
    """What the listener reads of a handler's per-connection state after each run."""

    @property
    def protocol(self) -> int: ...  # 2 or 3: how this run's replies are encoded

    @property
    def closing(self) -> bool: ...  # send this run's replies, then close (QUIT)


SessionT = TypeVar("SessionT", bound=RespSession)


class RespHandler(Protocol[SessionT]):
    """The command layer: a session per connection, the replies to send, in order (one per
    request, except where Redis sends none: after QUIT, under CLIENT REPLY OFF|SKIP)."""

    def new_session(self, client_id: int, peer: str) -> SessionT: ...

    async def run(self, session: SessionT, requests: list[list[bytes]]) -> list[Reply]: ...


# Called after each run with its requests, their replies and the run's seconds.
Observer = Callable[[Sequence[list[bytes]], Sequence[Reply], float], None]


@dataclass(frozen=True, slots=True)
class RespSettings:
    max_connections: int
    idle_timeout: float  # 0: never
    max_reply_buffer: int
    grace: float  # SHUTDOWN_GRACE
    codec: RespLimits = field(default_factory=RespLimits)


@dataclass
class RespStats:
    """The listener's connections and what ended them, for /metrics."""

    limit: int
    open: int = 0
    accepted: int = 0
    refused_over_limit: int = 0
    accept_errors: int = 0
    closed_idle: int = 0
    closed_reply_buffer: int = 0
    closed_query_buffer: int = 0
    protocol_errors: int = 0
    reply_bytes_queued: int = 0  # over all connections, now
    # Commands run so far: with the gRPC calls, how busy the node is (the pace of copying).
    commands_served: int = 0
    _log: LogThrottle = field(default_factory=lambda: LogThrottle(LOG_INTERVAL))

    def log_throttled(self, what: str, message: str, *args: object) -> None:
        """Log `message` at most once per LOG_INTERVAL for each kind of event."""
        due, held_back = self._log.should_log(what, trio.current_time())
        if due:
            suffix = f" ({held_back} more since the last line)" if held_back else ""
            log.warning(message + suffix, *args)


def codec_limits(max_key_bytes: int, max_value_bytes: int) -> RespLimits:
    """No argument may be longer than the longest key or value the node stores."""
    return RespLimits(max_bulk=max(max_key_bytes, max_value_bytes))


async def serve_resp(
    sock: socket.socket,
    handler: RespHandler[SessionT],
    settings: RespSettings,
    stop: trio.Event,
    observe: Observer | None = None,
    *,
    stats: RespStats | None = None,
    task_status: trio.TaskStatus[RespStats] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve Redis clients on the bound, listening `sock` until `stop`; report the stats
    (`stats`, when the caller made them)."""
    server = _Server(sock, handler, settings, observe, stats)
    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as acceptor:
            acceptor.start_soon(server.accept, connections)
            task_status.started(server.stats)
            await stop.wait()
            acceptor.cancel_scope.cancel()
        trio.lowlevel.notify_closing(sock)
        sock.close()
        deadline = trio.current_time() + settings.grace
        await server.drain(deadline)
        connections.cancel_scope.cancel()


class _Server:
    def __init__(
        self,
        sock: socket.socket,
        handler: RespHandler[Any],
        settings: RespSettings,
        observe: Observer | None,
        stats: RespStats | None,
    ) -> None:
        self.sock = sock
        self.handler = handler
        self.settings = settings
        self.observe = observe
        self.stats = RespStats(settings.max_connections) if stats is None else stats
        self.gate = RequestGate()
        self.live: set[_Connection] = set()
        self.draining = False
        self._ids = itertools.count(1)
        self._all_closed: trio.Event | None = None

    async def accept(self, connections: trio.Nursery) -> None:
        stats = self.stats
        while True:
            try:
                conn, address = self.sock.accept()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.sock)
                continue
            except OSError as failure:
                if failure.errno not in _RESOURCE_ERRNOS:
                    raise
                stats.accept_errors += 1
                stats.log_throttled(
                    "accept",
                    "cannot accept Redis-protocol connections (%s, %d open): retrying",
                    errno.errorcode.get(failure.errno or 0, failure),
                    stats.open,
                )
                await trio.sleep(ACCEPT_RETRY_DELAY)
                continue
            conn.setblocking(False)
            if stats.open >= stats.limit:
                stats.refused_over_limit += 1
                stats.log_throttled(
                    "limit",
                    "refusing Redis-protocol connections: RESP_MAX_CONNECTIONS=%d are open",
                    stats.limit,
                )
                _refuse(conn)
            else:
                stats.open += 1
                stats.accepted += 1
                connection = _Connection(self, conn, next(self._ids), _peer(address))
                connections.start_soon(connection.serve)
            await trio.lowlevel.checkpoint()

    async def drain(self, deadline: float) -> None:
        """Close idle connections, let runs in flight finish, until `deadline`."""
        self.draining = True
        for connection in list(self.live):
            connection.wake()
        await self.gate.close_and_wait(max(0.0, deadline - trio.current_time()))
        if self.live:
            self._all_closed = trio.Event()
            with trio.move_on_at(deadline):
                await self._all_closed.wait()

    def closed(self, connection: _Connection) -> None:
        self.live.discard(connection)
        self.stats.open -= 1
        if not self.live and self._all_closed is not None:
            self._all_closed.set()


class _Connection:
    """One client: read, run, reply, until it hangs up, QUITs, breaks a limit or the node stops."""

    def __init__(self, server: _Server, sock: socket.socket, client_id: int, peer: str) -> None:
        self.server = server
        self.sock = sock
        self.client_id = client_id
        self.peer = peer
        self.last_heard = trio.current_time()
        # Replies the kernel did not take yet, oldest first, and their size.
        self.outbox: deque[bytes | memoryview] = deque()
        self.queued = 0
        self.writing = False
        self.written: trio.Event | None = None  # set when the writer task has ended
        self.broken = False  # the socket failed or the reply buffer overflowed: no more sends
        # Cancelled (by the node's drain, a broken writer or the idle deadline) only while
        # the connection waits for input: one scope for the connection's life, since a
        # scope per wait would cost as much as the rest of a small request's handling.
        self._input = trio.CancelScope()
        self._waiting_input = False
        self._tasks: trio.Nursery | None = None

    async def serve(self) -> None:
        server = self.server
        server.live.add(self)
        try:
            async with trio.open_nursery() as tasks:
                self._tasks = tasks
                polite = False
                with self._input:
                    polite = await self._converse()
                if self._input.cancelled_caught and not (server.draining or self.broken):
                    server.stats.closed_idle += 1
                if polite and not self.broken:
                    await self._close_politely()
                tasks.cancel_scope.cancel()
        except Exception:  # a bug of ours: this connection ends, the node lives
            log.exception("Redis-protocol connection from %s failed", self.peer)
        finally:
            server.stats.reply_bytes_queued -= self.queued
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()
            server.closed(self)

    def wake(self) -> None:
        """Stop waiting for input, if the connection is (the node drains, or the writer broke)."""
        if self._waiting_input:
            self._input.cancel()

    async def _converse(self) -> bool:
        """Serve requests until the connection should close; True to flush and close politely."""
        server = self.server
        reader = RequestReader(server.settings.codec)
        session = server.handler.new_session(self.client_id, self.peer)
        while True:
            try:
                requests = reader.requests()
            except ProtocolError as failure:
                server.stats.protocol_errors += 1
                self._send(encode(error(failure.text), session.protocol))
                return True
            if requests:
                if server.draining:
                    return False  # requests not started when the node stops are not run
                for run in protocol_runs(requests):
                    replies = await self._run(session, run)
                    if replies is None:
                        return True
                    self._send(encode_all(replies, session.protocol))
                    if session.closing or self.broken:
                        return not self.broken
                continue
            if reader.buffered > MAX_QUERY_BYTES:
                server.stats.closed_query_buffer += 1
                server.stats.log_throttled(
                    "query",
                    "closing Redis-protocol connection from %s: a request over %d bytes",
                    self.peer,
                    MAX_QUERY_BYTES,
                )
                return False
            data = await self._receive()
            if not data:
                return False
            reader.feed(data)

    async def _run(self, session: RespSession, requests: list[list[bytes]]) -> list[Reply] | None:
        server = self.server
        started = time.perf_counter()
        replies: list[Reply] | None = None
        with server.gate:
            try:
                answered = await server.handler.run(session, requests)
            except Exception:
                log.exception("Redis-protocol command failed (connection from %s)", self.peer)
            else:
                # Fewer replies than requests is Redis's way after QUIT and under
                # CLIENT REPLY OFF|SKIP; more is a bug.
                if len(answered) <= len(requests):
                    replies = answered
                else:
                    log.error(
                        "the command handler answered %d replies to %d requests",
                        len(answered),
                        len(requests),
                    )
        server.stats.commands_served += len(requests)
        if replies is None:
            # The client can no longer tell which reply is whose: say so and close.
            self._send(encode(error("internal error; closing the connection"), 2))
            return None
        if server.observe is not None:
            server.observe(requests, replies, time.perf_counter() - started)
        return replies

    async def _receive(self) -> bytes:
        """The next bytes from the client; b"" once it hung up, went idle or the node drains."""
        sock = self.sock
        server = self.server
        idle = server.settings.idle_timeout
        waited = False
        while True:
            try:
                data = sock.recv(READ_SIZE)
            except BlockingIOError:
                pass
            except OSError:
                return b""
            else:
                self.last_heard = trio.current_time()
                if not waited:
                    # Bytes were waiting without a wait: give the other tasks their turn
                    # first (after a wait they have had it).
                    await trio.lowlevel.checkpoint()
                return data
            if server.draining or self.broken:
                return b""
            if idle > 0:
                self._input.deadline = self.last_heard + idle
            self._waiting_input = True
            try:
                await trio.lowlevel.wait_readable(sock)
            finally:
                self._waiting_input = False
            waited = True
            if idle > 0:
                self._input.deadline = math.inf

    def _send(self, data: bytes) -> None:
        """Send now what the kernel takes; queue the rest for the writer task."""
        if self.broken or not data:
            return
        if not self.outbox:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.broken = True
                return
            if sent == len(data):
                return
            self._queue(memoryview(data)[sent:])
        else:
            self._queue(data)

    def _queue(self, data: bytes | memoryview) -> None:
        settings = self.server.settings
        stats = self.server.stats
        self.outbox.append(data)
        self.queued += len(data)
        stats.reply_bytes_queued += len(data)
        if self.queued > settings.max_reply_buffer:
            stats.closed_reply_buffer += 1
            stats.log_throttled(
                "reply",
                "closing Redis-protocol connection from %s: %d bytes of replies unread "
                "(RESP_MAX_REPLY_BUFFER=%d)",
                self.peer,
                self.queued,
                settings.max_reply_buffer,
            )
            self.broken = True
            return
        if not self.writing and self._tasks is not None:
            self.writing = True
            self.written = trio.Event()
            self._tasks.start_soon(self._write)

    async def _write(self) -> None:
        """Send the queued replies as the client reads them."""
        sock = self.sock
        outbox = self.outbox
        stats = self.server.stats
        try:
            while outbox and not self.broken:
                await trio.lowlevel.wait_writable(sock)
                if len(outbox) > 1:
                    joined = b"".join(outbox)
                    outbox.clear()
                    outbox.append(joined)
                try:
                    sent = sock.send(outbox[0])
                except BlockingIOError:
                    continue
                except OSError:
                    self.broken = True
                    break
                self.queued -= sent
                stats.reply_bytes_queued -= sent
                if sent == len(outbox[0]):
                    outbox.popleft()
                else:
                    outbox[0] = memoryview(outbox[0])[sent:]
        finally:
            self.writing = False
            if self.written is not None:
                self.written.set()
        if self.broken:
            self.wake()  # the reader has nobody left to serve

    async def _close_politely(self) -> None:
        """Send what is queued, end our side, and read until the client hangs up (bounded).

        Closing with unread input makes the kernel reset the connection, and
        a reset can reach the client before it has read our last replies.
        """
        sock = self.sock
        with trio.move_on_after(CLOSE_LINGER):
            if self.writing and self.written is not None:
                await self.written.wait()
            if self.broken or self.server.draining:
                return
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                return
            for _ in range(64):  # at most 64 reads of READ_SIZE before we give up on it
                try:
                    if not sock.recv(READ_SIZE):
                        return
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(sock)
                except OSError:
                    return


def _refuse(conn: socket.socket) -> None:
    """Tell a client over the connection limit why, and close (as Redis does)."""
    try:
        conn.send(TOO_MANY_CLIENTS)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    conn.close()


def _peer(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
