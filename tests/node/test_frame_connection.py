"""A client's replica-frames connection (a3redis.net.frames) against scripted servers on loopback.

Each server here is a few lines of trio that answer what the test needs:
answers in any order, a failure, an answer nobody waits for, garbage, or
the end of the connection. The client must give each call its own answer,
fail every waiting call at once when the connection ends, and refuse new
calls on it without sending them.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import anyio
import pytest
import trio

from a3redis.core.replica_frames import (
    MAX_FRAME_BYTES,
    PREFACE,
    READ,
    Frame,
    FrameReader,
    answer,
    failure,
)
from a3redis.net.frames import FailedCallError, FrameConnection, open_frames
from a3redis.net.grpc_socket import ConnectionLostError

Server = Callable[[trio.SocketStream], Awaitable[None]]


async def requests_from(stream: trio.SocketStream, count: int) -> list[Frame]:
    """The first `count` request frames after the preface."""
    received = b""
    while len(received) < len(PREFACE):
        received += await stream.receive_some(len(PREFACE) - len(received))
    assert received == PREFACE
    reader = FrameReader(MAX_FRAME_BYTES, requests=True)
    frames: list[Frame] = []
    while len(frames) < count:
        frames += reader.feed(await stream.receive_some(65536))
    return frames


async def connect(nursery: trio.Nursery, server: Server) -> FrameConnection | None:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, server, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    stream = await anyio.connect_tcp("127.0.0.1", port)
    connection = await open_frames(stream, 5, MAX_FRAME_BYTES)
    if connection is not None:
        nursery.start_soon(connection.read_answers)
    return connection


async def test_each_call_gets_its_own_answer_in_whatever_order_they_come(
    nursery: trio.Nursery,
) -> None:
    async def server(stream: trio.SocketStream) -> None:
        await stream.send_all(PREFACE)
        first, second, third = await requests_from(stream, 3)
        await stream.send_all(
            answer(2**32 - 1, b"nobody asked")  # no call waits for it: ignored
            + answer(third.call_id, failure("INVALID_ARGUMENT", "bad keys"), failed=True)
            + answer(second.call_id, b"second:" + second.body)
            + answer(first.call_id, b"first:" + first.body)
        )
        await trio.sleep_forever()

    connection = await connect(nursery, server)
    assert connection is not None
    results: dict[str, bytes | Exception] = {}

    async def ask(name: str, body: bytes) -> None:
        try:
            results[name] = await connection.call(READ, body)
        except FailedCallError as error:
            results[name] = error

    async with trio.open_nursery() as calls:
        for name in ("a", "b", "c"):
            calls.start_soon(ask, name, name.encode())
            await trio.sleep(0.05)  # in this order on the wire
    assert results["a"] == b"first:a"
    assert results["b"] == b"second:b"
    failed = results["c"]
    assert isinstance(failed, FailedCallError)
    assert (failed.code, failed.message) == ("INVALID_ARGUMENT", "bad keys")
    connection.close()


async def test_waiting_calls_fail_at_once_when_the_connection_ends(nursery: trio.Nursery) -> None:
    async def server(stream: trio.SocketStream) -> None:
        await stream.send_all(PREFACE)
        await requests_from(stream, 2)
        await stream.aclose()  # neither is answered

    connection = await connect(nursery, server)
    assert connection is not None
    failures: list[ConnectionLostError] = []

    async def ask() -> None:
        with pytest.raises(ConnectionLostError) as caught:
            await connection.call(READ, b"k")
        failures.append(caught.value)

    with trio.fail_after(5):  # far below any peer timeout: at once
        async with trio.open_nursery() as calls:
            calls.start_soon(ask)
            calls.start_soon(ask)
    assert [error.unsent for error in failures] == [False, False]
    # A call on the lost connection is refused before anything is sent.
    with pytest.raises(ConnectionLostError) as refused:
        await connection.call(READ, b"k")
    assert refused.value.unsent


async def test_a_broken_answer_ends_the_connection_and_fails_its_calls(
    nursery: trio.Nursery,
) -> None:
    async def server(stream: trio.SocketStream) -> None:
        await stream.send_all(PREFACE)
        await requests_from(stream, 1)
        await stream.send_all(b"\x00\x00\x00\x05\x07garbage")  # no such answer kind
        await trio.sleep_forever()

    connection = await connect(nursery, server)
    assert connection is not None
    with trio.fail_after(5), pytest.raises(ConnectionLostError, match="broken answer"):
        await connection.call(READ, b"k")


@pytest.mark.parametrize(
    "first_bytes",
    [b"", b"\x00\x00\x18\x04\x00\x00\x00\x00\x00", PREFACE[:4] + b"?!?!"],
    ids=["closes", "http2-settings", "almost-the-preface"],
)
async def test_a_server_that_does_not_answer_the_preface_gets_no_frames(
    nursery: trio.Nursery, first_bytes: bytes
) -> None:
    async def server(stream: trio.SocketStream) -> None:
        await stream.send_all(first_bytes)
        await stream.aclose()

    assert await connect(nursery, server) is None


async def test_a_silent_server_gets_no_frames_once_the_wait_is_over(
    nursery: trio.Nursery,
) -> None:
    async def server(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, server, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    stream = await anyio.connect_tcp("127.0.0.1", port)
    with trio.fail_after(5):
        assert await open_frames(stream, 0.2, MAX_FRAME_BYTES) is None
