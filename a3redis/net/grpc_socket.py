"""purerpc's connection socket with trio-level plumbing inside each gRPC stream.

Rules: what purerpc does on a connection stays purerpc's (h2 framing, the
call wrappers, the bytes on the wire); this module replaces how events get
from the connection's reader task to a stream's task and how the writer task
is woken, and bounds what a connection may hold (below). purerpc does both
through anyio objects made per stream and per wake-up (a memory object
stream pair per stream, an Event per flow-control wait and per writer wake,
each looking its backend up), which py-spy showed as a sizeable share of a
node's CPU per request under load. Both a3redis's server
(a3redis.net.grpc_server) and its peer channels (a3redis.net.channels) use
`LeanSocket`; anything that talks to a node sees the same bytes either way.

A connection that ends fails what waits on it at once: when the reader
meets the end of the stream or a reset, the writer cannot send, or the
peer sends GOAWAY (purerpc ignored all three, so a call in flight waited
for its deadline), every open stream ends with ConnectionLostError (after
what had already arrived on it is read), a call started afterwards is
refused before a byte is sent, and `when_lost` tells the owner (a channel
pool forgets the connection). `unsent` marks the calls that never reached
the peer: started on a lost connection, or above the last stream a GOAWAY
says was processed. On the server side h2 answers every PING and the
KeepalivePolicy scores them (GOAWAY ENHANCE_YOUR_CALM past its strikes).

Bounded per connection, by construction (a connection may live for days and
carry millions of calls):
- a stream is in the socket's stream table from its first headers until it
  is closed both ways, or until the peer resets it (purerpc ignores
  RST_STREAM, so a call a client cancelled stayed in the table, with its
  read buffer and a handler waiting for a message that never came);
- a server connection allows MAX_CONCURRENT_STREAMS streams at once
  (purerpc allowed 65,536, so header-only streams alone could hold a node's
  memory);
- a compressed message inflates to at most the message limit (purerpc
  inflated without a bound, so a small request could become a huge value);
- the request bytes a server holds while messages are still incomplete, over
  all its connections, stay within an InboundBudget: past it, the stream
  holding the most is reset (ENHANCE_YOUR_CALM, which gRPC clients report
  as RESOURCE_EXHAUSTED). purerpc grants each connection a 1 GiB window and
  frees it only as whole messages are read, so a client sending the starts
  of many large messages made a node hold up to 1 GiB per connection;
- h2 remembers how each of the last CLOSED_STREAMS_REMEMBERED streams
  closed, to answer frames still in flight when a stream closed; h2 keeps
  65,536 by default, so every long-lived connection grew for its first
  65,536 streams (issue 13). The figures behind these bounds are in
  benchmarks/README.md.
"""

from __future__ import annotations

import contextlib
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio.abc
import h2.exceptions
import purerpc.grpclib.connection
import trio
from h2.errors import ErrorCodes
from h2.events import PingReceived
from h2.utilities import SizeLimitDict
from purerpc.grpc_proto import GRPCProtoSocket, GRPCProtoStream
from purerpc.grpc_socket import GRPCStreamState, SocketWrapper
from purerpc.grpclib.buffers import MessageReadBuffer
from purerpc.grpclib.config import GRPCConfiguration
from purerpc.grpclib.events import (
    RequestEnded,
    RequestReceived,
    ResponseEnded,
    WindowUpdated,
)
from purerpc.grpclib.exceptions import (
    MessageTooLargeError,
    ProtocolError,
    StreamClosedError,
    UnsupportedMessageEncodingError,
)

from a3redis.net import h2_tuning

# Frames a peer sent before it saw a stream close arrive within a round trip;
# far fewer streams than this close in one round trip on one connection. A
# frame for a stream forgotten here is answered with RST_STREAM, as for any
# closed stream, and the connection goes on.
CLOSED_STREAMS_REMEMBERED = 256
# Streams one client connection may have open at once. grpcio queues calls
# beyond the peer's limit; a peer link has at most a handful out.
MAX_CONCURRENT_STREAMS = 128


