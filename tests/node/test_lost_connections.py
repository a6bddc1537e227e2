"""A connection that ends fails its calls at once, and its channel is forgotten at once.

The peer here is a bare trio TCP server playing the far end: it reads the
request bytes and then closes the socket, resets it, or answers GOAWAY (an
h2 server connection), so each test decides exactly what the client sees.
A purerpc client left such calls waiting for their whole deadline, and a
channel pool kept handing out the dead connection until a call on it failed.
"""

from __future__ import annotations

import functools
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
import trio

from a3redis.client import Client
from a3redis.net.address import Address
from a3redis.net.channels import ChannelPool
from a3redis.net.grpc_socket import ConnectionLostError
from a3redis.v1 import kv_pb2 as pb
from a3redis.v1.kv_grpc import KeyValueStub

Serve = Callable[[trio.SocketStream], Awaitable[None]]
# Long next to how fast a lost connection must fail a call.
CALL_DEADLINE = 5.0
AT_ONCE = 0.5


@asynccontextmanager
async def far_end(serve: Serve) -> AsyncIterator[tuple[Address, list[int]]]:
    """A loopback TCP server running `serve` on each connection; yields its address and
    the count of connections accepted so far (a one-item list)."""
    accepted = [0]

    async def handle(stream: trio.SocketStream) -> None:
        accepted[0] += 1
        async with stream:
            await serve(stream)

    async with trio.open_nursery() as nursery:
        listen = functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
        listeners = await nursery.start(listen)
        port = listeners[0].socket.getsockname()[1]
        yield Address("127.0.0.1", port), accepted
        nursery.cancel_scope.cancel()


async def read_request(stream: trio.SocketStream) -> h2.connection.H2Connection:
    """Read until the client's request message has arrived; the server's h2 state."""
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    while True:
        chunk = await stream.receive_some()
        assert chunk, "the client hung up before its request arrived"
        if any(isinstance(e, h2.events.DataReceived) for e in server.receive_data(chunk)):
            return server


async def close_after_request(stream: trio.SocketStream) -> None:
    await read_request(stream)


async def reset_after_request(stream: trio.SocketStream) -> None:
    await read_request(stream)
    # SO_LINGER 0: close sends RST, as the kernel does for a killed process with unread data.
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def get(stub: KeyValueStub) -> float:
    """Call Get; return how long it took to fail (it must fail)."""
    started = trio.current_time()
    with pytest.raises(ConnectionLostError):
        with trio.fail_after(CALL_DEADLINE):
            await stub.Get(pb.GetRequest(key=b"k"))
    return trio.current_time() - started


@pytest.mark.parametrize("ending", [close_after_request, reset_after_request])
async def test_a_call_in_flight_fails_at_once_when_its_connection_ends(ending: Serve) -> None:
    async with far_end(ending) as (address, accepted), ChannelPool.open() as pool:
        stub = await pool.stub(address, KeyValueStub)
        assert await get(stub) < AT_ONCE
        # The next call reconnects instead of using the dead connection.
        stub = await pool.stub(address, KeyValueStub)
        assert await get(stub) < AT_ONCE
        assert accepted[0] == 2


async def test_an_idle_connection_that_ends_is_forgotten_before_the_next_call() -> None:
    async def close_at_once(stream: trio.SocketStream) -> None:
        await stream.receive_some()

    async with far_end(close_at_once) as (address, accepted), ChannelPool.open() as pool:
        stale = await pool.stub(address, KeyValueStub)
        with trio.fail_after(CALL_DEADLINE):
            while accepted[0] < 2:
                # Each stub after the peer closed comes from a new connection.
                fresh = await pool.stub(address, KeyValueStub)
                if fresh is not stale:
                    break
                await trio.sleep(0.01)
        assert fresh is not stale
        # A call on the stale connection is refused before anything is sent.
        with pytest.raises(ConnectionLostError) as lost:
            await stale.Get(pb.GetRequest(key=b"k"))
        assert lost.value.unsent


async def test_a_goaway_fails_the_calls_it_did_not_process_as_never_sent() -> None:
    async def go_away(stream: trio.SocketStream) -> None:
        server = await read_request(stream)
        server.close_connection(
            error_code=h2.errors.ErrorCodes.NO_ERROR, additional_data=b"bye", last_stream_id=0
        )
        await stream.send_all(server.data_to_send())
        await trio.sleep(CALL_DEADLINE)  # the connection stays open: the GOAWAY alone ends it

    async with far_end(go_away) as (address, _), ChannelPool.open() as pool:
        stub = await pool.stub(address, KeyValueStub)
        started = trio.current_time()
        with pytest.raises(ConnectionLostError) as lost:
            with trio.fail_after(CALL_DEADLINE):
                await stub.Get(pb.GetRequest(key=b"k"))
        assert trio.current_time() - started < AT_ONCE
        assert lost.value.unsent
        assert "GOAWAY" in str(lost.value)


async def answer_put(stream: trio.SocketStream) -> None:
    """Answer one Put as a node would: headers, a PutResponse, trailers with status OK."""
    server = await read_request(stream)
    response = pb.PutResponse(version=pb.Version(wall_ms=7, logical=0, node_id="node-1"))
    body = response.SerializeToString()
    server.send_headers(1, [(":status", "200"), ("content-type", "application/grpc")])
    server.send_data(1, b"\x00" + len(body).to_bytes(4, "big") + body)
    server.send_headers(1, [("grpc-status", "0")], end_stream=True)
    await stream.send_all(server.data_to_send())
    await trio.sleep(CALL_DEADLINE)


async def test_a_write_that_never_reached_the_node_is_sent_again_on_a_fresh_connection() -> None:
    connections = 0

    async def go_away_once(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            server = await read_request(stream)
            server.close_connection(last_stream_id=0)  # "I processed none of your calls"
            await stream.send_all(server.data_to_send())
            await trio.sleep(CALL_DEADLINE)
        else:
            await answer_put(stream)

    async with far_end(go_away_once) as (address, _), ChannelPool.open() as pool:
        client = Client(pool, [address], CALL_DEADLINE, route_by_key=False)
        with trio.fail_after(CALL_DEADLINE):
            version = await client.put(b"k", b"v")
        assert version.wall_ms == 7
        assert connections == 2
