"""A grpcio client that sends whatever a test asks, to a real node process.

Rules: nothing here checks or fixes what it sends (that is the node's job);
every call has a timeout; traffic goes to 127.0.0.1 only. Failures come
back as grpc.RpcError, whose code() and details() the tests inspect.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import grpc

from a3redis.v1 import kv_pb2 as pb
from a3redis.v1 import replica_pb2 as rpb
from tests.support.processes import NodeProcess

TIMEOUT = 10.0


def grpc_request_headers(
    node: NodeProcess, path: str = "/a3redis.v1.KeyValue/Put"
) -> list[tuple[str, str]]:
    """The headers of a gRPC request to `path`, for a raw HTTP/2 (h2) client."""
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", node.endpoint),
        ("content-type", "application/grpc+proto"),
        ("te", "trailers"),
    ]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def pb_record(key: bytes, value: bytes | None, wall_ms: int, logical: int, node_id: str) -> Any:
    return rpb.Record(
        key=key,
        value=value or b"",
        tombstone=value is None,
        version=pb.Version(wall_ms=wall_ms, logical=logical, node_id=node_id),
    )


class RawClient:
    def __init__(self, node: NodeProcess) -> None:
        self.node = node
        options = [
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.enable_http_proxy", 0),
        ]
        self.channel = grpc.insecure_channel(node.endpoint, options=options)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(self, path: str, request: Any, response_type: Any) -> Any:
        """Send `request` (a message, or raw bytes as they are) to `path`."""
        method = self.channel.unary_unary(
            path,
            request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        return method(request, timeout=TIMEOUT)

    def stream(self, path: str, request: Any, response_type: Any) -> list[Any]:
        method = self.channel.unary_stream(
            path,
            request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        return list(method(request, timeout=TIMEOUT))

    # ----- the Replica service ---------------------------------------------------------

    def apply(self, records: Sequence[Any], coordinator: str = "node-9") -> list[int]:
        request = rpb.ApplyRequest(coordinator=coordinator, records=list(records))
        response = self.call("/a3redis.v1.Replica/Apply", request, rpb.ApplyResponse)
        return list(response.outcomes)

    def read(self, keys: Sequence[bytes]) -> list[Any]:
        request = rpb.ReadRequest(keys=list(keys))
        return list(self.call("/a3redis.v1.Replica/Read", request, rpb.ReadResponse).results)

    # ----- the KeyValue service --------------------------------------------------------

    def put(
        self,
        key: bytes,
        value: bytes,
        consistency: pb.Consistency = pb.CONSISTENCY_DEFAULT,
        after: pb.Version | None = None,
    ) -> Any:
        request = pb.PutRequest(key=key, value=value, consistency=consistency, after=after)
        return self.call("/a3redis.v1.KeyValue/Put", request, pb.PutResponse)

    def delete(
        self,
        key: bytes,
        consistency: pb.Consistency = pb.CONSISTENCY_DEFAULT,
        after: pb.Version | None = None,
    ) -> Any:
        request = pb.DeleteRequest(key=key, consistency=consistency, after=after)
        return self.call("/a3redis.v1.KeyValue/Delete", request, pb.DeleteResponse)

    def get(self, key: bytes, consistency: pb.Consistency = pb.CONSISTENCY_DEFAULT) -> Any:
        request = pb.GetRequest(key=key, consistency=consistency)
        return self.call("/a3redis.v1.KeyValue/Get", request, pb.GetResponse)


def refused(call: Any, *args: Any, **kwargs: Any) -> tuple[grpc.StatusCode, str]:
    """The status code and message of a call that must fail."""
    try:
        call(*args, **kwargs)
    except grpc.RpcError as error:
        return error.code(), error.details()
    raise AssertionError(f"{call} succeeded but should have failed")