class BoundedMessageReadBuffer(MessageReadBuffer):  # type: ignore[misc]
    """purerpc's message parser, inflating a compressed message only up to the message limit."""

    def decompress(self, data: bytes) -> bytes:
        encoding = self._message_encoding
        if encoding not in ("gzip", "deflate"):
            raise UnsupportedMessageEncodingError(f"unsupported message encoding {encoding!r}")
        limit: int = self._max_message_length
        # 32 + 15: a zlib or a gzip header, whichever the message has.
        inflater = zlib.decompressobj(wbits=32 + zlib.MAX_WBITS)
        try:
            inflated = inflater.decompress(data, limit + 1)
        except zlib.error as error:
            raise ProtocolError(f"a {encoding} message that does not inflate: {error}") from None
        if len(inflated) > limit or inflater.unconsumed_tail:
            raise MessageTooLargeError(
                f"a {encoding} message inflates to more than the limit of {limit} bytes"
            )
        return inflated


# purerpc makes each stream's parser from this module attribute.
purerpc.grpclib.connection.MessageReadBuffer = BoundedMessageReadBuffer


class InboundBudget:
    """The bytes of incomplete request messages a server holds, over every connection."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.streams_reset = 0
        self.frame_connections_closed = 0  # replica-frames connections closed past the limit


class KeepalivePolicy:
    """Which client pings a server accepts (grpc core's ping-abuse rules, another interval).

    A ping is too soon when it comes less than `min_interval` after the
    previous one with nothing sent by the server in between; the
    (`max_strikes` + 1)th too-soon ping is answered with GOAWAY
    ENHANCE_YOUR_CALM, debug data "too_many_pings", and the connection is
    closed. Pings are allowed with or without calls open. Counters cover
    every connection of the server.
    """

    def __init__(self, min_interval: float, max_strikes: int) -> None:
        self.min_interval = min_interval
        self.max_strikes = max_strikes
        self.pings = 0
        self.too_many_pings = 0

    def ping(self, score: PingScore, now: float, sent_since_last: bool) -> bool:
        """Score a ping received at `now`; True when the connection must be sent away
        (once per connection)."""
        self.pings += 1
        if sent_since_last:
            score.strikes = 0
        elif now - score.last_ping < self.min_interval:
            score.strikes += 1
        score.last_ping = now
        if score.strikes <= self.max_strikes or score.sent_away:
            return False
        score.sent_away = True
        self.too_many_pings += 1
        return True


class PingScore:
    """One connection's record under a KeepalivePolicy."""

    __slots__ = ("last_ping", "sent_away", "strikes")

    def __init__(self) -> None:
        self.last_ping = -float("inf")
        self.strikes = 0
        self.sent_away = False


class StreamResetError(StreamClosedError):  # type: ignore[misc]
    """The peer reset this stream (RST_STREAM): nothing more comes or goes on it."""

    def __init__(self, message: str) -> None:
        super().__init__(stream_id=None, error_code=None)
        self.args = (message,)


class ConnectionLostError(StreamResetError):
    """The connection ended (closed, reset, or the peer sent GOAWAY) before this call's
    answer came. `unsent`: the call never reached the peer (it was started on a connection
    already lost, or the peer's GOAWAY said it had not processed it), so sending it again
    on a new connection cannot do it twice."""

    def __init__(self, message: str, unsent: bool) -> None:
        super().__init__(message)
        self.unsent = unsent


class _StreamWasReset:
    """The connection's event for a RST_STREAM from the peer (purerpc drops them)."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class _GoAwayReceived:
    """The connection's event for a GOAWAY from the peer (purerpc drops them)."""

    __slots__ = ("last_stream_id", "reason")

    def __init__(self, event: Any) -> None:
        self.last_stream_id: int = event.last_stream_id
        code = event.error_code
        name = getattr(code, "name", code)
        debug = bytes(event.additional_data or b"").decode("ascii", "replace")
        self.reason = f"the peer sent GOAWAY ({name}{': ' + debug if debug else ''})"


class _Inbox:
    """One stream's incoming events: unbounded, one receiving task (as purerpc uses it).

    Plays both ends of the memory object stream purerpc would make: `send`
    (the connection's reader) never blocks, `receive` (the stream's task)
    waits for the next event and is cancellable while it waits.
    """

    __slots__ = ("_ended", "_events", "_receiver")

    def __init__(self) -> None:
        self._events: deque[Any] = deque()
        self._receiver: trio.lowlevel.Task | None = None
        self._ended: StreamClosedError | None = None

    def reset(self) -> None:
        """The stream was reset: drop what is queued; the receiver raises StreamResetError."""
        self._events.clear()
        self.end(StreamResetError("the peer reset the stream"))

    def end(self, error: StreamClosedError) -> None:
        """Nothing more will come: what is queued is still received, then `error` is raised."""
        if self._ended is None:
            self._ended = error
        if self._receiver is not None:
            task, self._receiver = self._receiver, None
            trio.lowlevel.reschedule(task)

    async def send(self, event: Any) -> None:
        # No checkpoint: the reader hands over a whole read's events at once and
        # yields on its next socket read.
        if self._ended is not None:
            return
        self._events.append(event)
        if self._receiver is not None:
            task, self._receiver = self._receiver, None
            trio.lowlevel.reschedule(task)

    async def receive(self) -> Any:
        if self._events:
            await trio.lowlevel.checkpoint_if_cancelled()
            return self._events.popleft()
        if self._ended is not None:
            await trio.lowlevel.checkpoint()
            raise self._ended
        assert self._receiver is None, "one task receives a stream's events"
        self._receiver = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._receiver = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        if not self._events:
            assert self._ended is not None, "woken with no event means the stream ended"
            raise self._ended
        return self._events.popleft()


class LeanStream(GRPCProtoStream):  # type: ignore[misc]
    """A purerpc stream whose inbox and flow-control wake-up are plain trio objects."""

    def __init__(self, grpc_connection: Any, stream_id: int, socket: Any, grpc_socket: Any) -> None:
        # The attributes GRPCStream.__init__ sets, without its anyio objects.
        self._stream_id = stream_id
        self._grpc_connection = grpc_connection
        self._grpc_socket = grpc_socket
        self._socket = socket
        self._flow_control_update_event = trio.Event()
        self._inbox = _Inbox()
        self._incoming_events = (self._inbox, self._inbox)  # (sending end, receiving end)
        self._response_started = False
        self._state = GRPCStreamState.OPEN
        self._start_stream_event = None
        self._end_stream_event = None
        self.reset_by_peer = False  # reset, or its connection lost: nothing more goes or comes
        self._ended_by: StreamClosedError | None = None

    def peer_reset(self) -> None:
        """The peer reset the stream: wake whoever waits on it; what it sends is dropped."""
        self._end(StreamResetError("the peer reset the stream"))
        self._inbox.reset()

    def connection_lost(self, error: ConnectionLostError) -> None:
        """The connection ended: what already arrived is still read, then `error` is raised."""
        self._end(error)
        self._inbox.end(error)

    def _end(self, error: StreamClosedError) -> None:
        self.reset_by_peer = True
        self._ended_by = error
        self._state = GRPCStreamState.CLOSED
        self._flow_control_update_event.set()

    async def _wait_flow_control_update(self) -> None:
        await self._flow_control_update_event.wait()
        self._flow_control_update_event = trio.Event()
        if self._ended_by is not None:
            raise self._ended_by

    # A handler still at work when its client gave up (a deadline, a cancelled
    # call) finishes quietly: its answer has nowhere to go.

    async def _send(self, message: bytes, compress: bool = False) -> None:
        if self._ended_by is not None:
            raise self._ended_by
        # Data sent: the connection is in use (KeepalivePolicy).
        self._grpc_socket.sent_since_ping = True
        await super()._send(message, compress)

    async def start_response(
        self, content_type_suffix: str = "", custom_metadata: Any = ()
    ) -> None:
        if not self.reset_by_peer:
            self._grpc_socket.sent_since_ping = True
            await super().start_response(content_type_suffix, custom_metadata)

    async def close(
        self, status: Any = None, content_type_suffix: str = "", custom_metadata: Any = ()
    ) -> None:
        if not self.reset_by_peer:
            await super().close(status, content_type_suffix, custom_metadata)


class _Writer(SocketWrapper):  # type: ignore[misc]
    """purerpc's socket writer, woken by a trio Event and only when h2 has bytes to send.

    purerpc wakes its writer on every flush, including the one after each read
    that produced nothing to send.
    """

    def __init__(
        self, grpc_connection: Any, stream: anyio.abc.ByteStream, broke: Callable[[], None]
    ) -> None:
        super().__init__(grpc_connection, stream)
        self._flush_event = trio.Event()
        self._broke = broke

    async def _writer_thread(self) -> None:
        connection = self._grpc_connection
        while True:
            data = connection.data_to_send()
            if data:
                try:
                    await self._stream.send(data)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    self._broke()  # the streams fail now; the reader sees the end next
                    return
                continue
            if not self._running:
                return
            await self._flush_event.wait()
            self._flush_event = trio.Event()

    async def flush(self) -> None:
        # `_data_to_send` is the buffer purerpc's h2 patch keeps (h2 3.x, pinned by purerpc).
        if self._grpc_connection.h2_connection._data_to_send:
            self._flush_event.set()


class LeanSocket(GRPCProtoSocket):  # type: ignore[misc]
    """GRPCProtoSocket with LeanStream streams, the lean writer and trusted outbound headers."""

    StreamClass = LeanStream

    def __init__(
        self,
        config: GRPCConfiguration,
        sock: anyio.abc.ByteStream,
        budget: InboundBudget | None = None,
        keepalive: KeepalivePolicy | None = None,
    ) -> None:
        super().__init__(config, sock)
        self._budget = budget
        self._held = 0  # this connection's share of the budget
        self._socket = _Writer(self._grpc_connection, sock, self._broke)
        h2_tuning.trust_outbound_headers(self)
        connection = self._grpc_connection
        if not config.client_side:
            connection.MAX_CONCURRENT_STREAMS = MAX_CONCURRENT_STREAMS
            connection._set_h2_connection_local_settings()
        connection.h2_connection._closed_streams = SizeLimitDict(
            size_limit=CLOSED_STREAMS_REMEMBERED
        )

        def stream_reset(event: Any) -> list[_StreamWasReset]:
            # The read buffer of a stream reset mid-message is never completed.
            connection.message_read_buffers.pop(event.stream_id, None)
            return [_StreamWasReset(event.stream_id)]

        connection._stream_reset = stream_reset
        connection._connection_terminated = lambda event: [_GoAwayReceived(event)]
        # Whether the peer has sent anything yet (the server drops silent clients).
        self.heard_from_peer = False
        # Set once the connection is gone (closed, reset, GOAWAY): no call starts on it.
        self.lost: ConnectionLostError | None = None
        # Called once when the connection is lost (a channel pool forgets it at once).
        self.when_lost: Callable[[], None] | None = None
        self._pings = PingScore()
        # Set by the streams whenever the server sends headers or data.
        self.sent_since_ping = False
        if keepalive is not None:
            self._watch_pings(keepalive)

    # ----- a lost connection fails its calls at once -------------------------------------

    def _lose(self, reason: str, processed_up_to: int | None = None) -> None:
        """The connection is gone: every open stream fails now (purerpc left them waiting
        for an answer that could not come, until their deadlines).

        `processed_up_to`: the last stream id the peer's GOAWAY says it processed; the
        streams above it never reached it (`unsent`).
        """
        if self.lost is not None:
            return
        self.lost = ConnectionLostError(reason, unsent=True)
        streams = list(self._streams.items())
        self._streams.clear()
        for stream_id, stream in streams:
            unsent = processed_up_to is not None and stream_id > processed_up_to
            stream.connection_lost(ConnectionLostError(reason, unsent))
        if self.when_lost is not None:
            self.when_lost()

    def _broke(self) -> None:
        self._lose("the connection broke while sending")

    async def start_request(self, *args: Any, **kwargs: Any) -> Any:
        if self.lost is not None:
            await trio.lowlevel.checkpoint()
            raise ConnectionLostError(str(self.lost), unsent=True)
        try:
            return await super().start_request(*args, **kwargs)
        except h2.exceptions.ProtocolError as error:  # h2 saw the connection close
            self._lose(f"the connection is closing ({error})")
            raise ConnectionLostError(str(error), unsent=True) from None

    # ----- keepalive ----------------------------------------------------------------------

    def _watch_pings(self, keepalive: KeepalivePolicy) -> None:
        h2_connection = self._grpc_connection.h2_connection
        receive = h2_connection.receive_data

        def receive_data(data: bytes) -> list[Any]:
            # h2 answers every PING itself; this only keeps the score.
            events: list[Any] = receive(data)
            for event in events:
                if type(event) is PingReceived:
                    self._ping_received(keepalive, h2_connection)
            return events

        h2_connection.receive_data = receive_data

    def _ping_received(self, keepalive: KeepalivePolicy, h2_connection: Any) -> None:
        sent, self.sent_since_ping = self.sent_since_ping, False
        if keepalive.ping(self._pings, trio.current_time(), sent):
            h2_connection.close_connection(
                error_code=ErrorCodes.ENHANCE_YOUR_CALM,
                additional_data=b"too_many_pings",
                last_stream_id=h2_connection.highest_inbound_stream_id,
            )

    async def _listen(self) -> Any:
        """purerpc's event loop of a connection, plus what a reset stream needs.

        Events of a stream already reset (earlier in the same read) are dropped.
        """
        try:
            async for stream in self._listen_within_budget():
                yield stream
        finally:
            self._lose("the connection closed")
            if self._budget is not None:
                self._budget.held -= self._held
                self._held = 0

    async def _listen_within_budget(self) -> Any:
        streams: dict[int, Any] = self._streams
        while True:
            try:
                data = await self._socket.recv(self._receive_buffer_size)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return
            events = self._grpc_connection.receive_data(data)
            self.heard_from_peer = True
            if self._budget is not None:
                self._keep_within_budget(self._budget)
            await self._socket.flush()
            for event in events:
                if isinstance(event, WindowUpdated):
                    if event.stream_id == 0:
                        for stream in streams.values():
                            await stream._set_flow_control_update()
                    elif event.stream_id in streams:
                        await streams[event.stream_id]._set_flow_control_update()
                    continue
                if isinstance(event, _StreamWasReset):
                    reset = streams.pop(event.stream_id, None)
                    if reset is not None:
                        reset.peer_reset()
                    continue
                if isinstance(event, _GoAwayReceived):
                    # h2 takes no frame after a GOAWAY: the connection is done.
                    self._lose(event.reason, event.last_stream_id)
                    return
                if isinstance(event, RequestReceived):
                    self._allocate_stream(event.stream_id)
                stream = streams.get(event.stream_id)
                if stream is None:
                    continue
                await stream._incoming_events[0].send(event)
                if isinstance(event, RequestReceived):
                    yield stream
                elif isinstance(event, ResponseEnded | RequestEnded):
                    stream._close_remote()
            if self._pings.sent_away:
                return  # the GOAWAY goes out as the connection closes

    def _keep_within_budget(self, budget: InboundBudget) -> None:
        """Count what this connection holds; past the budget, reset its largest partial stream."""
        connection = self._grpc_connection
        buffers = connection.message_read_buffers
        held = sum(len(buffer._buffer) for buffer in buffers.values())
        budget.held += held - self._held
        self._held = held
        while budget.held > budget.limit and buffers:
            stream_id, largest = max(buffers.items(), key=lambda item: len(item[1]._buffer))
            size = len(largest._buffer)
            if size == 0:
                return
            del buffers[stream_id]
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                connection.h2_connection.reset_stream(stream_id, ErrorCodes.ENHANCE_YOUR_CALM)
            # Give the connection window back: those bytes will never be read.
            header = largest._flow_controlled_length or 0
            connection.h2_connection.acknowledge_received_data(size + header, stream_id)
            self._held -= size
            budget.held -= size
            budget.streams_reset += 1
            stream = self._streams.pop(stream_id, None)
            if stream is not None:
                stream.peer_reset()
