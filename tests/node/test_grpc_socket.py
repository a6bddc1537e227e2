"""a3redis.net.grpc_socket: the trio-level inbox and wake-ups inside purerpc's streams.

The inbox and the flow-control wait are tested alone; a response larger than
a grpcio client's flow-control window goes through a node's lean socket,
and a3redis's own client (whose channels use it too) reads it back.
"""

from __future__ import annotations

from typing import Any

import grpc
import trio
import trio.testing

from a3redis.client import Client
from a3redis.net.grpc_socket import LeanStream, _Inbox
from a3redis.v1 import kv_pb2 as pb
from tests.node.conftest import RunningNode


async def test_the_inbox_hands_over_events_in_order_and_wakes_a_waiting_receiver() -> None:
    inbox = _Inbox()
    received: list[Any] = []

    async def receive(count: int) -> None:
        for _ in range(count):
            received.append(await inbox.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive, 3)
        await trio.testing.wait_all_tasks_blocked()
        assert received == []  # nothing sent yet: the receiver waits
        await inbox.send("headers")
        await inbox.send("message")
        await trio.testing.wait_all_tasks_blocked()
        assert received == ["headers", "message"]
        await inbox.send("end")
    assert received == ["headers", "message", "end"]


async def test_a_cancelled_receive_leaves_the_inbox_usable() -> None:
    inbox = _Inbox()
    with trio.move_on_after(0.01) as scope:
        await inbox.receive()
    assert scope.cancelled_caught
    await inbox.send("late")
    with trio.fail_after(1):
        assert await inbox.receive() == "late"
    # An event already waiting is still a cancellation point for a cancelled task.
    await inbox.send("unread")
    with trio.CancelScope() as cancelled:
        cancelled.cancel()
        await inbox.receive()
    assert cancelled.cancelled_caught
    assert await inbox.receive() == "unread"


class _NoWindowYet:
    """What LeanStream._send uses of a GRPCConnection; the window opens on demand."""

    class config:
        message_encoding = None
        max_message_length = 1 << 20

    def __init__(self) -> None:
        self.window = 0
        self.sent: list[bytes] = []

    def flow_control_window(self, stream_id: int) -> int:
        return self.window

    def send_data(self, stream_id: int, data: bytes) -> None:
        self.sent.append(data)
        self.window -= len(data)


class _Socket:
    async def flush(self) -> None:
        await trio.lowlevel.checkpoint()


class _GrpcSocket:
    """What a LeanStream marks on its connection when it sends (the keepalive policy)."""

    sent_since_ping = False


async def test_a_stream_out_of_window_waits_for_a_window_update() -> None:
    connection = _NoWindowYet()
    stream = LeanStream(connection, 1, _Socket(), _GrpcSocket())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream._send, b"x" * 100)
        await trio.testing.wait_all_tasks_blocked()
        assert connection.sent == []  # no window: the sender waits
        connection.window = 60
        await stream._set_flow_control_update()
        await trio.testing.wait_all_tasks_blocked()
        assert sum(map(len, connection.sent)) == 60  # 5-byte gRPC prefix + 55 bytes
        connection.window = 1000
        await stream._set_flow_control_update()
    assert b"".join(connection.sent) == b"\x00\x00\x00\x00\x64" + b"x" * 100


def _grpcio_batch_get(endpoint: str, keys: list[bytes]) -> pb.BatchGetResponse:
    with grpc.insecure_channel(endpoint) as channel:
        call = channel.unary_unary(
            "/a3redis.v1.KeyValue/BatchGet",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=pb.BatchGetResponse.FromString,
        )
        response: pb.BatchGetResponse = call(pb.BatchGetRequest(keys=keys), timeout=10)
        return response


async def test_a_response_larger_than_the_clients_window_arrives_whole(
    running_node: RunningNode, client: Client
) -> None:
    # 100 values of 1,000 bytes: one ~100 KB message, more than the 65,535
    # bytes an HTTP/2 stream may send before the client's first WINDOW_UPDATE.
    keys = [b"big-%03d" % i for i in range(100)]
    values = [bytes([i % 251]) * 1000 for i in range(100)]
    await client.batch_put(list(zip(keys, values, strict=True)))
    response = await trio.to_thread.run_sync(_grpcio_batch_get, running_node.endpoint, keys)
    assert [result.value for result in response.results] == values
    ours = await client.batch_get(keys)
    assert [result.value for result in ours] == values
