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

One task, the reactor, serves every connection: it waits on one selector
(epoll) holding the connections that wait for input, and on each wake-up
reads, runs and answers every ready connection in turn. A task per
connection would cost a trip through trio's scheduler per request, more than
the rest of a small request's handling. A run the handler can answer at once
(reads of keys only this node holds) is answered in the same pass; one that
waits for the disk (a write's group commit) is answered by the store's
callback; only a run that waits for peers or for the node (a quorum, SCAN)
gets a task. While its run is in flight a connection is out of the selector,
so its requests are run in order and a client's pipeline never overtakes
itself.

Replies leave together once the work that made them is over: every reply
made in a pass of the reactor, or by the callbacks of one group commit, is
sent by one task right after it, one send per connection (as Redis writes
its replies before it sleeps): sent one by one between the handler's work,
they cost the node more time in the kernel (benchmarks/README.md, "Replies
sent together"). What the kernel does not take is queued for a writer task
started only then, while the connection goes on reading: a client that
writes a long pipeline before it reads (redis-py's pipeline does) is never
deadlocked against us, and one that never reads is found by the size of its
queue, without a timer or a thread. Idle connections are found by a sweep
(RESP_IDLE_TIMEOUT, checked a few times per timeout).

The handler may act on other connections through the listener it is bound
to (`ListenerControl`): close one at once (CLIENT KILL), or send one bytes
that answer none of its requests (MONITOR's lines), queued with the pass's
replies and bounded by the same reply buffer. An observer, if given, sees
each run with its session after its replies are queued.

With TLS (TLS_CERT_FILE) the port speaks only TLS: each connection's TLS
session runs over memory buffers (ssl.MemoryBIO) that the reactor fills and
drains with the same recv and send calls, so a TLS connection costs no task
either; a handshake still unfinished after TLS_HANDSHAKE_TIMEOUT is dropped,
and a failed one closes the connection (counted, logged at a limited rate).

Shutdown: stop accepting; connections waiting for input close at once; a
run in flight finishes (up to SHUTDOWN_GRACE), its replies are sent, and
its connection closes; requests not started by then are not run.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import selectors
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import trio

from a3redis.core.redis_pipeline import protocol_runs
from a3redis.core.resp import ProtocolError, RequestReader, RespLimits, encode, encode_all
from a3redis.core.resp_values import Reply, error
from a3redis.core.throttle import LogThrottle
from a3redis.net.grpc_server import RequestGate
from a3redis.net.tls import TLS_HANDSHAKE_TIMEOUT

log = logging.getLogger(__name__)

# One read takes what the kernel holds, up to this much: a 16-deep pipeline of
# small commands is one read, a large value a few.
READ_SIZE = 64 * 1024
# Bytes of one connection's input not yet forming complete requests (a request
# still arriving). Redis's client-query-buffer-limit is 1 GiB; this is a
# node's budget for all of gRPC's incomplete messages (INBOUND_BUFFER_LIMIT).
MAX_QUERY_BYTES = 128 * 1024 * 1024
# Input read while a run of the same connection is in flight, at most (then
# the connection leaves the selector until the run is answered).
MAX_READ_AHEAD = 1024 * 1024
# A closing connection (QUIT, protocol error) has this long to read its last
# replies and hang up, so the kernel does not reset it while they are unread.
CLOSE_LINGER = 2.0
# The reactor lets the node's other tasks run after serving this many connections.
FAIR_SHARE = 64
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

# A run's replies, in order (one per request, except where Redis sends none:
# after QUIT, under CLIENT REPLY OFF|SKIP); None when the handler failed.
Answer = Callable[[list[Reply] | None], None]
# What must still be awaited to answer a run (the listener awaits it in a task).
Remainder = Callable[[], Awaitable[list[Reply]]]


class ListenerControl(Protocol):
    """What a handler may ask of the listener that serves it."""

    def close_client(self, client_id: int) -> bool: ...  # CLIENT KILL: False if none

    # Send `data` (protocol bytes) to client `client_id` with this pass's replies
    # (MONITOR's lines); False if that connection is gone or closing.
    def send_to(self, client_id: int, data: bytes) -> bool: ...


class RespHandler(Protocol[SessionT]):
    """The command layer: a session per connection, and the replies to each run."""

    def bind(self, listener: ListenerControl) -> None: ...  # once, by the listener

    def new_session(self, client_id: int, peer: str) -> SessionT: ...

    def start(
        self, session: SessionT, requests: list[list[bytes]], answer: Answer
    ) -> list[Reply] | Remainder | None:
        """Begin a run: its replies now, a remainder to await, or None when `answer`
        will be called with them (once, possibly before `start` returns)."""
        ...


# Called after each run with the connection's session, the run's requests, their
# replies and the run's seconds.
Observer = Callable[[Any, Sequence[list[bytes]], Sequence[Reply], float], None]


@dataclass(frozen=True, slots=True)
class RespSettings:
    max_connections: int
    idle_timeout: float  # 0: never
    max_reply_buffer: int
    grace: float  # SHUTDOWN_GRACE
    codec: RespLimits = field(default_factory=RespLimits)
    # TLS_CERT_FILE's server context (None: plain text); reloaded in place on SIGHUP.
    tls: ssl.SSLContext | None = None


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
    tls_failures: int = 0  # handshakes that failed or stalled, TLS sessions that broke
    reply_bytes_queued: int = 0  # over all connections, now
    # Commands run so far: with the gRPC calls, how busy the node is (the pace of copying).
    commands_served: int = 0
    bytes_received: int = 0  # as read from the sockets (TLS records under TLS)
    bytes_sent: int = 0  # as the sockets took them
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
    with _pollable_selector() as selector:
        server = _Server(sock, selector, handler, settings, observe, stats)
        handler.bind(server)
        try:
            async with trio.open_nursery() as connections:
                server.tasks = connections
                connections.start_soon(server.react)
                connections.start_soon(server.send_replies)
                if settings.idle_timeout > 0 or settings.tls is not None:
                    connections.start_soon(server.sweep)
                async with trio.open_nursery() as acceptor:
                    acceptor.start_soon(server.accept)
                    task_status.started(server.stats)
                    await stop.wait()
                    acceptor.cancel_scope.cancel()
                trio.lowlevel.notify_closing(sock)
                sock.close()
                deadline = trio.current_time() + settings.grace
                await server.drain(deadline)
                connections.cancel_scope.cancel()
        finally:
            for connection in list(server.live.values()):
                connection.close()


class _Server:
    def __init__(
        self,
        sock: socket.socket,
        selector: selectors.BaseSelector,
        handler: RespHandler[Any],
        settings: RespSettings,
        observe: Observer | None,
        stats: RespStats | None,
    ) -> None:
        self.sock = sock
        self.selector = selector
        self.handler = handler
        self.settings = settings
        self.observe = observe
        self.stats = RespStats(settings.max_connections) if stats is None else stats
        self.gate = RequestGate()
        self.live: dict[int, _Connection] = {}  # by client id
        self.draining = False
        self.tasks: trio.Nursery | None = None
        self._ids = itertools.count(1)
        self._all_closed: trio.Event | None = None
        # Connections with replies made since `send_replies` last ran, in order.
        self.unsent: list[_Connection] = []
        self._replies_made = trio.Event()

    async def accept(self) -> None:
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
            _reply_without_delay(conn)
            if stats.open >= stats.limit:
                stats.refused_over_limit += 1
                stats.log_throttled(
                    "limit",
                    "refusing Redis-protocol connections: RESP_MAX_CONNECTIONS=%d are open",
                    stats.limit,
                )
                _refuse(conn, self.settings.tls is None)
            else:
                self._admit(conn, address)
            await trio.lowlevel.checkpoint()

    def _admit(self, conn: socket.socket, address: object) -> None:
        """Serve a new connection; one that cannot be set up is closed, and the node lives."""
        stats = self.stats
        try:
            connection = _Connection(self, conn, next(self._ids), _peer(address))
        except Exception:  # a bug of ours in setting up its session: this client only
            log.exception("cannot serve the Redis-protocol connection from %s", _peer(address))
            stats.accept_errors += 1
            conn.close()
            return
        stats.open += 1
        stats.accepted += 1
        self.live[connection.client_id] = connection
        try:
            connection.listen()
        except OSError as failure:  # the kernel refused the selector (ENOMEM, ENOSPC)
            stats.accept_errors += 1
            stats.log_throttled(
                "listen",
                "cannot watch Redis-protocol connection from %s: %s",
                connection.peer,
                failure,
            )
            connection.close()

    async def react(self) -> None:
        """Serve every connection that has input, each time the selector says some have."""
        selector = self.selector
        selector_fd: int = getattr(selector, "fileno")()  # noqa: B009 (see _pollable_selector)
        while True:
            await trio.lowlevel.wait_readable(selector_fd)
            # One reading of the clock per pass: what a connection's idle time needs.
            now = trio.current_time()
            for served, (key, _) in enumerate(selector.select(0), 1):
                connection: _Connection = key.data
                if not connection.listening:
                    continue  # closed (or busy) since the selector answered
                try:
                    connection.readable(now)
                except Exception:  # a bug of ours: this connection ends, the node lives
                    log.exception("Redis-protocol connection from %s failed", connection.peer)
                    connection.close()
                if served % FAIR_SHARE == 0:
                    await trio.lowlevel.checkpoint()  # let the node's other tasks run too

    async def sweep(self) -> None:
        """Close connections silent for RESP_IDLE_TIMEOUT while waiting for input, and
        those whose TLS handshake has taken longer than TLS_HANDSHAKE_TIMEOUT."""
        idle = self.settings.idle_timeout
        interval = min(1.0, TLS_HANDSHAKE_TIMEOUT / 4, *([idle / 4] if idle > 0 else []))
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            for connection in list(self.live.values()):
                if idle > 0 and connection.waiting_for_input and connection.last_heard < now - idle:
                    self.stats.closed_idle += 1
                    connection.close()
                elif (
                    connection.tls is not None
                    and not connection.tls.established
                    and connection.accepted_at < now - TLS_HANDSHAKE_TIMEOUT
                ):
                    self.stats.tls_failures += 1
                    connection.close()

    def reply_later(self, connection: _Connection) -> None:
        """`connection` has replies to send once the current pass or commit is over."""
        self.unsent.append(connection)
        self._replies_made.set()

    async def send_replies(self) -> None:
        """Send the replies of each pass or commit once it is over, together."""
        while True:
            await self._replies_made.wait()
            self._replies_made = trio.Event()
            unsent, self.unsent = self.unsent, []
            for connection in unsent:
                connection.send_unsent()

    def spawn(self, task: Callable[[], Awaitable[None]]) -> None:
        assert self.tasks is not None
        self.tasks.start_soon(task)

    async def drain(self, deadline: float) -> None:
        """Close idle connections, let runs in flight finish, until `deadline`."""
        self.draining = True
        for connection in list(self.live.values()):
            if connection.waiting_for_input:
                connection.close()
        await self.gate.close_and_wait(max(0.0, deadline - trio.current_time()))
        if self.live:
            self._all_closed = trio.Event()
            with trio.move_on_at(deadline):
                await self._all_closed.wait()

    def close_client(self, client_id: int) -> bool:
        """Close the connection of client `client_id` at once, what it has not been
        sent included (CLIENT KILL); False if there is none."""
        connection = self.live.get(client_id)
        if connection is None:
            return False
        connection.close()
        return True

    def send_to(self, client_id: int, data: bytes) -> bool:
        """Queue `data` for client `client_id` as a reply is (bounded by its reply
        buffer); False if the connection is gone or closing."""
        connection = self.live.get(client_id)
        if connection is None or connection.closing or connection.closed:
            return False
        connection.push(data)
        return not (connection.broken or connection.closed)

    def closed(self, connection: _Connection) -> None:
        self.live.pop(connection.client_id, None)
        self.stats.open -= 1
        if not self.live and self._all_closed is not None:
            self._all_closed.set()


class _TlsSession:
    """TLS for one connection over memory buffers: the reactor moves the ciphertext
    through the socket itself, so a TLS connection is served like a plain one."""

    __slots__ = ("established", "incoming", "outgoing", "session")

    def __init__(self, context: ssl.SSLContext) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.session = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.established = False

    def receive(self, ciphertext: bytes) -> bytes:
        """The plaintext that `ciphertext` completes (b"" while the handshake goes on);
        ssl.SSLError when the session fails, EOFError when the client closed it."""
        self.incoming.write(ciphertext)
        if not self.established:
            try:
                self.session.do_handshake()
            except ssl.SSLWantReadError:
                return b""
            self.established = True
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self.session.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                raise EOFError("the client closed the TLS session") from None
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def seal(self, plaintext: bytes) -> bytes:
        """`plaintext` as TLS records, ready to send."""
        self.session.write(plaintext)
        return self.outgoing.read()

    def to_send(self) -> bytes:
        """What TLS itself has to send (handshake messages, alerts)."""
        return self.outgoing.read()

    def close_notify(self) -> bytes:
        """The alert that ends the session, ready to send."""
        with contextlib.suppress(ssl.SSLError):  # the client's own alert is not awaited
            self.session.unwrap()
        return self.outgoing.read()


class _Unanswered:
    """Not answered yet: the handler calls back, or a task awaits the rest."""


_UNANSWERED = _Unanswered()


class _Connection:
    """One client: read, run, reply, until it hangs up, QUITs, breaks a limit or the node stops.

    It listens (is in the selector) unless it is closing, or a run of its is in flight
    and it has read MAX_READ_AHEAD bytes ahead.
    """

    def __init__(self, server: _Server, sock: socket.socket, client_id: int, peer: str) -> None:
        self.server = server
        self.sock = sock
        self.client_id = client_id
        self.peer = peer
        self.last_heard = self.accepted_at = trio.current_time()
        context = server.settings.tls
        self.tls = None if context is None else _TlsSession(context)
        self.reader = RequestReader(server.settings.codec)
        self.session = server.handler.new_session(client_id, peer)
        # Runs read but not started yet, and the one in flight (with its start time).
        self.runs: deque[list[list[bytes]]] = deque()
        self.running: list[list[bytes]] | None = None
        self.run_began = 0.0
        # Replies the handler gave before `start` returned (see RespHandler.start).
        self._early: list[Reply] | _Unanswered | None = _UNANSWERED
        self._starting = False
        # Replies made in this pass or commit, sent when it is over (_Server.send_replies),
        # and their size.
        self.unsent: list[bytes] = []
        self.unsent_bytes = 0
        # Replies the kernel did not take yet, oldest first, and their size.
        self.outbox: deque[bytes | memoryview] = deque()
        self.queued = 0
        self.writing = False
        self.written: trio.Event | None = None  # set when the writer task has ended
        self.broken = False  # the socket failed or the reply buffer overflowed: no more sends
        self.listening = False
        self.closing = False  # closing politely: nothing more is read or run
        self.closed = False

    # ----- reading and running ---------------------------------------------------------------

    @property
    def waiting_for_input(self) -> bool:
        """Listening with no run in flight (nor queued): the client is to speak next."""
        return self.listening and self.running is None and not self.runs

    def listen(self) -> None:
        if not (self.listening or self.closing or self.closed):
            self.server.selector.register(self.sock, selectors.EVENT_READ, self)
            self.listening = True

    def _stop_listening(self) -> None:
        if self.listening:
            self.server.selector.unregister(self.sock)
            self.listening = False

    def readable(self, now: float) -> None:
        """Read what the client sent (the selector says it has) at `now`, and run it."""
        try:
            data = self.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        if not data:
            self.close()
            return
        self.server.stats.bytes_received += len(data)
        self.last_heard = now
        if self.tls is not None:
            data = self._decrypt(data)
            if not data:
                return  # the handshake goes on, or the session ended
        self.reader.feed(data)
        if self.running is None:
            self._run_next()
        elif self.reader.buffered > MAX_READ_AHEAD:
            # A run is in flight and the client keeps writing: hold its input in
            # the kernel until the run is answered.
            self._stop_listening()

    def _run_next(self) -> None:
        """Run what was read, in order, until a run must wait or none is left."""
        server = self.server
        while True:
            # `exhausted` first: most runs end with nothing more read, and then there
            # is nothing to parse.
            if not self.runs and (self.reader.exhausted or not self._take_requests()):
                break
            if self.closing or self.closed:
                return
            if server.draining:
                self.close()  # requests not started when the node stops are not run
                return
            run = self.runs.popleft()
            replies = self._start(run)
            if isinstance(replies, _Unanswered):
                # It stays in the selector: what the client sends meanwhile is read
                # ahead (up to MAX_READ_AHEAD), and a run of a client that waits
                # for its replies costs no selector change.
                return
            if not self._answer(run, replies):
                return
        self.listen()

    def _take_requests(self) -> bool:
        """Queue the complete requests read so far as runs; False when there are none."""
        server = self.server
        try:
            requests = self.reader.requests()
        except ProtocolError as failure:
            # The requests before the bad bytes have been answered: now the error.
            server.stats.protocol_errors += 1
            self._send(encode(error(failure.text), self.session.protocol))
            self.close_politely()
            return False
        if requests:
            self.runs.extend(protocol_runs(requests))
            return True
        if self.reader.buffered > MAX_QUERY_BYTES:
            server.stats.closed_query_buffer += 1
            server.stats.log_throttled(
                "query",
                "closing Redis-protocol connection from %s: a request over %d bytes",
                self.peer,
                MAX_QUERY_BYTES,
            )
            self.close()
        return False

    def _start(self, run: list[list[bytes]]) -> list[Reply] | _Unanswered | None:
        """The run's replies if they are ready (None: the handler failed), else _UNANSWERED."""
        server = self.server
        server.gate.enter()
        self.running = run
        self.run_began = time.perf_counter()
        self._early = _UNANSWERED
        self._starting = True
        try:
            started = server.handler.start(self.session, run, self._answered_later)
        except Exception:
            log.exception("Redis-protocol command failed (connection from %s)", self.peer)
            started = None
            self._early = None
        finally:
            self._starting = False
        if started is None:
            if isinstance(self._early, _Unanswered):
                return _UNANSWERED  # the handler calls back
            started = self._early
        elif not isinstance(started, list):
            remainder = started

            async def finish() -> None:
                try:
                    replies: list[Reply] | None = await remainder()
                except Exception:
                    log.exception("Redis-protocol command failed (connection from %s)", self.peer)
                    replies = None
                self._answered_later(replies)

            server.spawn(finish)
            return _UNANSWERED
        self.running = None
        server.gate.leave()
        return started

    def _answered_later(self, replies: list[Reply] | None) -> None:
        if self._starting:
            self._early = replies
            return
        run = self.running
        assert run is not None, "a run answered twice"
        self.running = None
        self.server.gate.leave()
        if not self.closed and self._answer(run, replies):
            self._run_next()

    def _answer(self, run: list[list[bytes]], replies: list[Reply] | None) -> bool:
        """Send a run's replies; False once the connection is closing."""
        server = self.server
        server.stats.commands_served += len(run)
        # Fewer replies than requests is Redis's way after QUIT and under
        # CLIENT REPLY OFF|SKIP; more is a bug.
        if replies is not None and len(replies) > len(run):
            log.error(
                "the command handler answered %d replies to %d requests", len(replies), len(run)
            )
            replies = None
        if replies is None:
            # The client can no longer tell which reply is whose: say so and close.
            self._send(encode(error("internal error; closing the connection"), 2))
            self.close_politely()
            return False
        self._send(encode_all(replies, self.session.protocol))
        if server.observe is not None:
            # After the replies are queued: what the observer sends this connection
            # (MONITOR's line for its own command) follows them, as in Redis.
            server.observe(self.session, run, replies, time.perf_counter() - self.run_began)
        if self.broken:
            self.close()
            return False
        if self.session.closing:
            self.close_politely()
            return False
        if server.draining:
            self.close()
            return False
        return True

    # ----- writing -----------------------------------------------------------------------------

    def _decrypt(self, data: bytes) -> bytes:
        """The plaintext in `data` from a TLS client; what TLS itself answers (the
        handshake) is sent. A failed or ended session closes the connection."""
        assert self.tls is not None
        try:
            plaintext = self.tls.receive(data)
        except (ssl.SSLError, EOFError) as failure:
            if not isinstance(failure, EOFError):
                stats = self.server.stats
                stats.tls_failures += 1
                stats.log_throttled(
                    "tls", "TLS with Redis-protocol client %s failed: %s", self.peer, failure
                )
            self._send_raw(self.tls.to_send())
            self.close()
            return b""
        self._send_raw(self.tls.to_send())
        return plaintext

    def push(self, data: bytes) -> None:
        """Send `data`, which answers no request of this connection (MONITOR's lines),
        with the replies of this pass or commit; a connection whose socket failed, or
        whose reply buffer overflowed, closes."""
        self._send(data)
        if self.broken and not (self.closing or self.closed):
            self.close()

    def _send(self, data: bytes) -> None:
        """Queue `data` to be sent once this pass or commit is over (sealed first, under TLS)."""
        if self.tls is not None and data and not (self.broken or self.closed):
            data = self.tls.seal(data)
        self._send_raw(data)

    def _send_raw(self, data: bytes) -> None:
        if self.broken or self.closed or not data:
            return
        if not self.unsent:
            self.server.reply_later(self)
        self.unsent.append(data)
        self.unsent_bytes += len(data)
        if self.unsent_bytes > self.server.settings.max_reply_buffer:
            # A pass's replies beyond the reply buffer's bound go now, as the kernel
            # takes them: what it does not take counts against the bound.
            self._send_now()

    def send_unsent(self) -> None:
        """Send the replies made in the pass or commit just over (a connection whose
        socket failed meanwhile closes, as nobody is left to serve)."""
        self._send_now()
        if self.broken and not (self.closing or self.closed):
            self.close()

    def _send_now(self) -> None:
        """Send what the kernel takes of the replies not sent yet; queue the rest for
        the writer task."""
        unsent = self.unsent
        if not unsent:
            return
        data = unsent[0] if len(unsent) == 1 else b"".join(unsent)
        unsent.clear()
        self.unsent_bytes = 0
        if self.broken or self.closed:
            return
        if self.outbox:
            self._queue(data)
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.broken = True
            return
        self.server.stats.bytes_sent += sent
        if sent < len(data):
            self._queue(memoryview(data)[sent:])

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
        if not self.writing:
            self.writing = True
            self.written = trio.Event()
            self.server.spawn(self._write)

    async def _write(self) -> None:
        """Send the queued replies as the client reads them."""
        sock = self.sock
        outbox = self.outbox
        stats = self.server.stats
        try:
            while outbox and not (self.broken or self.closed):
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
                stats.bytes_sent += sent
                if sent == len(outbox[0]):
                    outbox.popleft()
                else:
                    outbox[0] = memoryview(outbox[0])[sent:]
        except trio.ClosedResourceError:
            pass  # closed meanwhile
        finally:
            self.writing = False
            if self.written is not None:
                self.written.set()
        if self.broken and not self.closing:
            self.close()  # nobody is left to serve

    # ----- closing -----------------------------------------------------------------------------

    def close_politely(self) -> None:
        """Send what is queued, then close (see `_linger`); nothing more is read or run."""
        if self.closing or self.closed:
            return
        self._send_now()  # the last replies go before our side ends
        self.closing = True
        self._stop_listening()
        self.runs.clear()
        if self.broken:
            self.close()
        else:
            self.server.spawn(self._linger)

    async def _linger(self) -> None:
        """Send what is queued, end our side, and read until the client hangs up (bounded).

        Closing with unread input makes the kernel reset the connection, and
        a reset can reach the client before it has read our last replies.
        """
        sock = self.sock
        try:
            with trio.move_on_after(CLOSE_LINGER):
                if self.writing and self.written is not None:
                    await self.written.wait()
                if self.broken or self.server.draining:
                    return
                if self.tls is not None:
                    sock.send(self.tls.close_notify())  # best effort: the alert is small
                sock.shutdown(socket.SHUT_WR)
                for _ in range(64):  # at most 64 reads of READ_SIZE before we give up on it
                    try:
                        if not sock.recv(READ_SIZE):
                            return
                    except BlockingIOError:
                        await trio.lowlevel.wait_readable(sock)
        except (OSError, trio.ClosedResourceError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Close at once (a run still in flight finds the connection closed)."""
        if self.closed:
            return
        if self.unsent and not self.broken:
            # Replies made just before (a run that finished while the node stops): the
            # kernel takes them now or never.
            with contextlib.suppress(OSError):
                self.server.stats.bytes_sent += self.sock.send(b"".join(self.unsent))
        self.unsent.clear()
        self.unsent_bytes = 0
        self.closed = True
        self._stop_listening()
        self.runs.clear()
        stats = self.server.stats
        stats.reply_bytes_queued -= self.queued
        self.queued = 0
        self.outbox.clear()
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()
        self.server.closed(self)


def _pollable_selector() -> selectors.BaseSelector:
    """The platform's selector, if trio can wait on it as on a socket (epoll, kqueue)."""
    selector = selectors.DefaultSelector()
    if not hasattr(selector, "fileno"):
        selector.close()
        raise RuntimeError("the Redis-protocol listener needs epoll or kqueue")
    return selector


def _reply_without_delay(conn: socket.socket) -> None:
    """Turn Nagle's algorithm off, as Redis does: a reply must not wait for the
    client's acknowledgement of the one before (a pipelining client's, above all)."""
    if conn.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):  # the client may be gone already
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _refuse(conn: socket.socket, tell: bool) -> None:
    """Tell a client over the connection limit why (not in plain text to a TLS client),
    and close (as Redis does)."""
    try:
        if tell:
            conn.send(TOO_MANY_CLIENTS)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    conn.close()


def _peer(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
