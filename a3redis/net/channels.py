"""Long-lived purerpc channels, one per address, owned by a supervising nursery.

Rules: a channel is opened by a task that this pool's nursery supervises and
closed when the pool closes, so channels never outlive their owner and never
straddle a caller's cancel scope. Callers reuse the open channel of an
address; after a transport failure they `discard` it and the next call
reconnects. A channel whose connection ends by itself (the peer closed or
reset it, or sent GOAWAY: a3redis.net.grpc_socket) is forgotten at that
moment, idle or not, and every call still waiting on it fails at once with
ConnectionLostError; so the first call after a peer restarted opens a new
connection instead of failing on the dead one. Closing a channel (`discard`)
likewise fails the calls still waiting on it: nothing can answer them. A
node's pool connects from the node's own address (`local_host`), so traffic
between nodes can be told apart by source address. With an
`ssl_context` every channel is TLS (ALPN `h2`, the peer's certificate and
name verified by the context); the context is read when a channel opens, so
certificates loaded into it later (a3redis.net.tls, on SIGHUP) serve every
channel opened from then on.

Beside its channel, an address may have a replica-frames connection
(`frames`: a3redis.net.frames), opened the same way, whose answers a task
of this pool's nursery reads; `discard` closes both. A peer that does not
answer the frames preface (a node of an older version) is asked over its
channel instead, and offered frames again after FRAMES_RETRY seconds.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import trio
from purerpc.client import _Channel
from purerpc.grpclib.config import GRPCConfiguration

from a3redis.core.replica_frames import MAX_FRAME_BYTES
from a3redis.net.address import Address
from a3redis.net.frames import FrameConnection, open_frames
from a3redis.net.grpc_socket import LeanSocket
from a3redis.runtime.supervision import unwrap_single_group

# A peer that did not answer the frames preface is offered it again after this long.
FRAMES_RETRY = 60.0


async def _connect(
    host: str, port: int, local_host: str | None, ssl_context: ssl.SSLContext | None
) -> anyio.abc.ByteStream:
    if ssl_context is None:
        return await anyio.connect_tcp(host, port, local_host=local_host)
    return await anyio.connect_tcp(
        host, port, local_host=local_host, ssl_context=ssl_context, tls_standard_compatible=False
    )


@dataclass
class _Held:
    channel: Any
    close: trio.Event = field(default_factory=trio.Event)
    stubs: dict[type, Any] = field(default_factory=dict)


class _BoundChannel(_Channel):  # type: ignore[misc]
    """purerpc's channel, connecting from a chosen local address (or any), over TLS
    with an `ssl_context`."""

    def __init__(
        self,
        host: str,
        port: int,
        local_host: str | None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(host, port, ssl_context)
        self._local_host = local_host

    async def __aenter__(self) -> _BoundChannel:
        stream = await _connect(self._host, self._port, self._local_host, self._ssl_context)
        self._grpc_socket = await self.enter_async_context(
            LeanSocket(GRPCConfiguration(client_side=True), stream)
        )
        return self


class ChannelPool:
    def __init__(
        self,
        nursery: trio.Nursery,
        connect_timeout: float,
        local_host: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._nursery = nursery
        self._connect_timeout = connect_timeout
        self._local_host = local_host
        self._ssl_context = ssl_context
        self._held: dict[Address, _Held] = {}
        self._opening: dict[Address, trio.Event] = {}
        self._frames: dict[Address, FrameConnection] = {}
        self._frames_opening: dict[Address, trio.Event] = {}
        self._grpc_only_until: dict[Address, float] = {}

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        connect_timeout: float = 3.0,
        local_host: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> AsyncIterator[ChannelPool]:
        with unwrap_single_group():
            async with trio.open_nursery() as nursery:
                pool = cls(nursery, connect_timeout, local_host, ssl_context)
                try:
                    yield pool
                finally:
                    pool.close_all()

    async def stub(self, address: Address, stub_class: type) -> Any:
        """A stub of `stub_class` on the open channel to `address`, connecting if needed."""
        while address not in self._held:
            opening = self._opening.get(address)
            if opening is not None:
                await opening.wait()
                if address not in self._held:
                    raise ConnectionError(f"cannot connect to {address}")
                break
            self._opening[address] = opening = trio.Event()
            try:
                with trio.fail_after(self._connect_timeout):
                    self._held[address] = await self._nursery.start(self._hold, address)
            except trio.TooSlowError:
                raise ConnectionError(f"timed out connecting to {address}") from None
            finally:
                del self._opening[address]
                opening.set()
            if self._held[address].close.is_set():  # lost as soon as it opened
                del self._held[address]
                raise ConnectionError(f"the connection to {address} closed at once")
        held = self._held[address]
        stub = held.stubs.get(stub_class)
        if stub is None:
            stub = held.stubs[stub_class] = stub_class(held.channel)
        return stub

    async def frames(self, address: Address) -> FrameConnection | None:
        """The open frames connection to `address`, connecting if needed; None when the
        peer speaks only gRPC. ConnectionError when it cannot be reached."""
        while True:
            connection = self._frames.get(address)
            if connection is not None and connection.lost is None:
                return connection
            if trio.current_time() < self._grpc_only_until.get(address, -1.0):
                return None
            opening = self._frames_opening.get(address)
            if opening is None:
                return await self._open_frames(address)
            await opening.wait()

    async def _open_frames(self, address: Address) -> FrameConnection | None:
        self._frames_opening[address] = opening = trio.Event()
        try:
            with trio.fail_after(self._connect_timeout):
                stream = await _connect(
                    address.host, address.port, self._local_host, self._ssl_context
                )
            connection = await open_frames(stream, self._connect_timeout, MAX_FRAME_BYTES)
            if connection is None:
                self._grpc_only_until[address] = trio.current_time() + FRAMES_RETRY
                return None
            self._grpc_only_until.pop(address, None)
            self._frames[address] = connection
            self._nursery.start_soon(self._read_frames, address, connection)
            return connection
        except trio.TooSlowError:
            raise ConnectionError(f"timed out connecting to {address}") from None
        finally:
            del self._frames_opening[address]
            opening.set()

    async def _read_frames(self, address: Address, connection: FrameConnection) -> None:
        try:
            await connection.read_answers()
        finally:
            if self._frames.get(address) is connection:
                del self._frames[address]

    def discard(self, address: Address) -> None:
        held = self._held.pop(address, None)
        if held is not None:
            held.close.set()
        connection = self._frames.pop(address, None)
        if connection is not None:
            connection.close("discarded")

    def _forget(self, address: Address, held: _Held) -> None:
        """The connection of `held` ended by itself: no call may take it any more."""
        if self._held.get(address) is held:
            del self._held[address]
        held.close.set()

    def close_all(self) -> None:
        for address in {*self._held, *self._frames}:
            self.discard(address)

    async def _hold(
        self, address: Address, *, task_status: trio.TaskStatus[_Held] = trio.TASK_STATUS_IGNORED
    ) -> None:
        held: _Held | None = None
        try:
            async with _BoundChannel(
                address.host, address.port, self._local_host, self._ssl_context
            ) as channel:
                held = _Held(channel)
                channel._grpc_socket.when_lost = functools.partial(self._forget, address, held)
                task_status.started(held)
                await held.close.wait()
        except Exception:
            # A broken connection ends here; the pool forgets it and callers
            # see the failure on their own call and reconnect.
            if held is not None and self._held.get(address) is held:
                del self._held[address]
            if held is None:
                raise
