"""A trio client for a3redis.

Rules: one long-lived channel per endpoint (a ChannelPool); every call has a
deadline; every failure becomes a ClientError carrying the gRPC status name,
and a call that timed out or lost its connection mid-flight is reported as
"may or may not have been applied", never retried silently. Reads may try
the next endpoint when one is unreachable; writes move on only when the
first endpoint could not have received them (connection refused).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import h2.exceptions
import purerpc
import trio

from a3redis import wire
from a3redis.channels import ChannelPool
from a3redis.config import Address
from a3redis.core.consistency import Consistency
from a3redis.core.hlc import Version
from a3redis.v1 import kv_pb2 as pb
from a3redis.v1.kv_grpc import KeyValueStub

log = logging.getLogger(__name__)

T = TypeVar("T")

_TRANSPORT_ERRORS = (
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    h2.exceptions.ProtocolError,
    purerpc.StreamClosedError,
    purerpc.ProtocolError,
)


class ClientError(Exception):
    """A request failed. `code` is the gRPC status name (e.g. "UNAVAILABLE")."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class GetResult:
    key: bytes
    found: bool
    value: bytes | None
    version: Version | None


@dataclass(frozen=True, slots=True)
class Entry:
    key: bytes
    value: bytes
    version: Version


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    grpc_address: str
    gossip_address: str
    cluster_name: str
    replication_factor: int
    version: str


def _status_error(error: purerpc.RpcFailedError) -> ClientError:
    status = error.status
    return ClientError(status.status_code.name, status.status_message or "")


class Client:
    def __init__(self, pool: ChannelPool, endpoints: Sequence[Address], timeout: float) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is required")
        self._pool = pool
        self._endpoints = list(endpoints)
        self.timeout = timeout

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, endpoints: Sequence[str | Address] | str, request_timeout: float = 5.0
    ) -> AsyncIterator[Client]:
        if isinstance(endpoints, str):
            endpoints = [part for part in endpoints.split(",") if part.strip()]
        addresses = [e if isinstance(e, Address) else Address.parse(e) for e in endpoints]
        async with ChannelPool.open(connect_timeout=min(request_timeout, 3.0)) as pool:
            yield cls(pool, addresses, request_timeout)

    # ----- the API --------------------------------------------------------------------------

    async def put(
        self, key: bytes, value: bytes, consistency: Consistency | None = None
    ) -> Version:
        request = pb.PutRequest(
            key=key, value=value, consistency=wire.consistency_to_pb(consistency)
        )
        response = await self._call(lambda stub: stub.Put(request), idempotent=False)
        return wire.version_from_pb(response.version)

    async def get(self, key: bytes, consistency: Consistency | None = None) -> GetResult:
        request = pb.GetRequest(key=key, consistency=wire.consistency_to_pb(consistency))
        response = await self._call(lambda stub: stub.Get(request), idempotent=True)
        return _get_result(key, response)

    async def delete(self, key: bytes, consistency: Consistency | None = None) -> Version:
        request = pb.DeleteRequest(key=key, consistency=wire.consistency_to_pb(consistency))
        response = await self._call(lambda stub: stub.Delete(request), idempotent=False)
        return wire.version_from_pb(response.version)

    async def batch_put(
        self, pairs: Sequence[tuple[bytes, bytes]], consistency: Consistency | None = None
    ) -> list[Version]:
        request = pb.BatchPutRequest(
            pairs=[pb.KeyValuePair(key=k, value=v) for k, v in pairs],
            consistency=wire.consistency_to_pb(consistency),
        )
        response = await self._call(lambda stub: stub.BatchPut(request), idempotent=False)
        return [wire.version_from_pb(v) for v in response.versions]

    async def batch_get(
        self, keys: Sequence[bytes], consistency: Consistency | None = None
    ) -> list[GetResult]:
        request = pb.BatchGetRequest(
            keys=list(keys), consistency=wire.consistency_to_pb(consistency)
        )
        response = await self._call(lambda stub: stub.BatchGet(request), idempotent=True)
        return [_get_result(k, r) for k, r in zip(keys, response.results, strict=True)]

    async def describe(self) -> NodeInfo:
        response = await self._call(
            lambda stub: stub.Describe(pb.DescribeRequest()), idempotent=True
        )
        return NodeInfo(
            response.node_id,
            response.grpc_address,
            response.gossip_address,
            response.cluster_name,
            response.replication_factor,
            response.version,
        )

    async def scan(
        self,
        *,
        start: bytes = b"",
        end: bytes = b"",
        prefix: bytes = b"",
        limit: int = 0,
        consistency: Consistency | None = None,
    ) -> list[Entry]:
        """Entries in key order; the whole answer must arrive within the timeout."""
        request = pb.ScanRequest(
            start=start,
            end=end,
            prefix=prefix,
            limit=limit,
            consistency=wire.consistency_to_pb(consistency),
        )

        async def collect(stub: Any) -> list[Entry]:
            return [
                Entry(m.key, m.value, wire.version_from_pb(m.version))
                async for m in stub.Scan(request)
            ]

        return await self._call(collect, idempotent=True)

    # ----- transport ------------------------------------------------------------------------

    async def _call(self, invoke: Callable[[Any], Awaitable[T]], *, idempotent: bool) -> T:
        last_error: ClientError | None = None
        for address in self._endpoints:
            try:
                stub = await self._pool.stub(address, KeyValueStub)
            except (OSError, ConnectionError) as error:
                # Not connected: the request was never sent, any endpoint may take it.
                last_error = ClientError("UNAVAILABLE", f"{address}: {error}")
                continue
            try:
                with trio.fail_after(self.timeout):
                    return await invoke(stub)
            except purerpc.RpcFailedError as error:
                failure = _status_error(error)
                if failure.code != "UNAVAILABLE" or not idempotent:
                    raise failure from None
                last_error = failure
            except trio.TooSlowError:
                self._pool.discard(address)
                raise ClientError(
                    "DEADLINE_EXCEEDED",
                    f"no answer from {address} within {self.timeout}s; "
                    "the request may or may not have been applied",
                ) from None
            except _TRANSPORT_ERRORS as error:
                self._pool.discard(address)
                failure = ClientError(
                    "UNAVAILABLE",
                    f"connection to {address} failed during the request ({type(error).__name__})"
                    + ("" if idempotent else "; the request may or may not have been applied"),
                )
                if not idempotent:
                    raise failure from None
                last_error = failure
        assert last_error is not None
        raise last_error


def _get_result(key: bytes, response: pb.GetResponse) -> GetResult:
    version = wire.version_from_pb(response.version) if response.HasField("version") else None
    return GetResult(key, response.found, response.value if response.found else None, version)
