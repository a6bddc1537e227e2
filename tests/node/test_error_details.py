"""Error details (google.rpc.ErrorInfo, RetryInfo) of an in-process node's failed calls.

a3redis's own client exposes them (`reason`, `metadata`, `retry_delay`); a stock grpcio
client decodes the same trailer with grpcio-status and googleapis' google.rpc classes
(a3redis's copies of those messages live under another package, so both load in one
process). grpcio runs in worker threads so the node keeps serving on the trio loop.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
import trio
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from purerpc.grpclib.status import StatusCode

from a3redis.api import status_details
from a3redis.client import Client, ClientError
from a3redis.core.error_details import ErrorDetails
from a3redis.v1 import health_pb2 as hpb
from a3redis.v1 import kv_pb2 as pb
from tests.node.conftest import RunningNode, Start


def _grpcio_failure(endpoint: str, method: str, request: Any) -> tuple[Any, dict[str, Any]]:
    """The status code of a failed call and what grpcio-status decodes from its trailer."""
    with grpc.insecure_channel(endpoint) as channel:
        call = channel.unary_unary(
            method,
            request_serializer=lambda message: (
                message if isinstance(message, bytes) else message.SerializeToString()
            ),
            response_deserializer=lambda data: data,
        )
        try:
            call(request, timeout=5)
        except grpc.RpcError as error:
            status = rpc_status.from_call(error)
            found: dict[str, Any] = {"status": status}
            assert status is not None
            for packed in status.details:
                if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    packed.Unpack(info)
                    found["info"] = info
                if packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    retry = error_details_pb2.RetryInfo()
                    packed.Unpack(retry)
                    found["retry"] = retry
            return error.code(), found
    raise AssertionError(f"{method} did not fail")


async def test_a_stock_grpcio_client_decodes_the_error_info(running_node: RunningNode) -> None:
    too_long = pb.PutRequest(key=b"k" * 65, value=b"v")
    code, found = await trio.to_thread.run_sync(
        _grpcio_failure, running_node.endpoint, "/a3redis.v1.KeyValue/Put", too_long
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    # grpcio-status checks that the trailer's code and message match the call's.
    assert found["status"].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    info = found["info"]
    assert (info.reason, info.domain) == ("KEY_TOO_LARGE", "a3redis")
    assert dict(info.metadata) == {"bytes": "65", "limit": "64"}
    assert "retry" not in found


async def test_calls_the_server_refuses_itself_carry_details_too(
    running_node: RunningNode,
) -> None:
    for method, request, code, reason in [
        ("/a3redis.v1.KeyValue/NoSuch", pb.GetRequest(), "UNIMPLEMENTED", "NOT_SERVED"),
        (
            "/grpc.health.v1.Health/Check",
            hpb.HealthCheckRequest(service="x"),
            "NOT_FOUND",
            "SERVICE_UNKNOWN",
        ),
        ("/a3redis.v1.KeyValue/Get", b"\xff\xff", "INVALID_ARGUMENT", "MALFORMED_REQUEST"),
        ("/grpc.health.v1.Health/Check", b"\xff\xff", "INVALID_ARGUMENT", "MALFORMED_REQUEST"),
    ]:
        got, found = await trio.to_thread.run_sync(
            _grpcio_failure, running_node.endpoint, method, request
        )
        assert (got.name, found["info"].reason) == (code, reason)


async def test_the_python_client_exposes_reason_metadata_and_no_retry_for_invalid_input(
    client: Client,
) -> None:
    with pytest.raises(ClientError) as refused:
        await client.put(b"k", b"v" * 1001)
    error = refused.value
    assert (error.code, error.reason) == ("INVALID_ARGUMENT", "VALUE_TOO_LARGE")
    assert error.metadata == {"bytes": "1001", "limit": "1000"}
    assert error.retry_delay is None


async def test_a_node_that_has_not_joined_says_so_with_a_retry_delay(start_node: Start) -> None:
    # A peer that never answers keeps this node at its cold-start gate.
    node = await start_node(PEERS="127.0.0.1:9", JOIN_TIMEOUT="600")
    async with Client.connect(node.endpoint, request_timeout=5) as client:
        with pytest.raises(ClientError) as refused:
            await client.put(b"k", b"v")
    error = refused.value
    assert (error.code, error.reason, error.retry_delay) == ("UNAVAILABLE", "NOT_JOINED", 1.0)


def test_details_survive_encoding_and_decoding() -> None:
    said = ErrorDetails("QUORUM_UNAVAILABLE", {"required": "2", "alive": "1"}, 1.5)
    data = status_details.encode(StatusCode.UNAVAILABLE, "m", said)
    assert status_details.decode(data) == said
    assert status_details.decode(b"\xff not a status") is None
    assert status_details.decode(b"") is None  # a Status without an ErrorInfo


def test_every_reason_a_client_can_see_is_documented_in_kv_proto() -> None:
    import re
    from pathlib import Path

    from a3redis.core import errors, validation
    from a3redis.core.error_details import INVALID_REASONS
    from a3redis.net import grpc_server
    from a3redis.storage import store

    proto = (Path(__file__).resolve().parents[2] / "proto/a3redis/v1/kv.proto").read_text()
    documented = set(re.findall(r"\b[A-Z][A-Z_]{3,}\b", proto))
    classes: list[type[errors.RequestError]] = [errors.RequestError]
    seen: set[str] = set()
    while classes:
        cls = classes.pop()
        classes.extend(cls.__subclasses__())
        if cls is not validation.InvalidRequestError:
            seen.add(cls.reason)
    seen |= set(INVALID_REASONS.values()) - {"WRONG_KEY"}  # WRONG_KEY: replica calls only
    seen |= {"KEY_TOO_LARGE", "VALUE_TOO_LARGE", "NOT_SERVED", "INTERNAL"}
    assert grpc_server.ShuttingDownError.reason in seen and store.StoreFailedError.reason in seen
    assert seen - {"UNAVAILABLE"} <= documented, sorted(seen - documented)
