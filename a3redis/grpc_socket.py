"""purerpc's connection socket with trio-level plumbing inside each gRPC stream.

Rules: everything purerpc does on a connection stays purerpc's (h2 framing,
flow control, the call wrappers); this module only replaces how events get
from the connection's reader task to a stream's task, and how the writer task
is woken. purerpc does both through anyio objects made per stream and per
wake-up (a memory object stream pair per stream, an Event per flow-control
wait and per writer wake, each looking its backend up), which py-spy showed
at ~10 % of a node's CPU per request under load. Both a3redis's server
(a3redis.grpc_server) and its peer channels (a3redis.channels) use
`LeanSocket`; anything that talks to a node sees the same bytes either way.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import anyio.abc
import trio
from purerpc.grpc_proto import GRPCProtoSocket, GRPCProtoStream
from purerpc.grpc_socket import GRPCStreamState, SocketWrapper
from purerpc.grpclib.config import GRPCConfiguration

from a3redis import h2_tuning


class _Inbox:
    """One stream's incoming events: unbounded, one receiving task (as purerpc uses it).

    Plays both ends of the memory object stream purerpc would make: `send`
    (the connection's reader) never blocks, `receive` (the stream's task)
    waits for the next event and is cancellable while it waits.
    """

    __slots__ = ("_events", "_receiver")

    def __init__(self) -> None:
        self._events: deque[Any] = deque()
        self._receiver: trio.lowlevel.Task | None = None

    async def send(self, event: Any) -> None:
        # No checkpoint: the reader hands over a whole read's events at once and
        # yields on its next socket read.
        self._events.append(event)
        if self._receiver is not None:
            task, self._receiver = self._receiver, None
            trio.lowlevel.reschedule(task)

    async def receive(self) -> Any:
        if self._events:
            await trio.lowlevel.checkpoint_if_cancelled()
            return self._events.popleft()
        assert self._receiver is None, "one task receives a stream's events"
        self._receiver = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._receiver = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
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
        inbox = _Inbox()
        self._incoming_events = (inbox, inbox)  # (sending end, receiving end)
        self._response_started = False
        self._state = GRPCStreamState.OPEN
        self._start_stream_event = None
        self._end_stream_event = None

    async def _wait_flow_control_update(self) -> None:
        await self._flow_control_update_event.wait()
        self._flow_control_update_event = trio.Event()


class _Writer(SocketWrapper):  # type: ignore[misc]
    """purerpc's socket writer, woken by a trio Event and only when h2 has bytes to send.

    purerpc wakes its writer on every flush, including the one after each read
    that produced nothing to send.
    """

    def __init__(self, grpc_connection: Any, stream: anyio.abc.SocketStream) -> None:
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

    def __init__(self, config: GRPCConfiguration, sock: anyio.abc.SocketStream) -> None:
        super().__init__(config, sock)
        self._socket = _Writer(self._grpc_connection, sock)
        h2_tuning.trust_outbound_headers(self)
