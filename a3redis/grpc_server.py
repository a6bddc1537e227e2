"""Serving purerpc services on a socket we bound ourselves, with a graceful drain.

Rules: purerpc's own `Server.serve_async` listens on every interface with
SO_REUSEPORT, so a second node on a taken port would start silently; here
the node binds the socket (and fails on a taken port) and this module only
accepts on it. Shutdown: stop accepting, let in-flight calls finish within
the grace period (new calls get UNAVAILABLE meanwhile), then close the
connections.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

import anyio
import anyio.abc
import purerpc
import trio
from purerpc.server import ConnectionHandler


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
    handler = ConnectionHandler({service.name: service for service in services}, purerpc.Server())
    async with anyio.create_task_group() as connections:
        async with trio.open_nursery() as acceptor:
            acceptor.start_soon(_accept, listener, handler, connections)
            task_status.started()
            await stop.wait()
            acceptor.cancel_scope.cancel()
        await listener.aclose()
        await gate.close_and_wait(grace)
        connections.cancel_scope.cancel()


async def _accept(
    listener: anyio.abc.SocketListener,
    handler: ConnectionHandler,
    connections: anyio.abc.TaskGroup,
) -> None:
    while True:
        stream = await listener.accept()
        connections.start_soon(handler, stream)
