"""A grpcio client against the purerpc server, and the node's HTTP endpoints.

grpcio's blocking client and urllib run in worker threads so the in-process
node keeps serving on the trio loop.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import grpc
import trio

from a3redis.client import Client
from a3redis.v1 import kv_pb2 as pb
from tests.node.conftest import RunningNode


def _grpcio_session(endpoint: str) -> dict[str, Any]:
    with grpc.insecure_channel(endpoint) as channel:

        def unary(method: str, response: Any) -> Any:
            return channel.unary_unary(
                f"/a3redis.v1.KeyValue/{method}",
                request_serializer=lambda message: message.SerializeToString(),
                response_deserializer=response.FromString,
            )

        put = unary("Put", pb.PutResponse)(pb.PutRequest(key=b"interop", value=b"works"), timeout=5)
        got = unary("Get", pb.GetResponse)(pb.GetRequest(key=b"interop"), timeout=5)
        scan = channel.unary_stream(
            "/a3redis.v1.KeyValue/Scan",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=pb.Entry.FromString,
        )
        entries = list(scan(pb.ScanRequest(prefix=b"inter"), timeout=5))
        try:
            # Proto3 enums are open: a client can send a number the server never defined.
            unary("Get", pb.GetResponse)(pb.GetRequest(key=b"interop", consistency=9), timeout=5)  # type: ignore[arg-type]
            unknown: tuple[Any, str] = (None, "")
        except grpc.RpcError as error:
            unknown = (error.code(), error.details())
        try:
            unary("Put", pb.PutResponse)(pb.PutRequest(key=b"", value=b"x"), timeout=5)
            empty: Any = None
        except grpc.RpcError as error:
            empty = error.code()
        return {"put": put, "got": got, "entries": entries, "unknown": unknown, "empty": empty}


async def test_grpcio_client_calls_the_purerpc_server(running_node: RunningNode) -> None:
    answers = await trio.to_thread.run_sync(_grpcio_session, running_node.endpoint)
    assert answers["put"].version.node_id == "node-1"
    assert answers["got"].found and answers["got"].value == b"works"
    assert answers["got"].version == answers["put"].version
    assert [entry.key for entry in answers["entries"]] == [b"interop"]
    code, details = answers["unknown"]
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown consistency level 9" in details
    assert answers["empty"] == grpc.StatusCode.INVALID_ARGUMENT


def _http_get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


async def test_health_and_membership_in_the_seed_format(running_node: RunningNode) -> None:
    base = f"http://127.0.0.1:{running_node.ports.http}"
    status, health = await trio.to_thread.run_sync(_http_get, f"{base}/health")
    assert status == 200 and health["status"] == "ok" and health["node_id"] == "node-1"

    status, members = await trio.to_thread.run_sync(_http_get, f"{base}/membership")
    assert status == 200
    assert list(members) == ["node-1"]
    me = members["node-1"]
    assert me["addr"] == f"127.0.0.1:{running_node.ports.grpc}"
    assert isinstance(me["timestamp"], int) and me["timestamp"] > 1_700_000_000
    assert me["status"] == "alive"

    status, _ = await trio.to_thread.run_sync(_http_get, f"{base}/no-such-page")
    assert status == 404


async def test_copying_is_paced_lower_while_the_node_serves_clients(
    running_node: RunningNode, client: Client
) -> None:
    base = f"http://127.0.0.1:{running_node.ports.http}"

    async def pace() -> dict[str, Any]:
        status, body = await trio.to_thread.run_sync(_http_get, f"{base}/api/transition")
        assert status == 200
        return body["pace"]  # type: ignore[no-any-return]

    config = running_node.config
    await trio.sleep(0.6)  # a whole measurement window with no client
    idle = await pace()
    assert idle["busy"] is False
    assert idle["max_keys_per_second"] == config.stream_max_keys_per_second
    with trio.move_on_after(1.5):
        for n in range(2000):  # bounded: far more than 20 requests a second for 1.5 s
            await client.get(f"k{n}".encode())
    busy = await pace()
    assert busy["busy"] is True and busy["requests_per_second"] > 20
    assert busy["max_keys_per_second"] == config.stream_busy_keys_per_second
    await trio.sleep(1.2)  # a whole window with no client again
    assert (await pace())["busy"] is False
