"""The reference server: the node's gRPC stack serving canned answers, no storage.

`python -m benchmarks.echo_server` serves the same KeyValue service as a node
(and a canned Health/Check answering SERVING),
through the same purerpc stack (a3redis.node.bind_listener and
a3redis.net.grpc_server.serve_grpc, so it listens on 127.0.0.1 only), but Put,
Get and BatchPut return fixed responses shaped like a node's. The gap between
it and a node is what the node itself costs per request. It prints
`PORT <number>` once serving and stops cleanly on SIGTERM or SIGINT.

`--stock` serves through purerpc exactly as shipped instead (its own
connection handler, sockets and hpack; only the listening socket is ours, for
127.0.0.1): the "bare purerpc echo server" of the foundation issue's floors.
The default, a3redis's stack (a3redis.net.grpc_socket, a3redis.net.h2_tuning), is
the stricter reference: the gap to it is what the key-value layer costs.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

import anyio
import anyio.abc
import purerpc
import trio
from purerpc.server import ConnectionHandler

from a3redis.net.grpc_server import RequestGate, serve_grpc
from a3redis.node import bind_listener
from a3redis.v1 import health_pb2 as hpb
from a3redis.v1 import kv_pb2 as pb
from a3redis.v1.health_grpc import HealthServicer
from a3redis.v1.kv_grpc import KeyValueServicer

HOST = "127.0.0.1"
VALUE_BYTES = 100
# A version shaped like the node's (current epoch milliseconds, a small counter).
_VERSION = pb.Version(wall_ms=1_750_000_000_000, logical=7, node_id="node-1")


class EchoService(KeyValueServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self._put_response = pb.PutResponse(version=_VERSION)
        self._get_response = pb.GetResponse(found=True, value=b"v" * VALUE_BYTES, version=_VERSION)
        self._batch_responses: dict[int, pb.BatchPutResponse] = {}

    async def Put(self, request: pb.PutRequest) -> pb.PutResponse:
        return self._put_response

    async def Get(self, request: pb.GetRequest) -> pb.GetResponse:
        return self._get_response

    async def BatchPut(self, request: pb.BatchPutRequest) -> pb.BatchPutResponse:
        # One version per pair, like the node; cached per batch size.
        size = len(request.pairs)
        response = self._batch_responses.get(size)
        if response is None:
            response = pb.BatchPutResponse(versions=[_VERSION] * size)
            self._batch_responses[size] = response
        return response


class EchoHealth(HealthServicer):  # type: ignore[misc]
    """Health/Check answering SERVING, canned: the reference for the node's health floor."""

    def __init__(self) -> None:
        self._serving = hpb.HealthCheckResponse(status=hpb.HealthCheckResponse.SERVING)

    async def Check(self, request: hpb.HealthCheckRequest) -> hpb.HealthCheckResponse:
        return self._serving


async def serve_stock(
    sock: Any,
    services: list[Any],
    stop: trio.Event,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """purerpc's own ConnectionHandler on our socket, until `stop` is set."""
    listener = await anyio.abc.SocketListener.from_socket(sock)
    handler = ConnectionHandler({service.name: service for service in services}, purerpc.Server())
    async with anyio.create_task_group() as connections:

        async def accept() -> None:
            while True:
                connections.start_soon(handler, await listener.accept())

        connections.start_soon(accept)
        task_status.started()
        await stop.wait()
        connections.cancel_scope.cancel()


async def serve_echo(stock: bool) -> None:
    sock = bind_listener(HOST, 0, "echo port")
    stop = trio.Event()
    services = [EchoService().service, EchoHealth().service]
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            if stock:
                await nursery.start(serve_stock, sock, services, stop)
            else:
                await nursery.start(serve_grpc, sock, services, RequestGate(), stop, 0.5)
            print(f"PORT {sock.getsockname()[1]}", flush=True)
            async for _ in signals:
                stop.set()
                break
    sock.close()


def main() -> int:
    trio.run(serve_echo, "--stock" in sys.argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
