"""A bare RESP server on the node's own stack: how fast a node could answer, at most, here.

`python -m benchmarks.bare_resp --port PORT --log FILE` serves GET, SET, PING and
CONFIG GET (an empty answer) on 127.0.0.1 until killed; `benchmarks.resp` runs it beside
redis-server and the node, so the node's figures can be read against a ceiling measured
in the same run on the same stack.

What it shares with a node: one trio event loop; one task reading every connection off
one epoll selector (as `a3redis.api.resp_server` does); the node's request parser
(`a3redis.core.resp.RequestReader`); SETs acknowledged only after their group commit, a
write and an fdatasync in one long-lived thread, each commit gathering while the loop
still has requests to read (the store's own `_SyncThread` and `gathering.while_busy`).
What it leaves out is everything that makes a node a database: versions and the clock,
the record table and its Merkle index, validation and limits, replication and quorums,
the log's frames and recovery, metrics, TLS, every other command. So the ratio node /
bare server is what the node's own work costs, and the bare server's ratio to
redis-server is as near as this stack comes to Redis on this machine. It is a
benchmark's yardstick, not a server for anything else: nothing it stores survives it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import socket
from collections.abc import Callable
from typing import Any

import trio

from a3redis.core.resp import ProtocolError, RequestReader
from a3redis.runtime import gathering
from a3redis.storage.store import GATHER_DELAY, _SyncThread

READ_SIZE = 64 * 1024
OK = b"+OK\r\n"


class _Committer:
    """Group commit: SETs queued between commits share one write and one fdatasync."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data: list[bytes] = []
        self.waiting: list[tuple[socket.socket, int]] = []  # (connection, SETs to acknowledge)
        self.wake = trio.Event()
        self.syncer = _SyncThread()

    def queue(self, connection: socket.socket, sets: int, data: list[bytes]) -> None:
        self.data.extend(data)
        self.waiting.append((connection, sets))
        self.wake.set()

    def write_and_sync(self, data: bytes) -> None:
        os.write(self.fd, data)
        os.fdatasync(self.fd)

    async def run(self) -> None:
        try:
            while True:
                await self.wake.wait()
                await gathering.while_busy(GATHER_DELAY)
                self.wake = trio.Event()
                waiting, self.waiting = self.waiting, []
                data, self.data = b"".join(self.data), []
                await self.syncer.run(self.write_and_sync, data)
                for connection, sets in waiting:
                    _send(connection, OK * sets)
        finally:
            self.syncer.stop()


def _send(connection: socket.socket, data: bytes) -> None:
    # A benchmark's client reads its replies; one that does not just loses them.
    with contextlib.suppress(OSError):
        connection.send(data)


def _answer(reply: bytes) -> Callable[[list[bytes], list[bytes], list[bytes]], int]:
    def command(_: list[bytes], replies: list[bytes], __: list[bytes]) -> int:
        replies.append(reply)
        return 0

    return command


def _bulk(value: bytes | None) -> bytes:
    return b"$-1\r\n" if value is None else b"$%d\r\n%b\r\n" % (len(value), value)


class _Server:
    def __init__(self, listener: socket.socket, committer: _Committer) -> None:
        self.listener = listener
        self.committer = committer
        self.selector = selectors.EpollSelector()
        self.table: dict[bytes, bytes] = {}
        self.commands: dict[bytes, Callable[[list[bytes], list[bytes], list[bytes]], int]] = {
            b"SET": self._set,
            b"GET": self._get,
            b"PING": _answer(b"+PONG\r\n"),
            b"CONFIG": _answer(b"*0\r\n"),  # redis-benchmark's CONFIG GET save / appendonly
        }

    def _set(self, request: list[bytes], replies: list[bytes], logged: list[bytes]) -> int:
        if len(request) != 3:
            replies.append(b"-ERR wrong number of arguments for 'set' command\r\n")
            return 0
        key, value = request[1], request[2]
        logged.append(b"%d %d\n%b%b" % (len(key), len(value), key, value))
        self.table[key] = value
        return 1

    def _get(self, request: list[bytes], replies: list[bytes], _: list[bytes]) -> int:
        replies.append(_bulk(self.table.get(request[1])) if len(request) == 2 else b"-ERR\r\n")
        return 0

    async def accept(self) -> None:
        while True:
            await trio.lowlevel.wait_readable(self.listener)
            try:
                connection, _ = self.listener.accept()
            except BlockingIOError:
                continue
            connection.setblocking(False)
            self.selector.register(connection, selectors.EVENT_READ, RequestReader())

    async def react(self) -> None:
        while True:
            await trio.lowlevel.wait_readable(self.selector.fileno())
            for key, _ in self.selector.select(0):
                self._readable(key.fileobj, key.data)  # type: ignore[arg-type]

    def _readable(self, connection: socket.socket, reader: RequestReader) -> None:
        try:
            data = connection.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            reader.feed(data)
            try:
                requests = reader.requests()
            except ProtocolError:
                data = b""
        if not data:
            self.selector.unregister(connection)
            connection.close()
            return
        replies: list[bytes] = []
        logged: list[bytes] = []
        sets = 0
        for request in requests:
            command = self.commands.get(request[0].upper())
            if command is None:
                replies.append(b"-ERR unknown command\r\n")
            else:
                sets += command(request, replies, logged)
        # A SET's OK waits for its commit; a client that pipelines SETs behind a GET
        # (no benchmark case does) would get its replies out of order.
        if replies:
            _send(connection, b"".join(replies))
        if sets:
            self.committer.queue(connection, sets, logged)


async def serve(port: int, log_path: str) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    listener.setblocking(False)
    committer = _Committer(fd)
    server = _Server(listener, committer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(committer.run)
        nursery.start_soon(server.accept)
        nursery.start_soon(server.react)


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True, help="the file SETs are appended to")
    args = parser.parse_args(argv)
    trio.run(serve, args.port, args.log)


if __name__ == "__main__":
    main()
