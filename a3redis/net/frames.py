"""Replica frames on a connection: the server's loop and the client's connection.

Rules: the protocol is a3redis.core.replica_frames; this module only moves its
bytes. A server connection (handed over by a3redis.net.grpc_server once the
first bytes were the preface) answers the preface, then runs each request
as a task of the connection, at most MAX_CALLS_IN_FLIGHT at once (past
that it stops reading: the client's calls wait in its socket), and sends
each answer as soon as it is ready, in whatever order. Bytes of a frame
still arriving count against the server's inbound budget (the one that
bounds incomplete gRPC messages, a3redis.net.grpc_socket.InboundBudget): a
connection that would take it past its limit is closed. A connection that
breaks the protocol (FrameError) is closed; calls already running finish.

A client connection (`FrameConnection`) sends each call's frame at once and
waits for its answer; one reader task, run by the connection's owner
(a3redis.net.channels), hands answers to the calls waiting for them. When
the connection ends, for whatever reason, every call still waiting fails at
once with ConnectionLostError, and no call starts on it any more.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import anyio
import anyio.abc
import trio

from a3redis.core.replica_frames import (
    CALL_IDS,
    FAILURE,
    PREFACE,
    Frame,
    FrameError,
    FrameReader,
    answer,
    failure,
    parse_failure,
    request,
)
from a3redis.net.grpc_socket import ConnectionLostError, InboundBudget

log = logging.getLogger(__name__)

# Requests one connection runs at once; a coordinator's link has at most 4 calls out.
MAX_CALLS_IN_FLIGHT = 16
READ_SIZE = 256 * 1024

# What a server does with one request: its answer's body, and whether that is a failure.
Handle = Callable[[Frame], Awaitable[tuple[bytes, bool]]]


class FrameServer(Protocol):
    """What serves a server's frames: the gRPC service (its full name) they are calls of,
    and a handler per connection (`source`: the client's address, for logs)."""

    service_name: str

    def frames(self, source: str) -> Handle: ...


_ENDED = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class FailedCallError(Exception):
    """The peer answered a call with a failure: the gRPC status `code` (its name) the
    call would have failed with, and the message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


async def serve_frames(
    stream: anyio.abc.ByteStream,
    received: bytes,
    handle: Handle,
    budget: InboundBudget,
    max_frame_bytes: int,
) -> None:
    """Serve one connection whose first bytes, `received`, began with the preface."""
    reader = FrameReader(max_frame_bytes, requests=True)
    sending = trio.Lock()  # one frame at a time on the stream
    slots = trio.Semaphore(MAX_CALLS_IN_FLIGHT)
    held = 0

    async def run(frame: Frame) -> None:
        try:
            try:
                body, failed = await handle(frame)
            except Exception:  # a bug of ours: this call fails, the connection goes on
                log.exception("a replica-frame call failed")
                body, failed = failure("INTERNAL", "internal error"), True
            async with sending:
                await stream.send(answer(frame.call_id, body, failed))
        except _ENDED:
            pass  # the client is gone: nobody to answer
        finally:
            slots.release()

    try:
        await stream.send(PREFACE)
    except _ENDED:
        return
    data = received[len(PREFACE) :]
    try:
        # Calls running when the connection ends (or breaks the protocol) still finish.
        async with trio.open_nursery() as calls:
            while True:
                try:
                    frames = reader.feed(data)
                except FrameError as error:
                    # Debug only, as for broken HTTP/2: anyone may send bytes.
                    log.debug("closing a replica-frames connection: %s", error)
                    break
                budget.held += reader.held - held
                held = reader.held
                if budget.held > budget.limit:
                    budget.frame_connections_closed += 1  # counted in the metrics, not logged
                    break
                for frame in frames:
                    await slots.acquire()
                    calls.start_soon(run, frame)
                try:
                    data = await stream.receive(READ_SIZE)
                except _ENDED:
                    break
    finally:
        budget.held -= held


@dataclass(slots=True, eq=False)
class _Pending:
    done: trio.Event
    body: bytes = b""
    failed: bool = False
    lost: ConnectionLostError | None = None


class FrameConnection:
    """A client's connection to a peer that answered the preface."""

    def __init__(self, stream: anyio.abc.ByteStream, max_frame_bytes: int) -> None:
        self._stream = stream
        self._max_frame_bytes = max_frame_bytes
        self._sending = trio.Lock()
        self._waiting: dict[int, _Pending] = {}
        self._next_id = 0
        self.lost: ConnectionLostError | None = None
        self._reading = trio.CancelScope()  # read_answers' scope: close() cancels it

    async def call(self, kind: int, body: bytes, meta: tuple[str, ...] = ()) -> bytes:
        """The answer's body; FailedCallError if the peer failed the call,
        ConnectionLostError if the connection ended first."""
        if self.lost is not None:
            raise ConnectionLostError(str(self.lost), unsent=True)
        call_id = self._next_id
        self._next_id = (call_id + 1) % CALL_IDS
        frame = request(kind, call_id, body, meta)
        pending = _Pending(trio.Event())
        self._waiting[call_id] = pending
        try:
            async with self._sending:
                try:
                    await self._stream.send(frame)
                except BaseException:
                    # Part of a frame may have left (a cancelled send): nothing after
                    # it on this connection could be read right.
                    self.close("a call ended while its frame was being sent")
                    raise
            await pending.done.wait()
        except _ENDED as error:
            self.close(f"sending failed: {error!r}")
            raise self.lost or ConnectionLostError("the connection ended", False) from None
        finally:
            self._waiting.pop(call_id, None)
        if pending.lost is not None:
            raise pending.lost
        if pending.failed:
            code, message = parse_failure(pending.body)
            raise FailedCallError(code, message[:500])
        return pending.body

    async def read_answers(self) -> None:
        """Hand each answer to its call until the connection ends (or `close`); then
        close it. Never raises: whatever ends the connection fails its calls."""
        reader = FrameReader(self._max_frame_bytes, requests=False)
        reason = "closed"
        with self._reading:
            try:
                while True:
                    data = await self._stream.receive(READ_SIZE)
                    for frame in reader.feed(data):
                        pending = self._waiting.pop(frame.call_id, None)
                        if pending is None:
                            continue  # the call gave up (its timeout) before the answer
                        pending.body = frame.body
                        pending.failed = frame.kind == FAILURE
                        pending.done.set()
            except FrameError as error:
                reason = f"a broken answer: {error}"
            except _ENDED as error:
                reason = f"the connection ended: {error!r}"
            except Exception as error:  # a bug of ours must not end the node
                log.exception("reading replica-frame answers failed")
                reason = f"reading answers failed: {error!r}"
        self.close(reason)
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await self._stream.aclose()

    def close(self, reason: str = "closed") -> None:
        """No call starts any more; every call waiting fails now."""
        if self.lost is None:
            self.lost = ConnectionLostError(f"replica frames: {reason}", False)
        self._reading.cancel()
        waiting, self._waiting = self._waiting, {}
        for pending in waiting.values():
            pending.lost = self.lost
            pending.done.set()


async def open_frames(
    stream: anyio.abc.ByteStream, preface_wait: float, max_frame_bytes: int
) -> FrameConnection | None:
    """Send the preface on a new connection; the connection if the peer answers it in
    kind within `preface_wait` seconds, else None (the stream is then closed: the peer speaks only
    gRPC)."""
    received = b""
    with trio.move_on_after(preface_wait):
        try:
            await stream.send(PREFACE)
            while len(received) < len(PREFACE):
                received += await stream.receive(len(PREFACE) - len(received))
                if not PREFACE.startswith(received):
                    break
        except _ENDED:
            pass
    if received == PREFACE:
        return FrameConnection(stream, max_frame_bytes)
    with trio.CancelScope(shield=True), trio.move_on_after(1):
        await stream.aclose()
    return None
