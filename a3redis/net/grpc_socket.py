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
from typing import Any

import anyio.abc
import h2.exceptions
import purerpc.grpclib.connection
import trio
from h2.errors import ErrorCodes
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


class StreamResetError(StreamClosedError):  # type: ignore[misc]
    """The peer reset this stream (RST_STREAM): nothing more comes or goes on it."""


class _StreamWasReset:
    """The connection's event for a RST_STREAM from the peer (purerpc drops them)."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class _Inbox:
    """One stream's incoming events: unbounded, one receiving task (as purerpc uses it).

    Plays both ends of the memory object stream purerpc would make: `send`
    (the connection's reader) never blocks, `receive` (the stream's task)
    waits for the next event and is cancellable while it waits.
    """

    __slots__ = ("_events", "_receiver", "_reset")

    def __init__(self) -> None:
        self._events: deque[Any] = deque()
        self._receiver: trio.lowlevel.Task | None = None
        self._reset = False

    def reset(self) -> None:
        """The stream was reset: drop what is queued; the receiver raises StreamResetError."""
        self._reset = True
        self._events.clear()
        if self._receiver is not None:
            task, self._receiver = self._receiver, None
            trio.lowlevel.reschedule(task)

    async def send(self, event: Any) -> None:
        # No checkpoint: the reader hands over a whole read's events at once and
        # yields on its next socket read.
        if self._reset:
            return
        self._events.append(event)
        if self._receiver is not None:
            task, self._receiver = self._receiver, None
            trio.lowlevel.reschedule(task)

    async def receive(self) -> Any:
        if self._events:
            await trio.lowlevel.checkpoint_if_cancelled()
            return self._events.popleft()
        if self._reset:
            await trio.lowlevel.checkpoint()
            raise StreamResetError("the peer reset the stream")
        assert self._receiver is None, "one task receives a stream's events"
        self._receiver = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._receiver = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        if not self._events:
            raise StreamResetError("the peer reset the stream")
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
        self.reset_by_peer = False

    def peer_reset(self) -> None:
        """The peer reset the stream: wake whoever waits on it; what it sends is dropped."""
        self.reset_by_peer = True
        self._state = GRPCStreamState.CLOSED
        self._inbox.reset()
        self._flow_control_update_event.set()

    async def _wait_flow_control_update(self) -> None:
        await self._flow_control_update_event.wait()
        self._flow_control_update_event = trio.Event()

    # A handler still at work when its client gave up (a deadline, a cancelled
    # call) finishes quietly: its answer has nowhere to go.

    async def _send(self, message: bytes, compress: bool = False) -> None:
        if self.reset_by_peer:
            raise StreamResetError("the peer reset the stream")
        await super()._send(message, compress)

    async def start_response(
        self, content_type_suffix: str = "", custom_metadata: Any = ()
    ) -> None:
        if not self.reset_by_peer:
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

    def __init__(self, grpc_connection: Any, stream: anyio.abc.ByteStream) -> None:
        super().__init__(grpc_connection, stream)
        self._flush_event = trio.Event()

    async def _writer_thread(self) -> None:
        connection = self._grpc_connection
        while True:
            data = connection.data_to_send()
            if data:
                await self._stream.send(data)
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
    ) -> None:
        super().__init__(config, sock)
        self._budget = budget
        self._held = 0  # this connection's share of the budget
        self._socket = _Writer(self._grpc_connection, sock)
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
        # Whether the peer has sent anything yet (the server drops silent clients).
        self.heard_from_peer = False

    async def _listen(self) -> Any:
        """purerpc's event loop of a connection, plus what a reset stream needs.

        Events of a stream already reset (earlier in the same read) are dropped.
        """
        try:
            async for stream in self._listen_within_budget():
                yield stream
        finally:
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
