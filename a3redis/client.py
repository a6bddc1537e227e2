"""A trio client for a3redis.

Rules: one long-lived channel per endpoint (a ChannelPool); every call has a
deadline; every failure becomes a ClientError carrying the gRPC status name,
and a call that timed out or lost its connection mid-flight is reported as
"may or may not have been applied", never retried silently. Reads may try
the next endpoint when one is unreachable; writes move on only when the
first endpoint could not have received them (connection refused). A
connection that closes or is reset fails the calls waiting on it at once
(UNAVAILABLE, not a timeout: a3redis.net.grpc_socket) and is reconnected by
the next call; a call that never left because its connection was already
lost (or a GOAWAY said the node had not processed it) is sent once more on
a fresh connection to the same node, write or not: it cannot be applied twice.

With `token=` (a client token of the cluster's CLIENT_TOKENS_FILE) every
call carries the metadata `authorization: Bearer <token>`. With `tls_ca=`
(the CA that signed the nodes' certificates) every connection is TLS and
the node's certificate and name are verified; `tls_cert=` / `tls_key=`
present a client certificate (for nodes with TLS_REQUIRE_CLIENT_CERT=1).

The client is cluster-aware: it learns the members and the ring's
parameters from any endpoint (`Topology`, refreshed every few seconds) and
sends a single-key request to one of the key's replicas, which saves the
coordinator a hop; the given endpoints remain the fallback.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import anyio
import h2.exceptions
import purerpc
import trio

from a3redis.api import status_details, wire
from a3redis.core.consistency import Consistency
from a3redis.core.expiry import Condition
from a3redis.core.hlc import Version
from a3redis.core.ring import Ring
from a3redis.net.address import Address
from a3redis.net.channels import ChannelPool
from a3redis.net.grpc_socket import ConnectionLostError
from a3redis.net.tls import GRPC_ALPN, make_client_context
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
    """A request failed. `code` is the gRPC status name (e.g. "UNAVAILABLE").

    When the node said why (its google.rpc.ErrorInfo): `reason` (e.g.
    "QUORUM_UNAVAILABLE", listed in kv.proto), `metadata` (e.g. `required` and
    `alive` replicas) and `retry_delay` (seconds after which the same call may
    succeed; None when waiting does not help).
    """

    def __init__(
        self,
        code: str,
        message: str,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        retry_delay: float | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata: Mapping[str, str] = metadata or {}
        self.retry_delay = retry_delay


@dataclass(frozen=True, slots=True)
class GetResult:
    key: bytes
    found: bool
    value: bytes | None
    version: Version | None
    # When the value expires (wall-clock ms since the epoch); 0: never.
    expires_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class Entry:
    key: bytes
    value: bytes
    version: Version
    expires_at_ms: int = 0  # as in GetResult


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
    said = status_details.details_of_failure(status)
    if said is None:
        return ClientError(status.status_code.name, status.status_message or "")
    return ClientError(
        status.status_code.name,
        status.status_message or "",
        said.reason,
        said.metadata,
        said.retry_delay,
    )


# The node's error details arrive in a trailer purerpc's client would drop.
status_details.keep_details_in_client_errors()


TOPOLOGY_REFRESH = 5.0


@dataclass(frozen=True, slots=True)
class _Topology:
    ring: Ring
    addresses: dict[str, Address]  # members that are not dead or left
    fetched_at: float


class _WithMetadata:
    """A stub whose every call sends `metadata` (purerpc takes it per call)."""

    __slots__ = ("_metadata", "_stub")

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub = stub
        self._metadata = metadata

    def __getattr__(self, name: str) -> Any:
        return functools.partial(getattr(self._stub, name), metadata=self._metadata)


def authorization_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    """The gRPC metadata that presents `token`; None for no token."""
    if token is None:
        return None
    if not token or not all("!" <= character <= "~" for character in token):
        raise ValueError("a client token is printable ASCII without spaces")
    return (("authorization", f"Bearer {token}"),)


class Client:
    def __init__(
        self,
        pool: ChannelPool,
        endpoints: Sequence[Address],
        timeout: float,
        route_by_key: bool = True,
        token: str | None = None,
        http_tls: ssl.SSLContext | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is required")
        self.token = token
        # For the nodes' HTTP endpoints (the CLI's cluster commands): https with this
        # context when the gRPC connections are TLS.
        self.http_tls = http_tls
        self.http_scheme = "http" if http_tls is None else "https"
        self._metadata = authorization_metadata(token)
        self._pool = pool
        self._endpoints = list(endpoints)
        self.timeout = timeout
        self._route_by_key = route_by_key
        self._topology: _Topology | None = None
        self._rng = random.Random()
        # The newest version this client has seen: sent with every write so that
        # its writes are ordered after everything it saw, even across coordinators
        # whose wall clocks disagree.
        self.seen: Version | None = None

    def _saw(self, version: Version | None) -> None:
        if version is not None and (self.seen is None or version > self.seen):
            self.seen = version

    def _after(self) -> pb.Version | None:
        return None if self.seen is None else wire.version_to_pb(self.seen)

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        endpoints: Sequence[str | Address] | str,
        request_timeout: float = 5.0,
        route_by_key: bool = True,
        local_host: str | None = None,
        token: str | None = None,
        tls_ca: str | Path | None = None,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
    ) -> AsyncIterator[Client]:
        """A client of `endpoints`; `local_host` is the address its connections come from;
        `token` is sent with every call (`authorization: Bearer <token>`). With `tls_ca`
        (a PEM file of the CA that signed the nodes' certificates) or a client certificate,
        connections are TLS; `tls_cert` and `tls_key` (PEM files) present a certificate."""
        if isinstance(endpoints, str):
            endpoints = [part for part in endpoints.split(",") if part.strip()]
        addresses = [e if isinstance(e, Address) else Address.parse(e) for e in endpoints]
        grpc_tls = http_tls = None
        if tls_ca is not None or tls_cert is not None:
            if (tls_cert is None) != (tls_key is None):
                raise ValueError("a client certificate needs both tls_cert and tls_key")
            ca, cert, key = (None if f is None else Path(f) for f in (tls_ca, tls_cert, tls_key))
            grpc_tls = make_client_context(ca, cert, key, GRPC_ALPN)
            http_tls = make_client_context(ca, cert, key)
        async with ChannelPool.open(
            connect_timeout=min(request_timeout, 3.0), local_host=local_host, ssl_context=grpc_tls
        ) as pool:
            yield cls(pool, addresses, request_timeout, route_by_key, token, http_tls)

    # ----- the API --------------------------------------------------------------------------

    async def put(
        self,
        key: bytes,
        value: bytes,
        consistency: Consistency | None = None,
        *,
        ttl: float | timedelta | None = None,
    ) -> Version:
        """Write `value`; with `ttl` (seconds or a timedelta) the key expires that long
        after the write's version."""
        request = pb.PutRequest(
            key=key,
            value=value,
            consistency=wire.consistency_to_pb(consistency),
            after=self._after(),
        )
        if ttl is not None:
            request.ttl_ms = ttl_milliseconds(ttl)
        response = await self._call(
            lambda stub: stub.Put(request), idempotent=False, key=_route(key, consistency)
        )
        version = wire.version_from_pb(response.version)
        self._saw(version)
        return version

    async def get(self, key: bytes, consistency: Consistency | None = None) -> GetResult:
        request = pb.GetRequest(key=key, consistency=wire.consistency_to_pb(consistency))
        response = await self._call(
            lambda stub: stub.Get(request), idempotent=True, key=_route(key, consistency)
        )
        result = _get_result(key, response)
        self._saw(result.version)
        return result

    async def expire(
        self,
        key: bytes,
        ttl: float | timedelta,
        condition: Condition = Condition.ALWAYS,
        consistency: Consistency | None = None,
    ) -> bool:
        """Make `key` expire `ttl` from now (Redis's EXPIRE, with NX/XX/GT/LT as
        `condition`); whether it was set (False: missing key, or condition not met)."""
        request = pb.ExpireRequest(
            key=key,
            ttl_ms=ttl_milliseconds(ttl),
            condition=wire.condition_to_pb(condition),
            consistency=wire.consistency_to_pb(consistency),
        )
        response = await self._call(
            lambda stub: stub.Expire(request), idempotent=False, key=_route(key, consistency)
        )
        return bool(response.set)

    async def persist(self, key: bytes, consistency: Consistency | None = None) -> bool:
        """Remove `key`'s expiry; whether it had one (Redis's PERSIST)."""
        request = pb.PersistRequest(key=key, consistency=wire.consistency_to_pb(consistency))
        response = await self._call(
            lambda stub: stub.Persist(request), idempotent=False, key=_route(key, consistency)
        )
        return bool(response.removed)

    async def ttl(self, key: bytes, consistency: Consistency | None = None) -> float:
        """Seconds until `key` expires, as Redis's TTL answers: -2.0 if the key is
        missing, -1.0 if it has no expiry. Counted on this machine's clock from the
        expiry the node returns (the node decides whether the key is still there)."""
        result = await self.get(key, consistency)
        if not result.found:
            return -2.0
        if not result.expires_at_ms:
            return -1.0
        return max(result.expires_at_ms - time.time() * 1000, 1.0) / 1000

    async def delete(self, key: bytes, consistency: Consistency | None = None) -> Version:
        request = pb.DeleteRequest(
            key=key, consistency=wire.consistency_to_pb(consistency), after=self._after()
        )
        response = await self._call(
            lambda stub: stub.Delete(request), idempotent=False, key=_route(key, consistency)
        )
        version = wire.version_from_pb(response.version)
        self._saw(version)
        return version

    async def batch_put(
        self, pairs: Sequence[tuple[bytes, bytes]], consistency: Consistency | None = None
    ) -> list[Version]:
        request = pb.BatchPutRequest(
            pairs=[pb.KeyValuePair(key=k, value=v) for k, v in pairs],
            consistency=wire.consistency_to_pb(consistency),
            after=self._after(),
        )
        response = await self._call(lambda stub: stub.BatchPut(request), idempotent=False)
        versions = [wire.version_from_pb(v) for v in response.versions]
        for version in versions:
            self._saw(version)
        return versions

    async def batch_get(
        self, keys: Sequence[bytes], consistency: Consistency | None = None
    ) -> list[GetResult]:
        request = pb.BatchGetRequest(
            keys=list(keys), consistency=wire.consistency_to_pb(consistency)
        )
        response = await self._call(lambda stub: stub.BatchGet(request), idempotent=True)
        results = [_get_result(k, r) for k, r in zip(keys, response.results, strict=True)]
        for result in results:
            self._saw(result.version)
        return results

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
                Entry(m.key, m.value, wire.version_from_pb(m.version), m.expires_at_ms)
                async for m in stub.Scan(request)
            ]

        return await self._call(collect, idempotent=True)

    # ----- transport ------------------------------------------------------------------------

    async def repair(self, wait: bool = True) -> list[dict[str, Any]]:
        """Start an anti-entropy round on the endpoint's node; with `wait`, its report per peer."""
        request = pb.RepairRequest(wait=wait)
        response = await self._call(lambda stub: stub.Repair(request), idempotent=True)
        return [
            {
                "peer": p.peer,
                "partitions": p.partitions,
                "tree_nodes": p.tree_nodes,
                "leaves": p.leaves,
                "keys_pulled": p.keys_pulled,
                "keys_pushed": p.keys_pushed,
                "bytes_sent": p.bytes_sent,
                "bytes_received": p.bytes_received,
                "seconds": round(p.seconds, 4),
                "calls": p.calls,
                "skipped": p.skipped,
            }
            for p in response.peers
        ]

    async def topology(self) -> list[tuple[str, str, str]]:
        """The members as (node id, gRPC address, status), as one node sees them."""
        response = await self._call(
            lambda stub: stub.Topology(pb.TopologyRequest()), idempotent=True
        )
        return [(m.node_id, m.grpc_address, m.status) for m in response.members]

    async def _refresh_topology(self) -> None:
        now = trio.current_time()
        if self._topology is not None and now - self._topology.fetched_at < TOPOLOGY_REFRESH:
            return
        try:
            response = await self._call(
                lambda stub: stub.Topology(pb.TopologyRequest()), idempotent=True
            )
            in_ring = [m.node_id for m in response.members if m.status != "left"]
            addresses = {
                m.node_id: Address.parse(m.grpc_address)
                for m in response.members
                if m.status in ("alive", "suspect")
            }
            previous = self._topology.ring if self._topology else None
            ring = (
                previous
                if previous is not None
                and previous.members == tuple(sorted(set(in_ring)))
                and previous.replication_factor == response.replication_factor
                and previous.partitions == response.partitions
                else Ring(in_ring, response.replication_factor, response.partitions)
            )
            self._topology = _Topology(ring, addresses, now)
        except (ClientError, ValueError) as error:
            # An older or unreachable server: keep sending to the given endpoints.
            log.debug("no topology: %s", error)
            self._topology = _Topology(Ring([], 1, 1), {}, now)

    async def _candidates(self, key: bytes | None) -> list[Address]:
        if key is None or not self._route_by_key:
            return self._endpoints
        await self._refresh_topology()
        topology = self._topology
        if topology is None or not topology.addresses:
            return self._endpoints
        replicas = [
            topology.addresses[node]
            for node in topology.ring.preference_list(key)
            if node in topology.addresses
        ]
        self._rng.shuffle(replicas)
        return replicas + [e for e in self._endpoints if e not in replicas]

    async def _call(
        self,
        invoke: Callable[[Any], Awaitable[T]],
        *,
        idempotent: bool,
        key: bytes | None = None,
    ) -> T:
        last_error: ClientError | None = None
        for address in await self._candidates(key):
            for attempt in range(2):
                try:
                    return await self._call_once(invoke, address, idempotent)
                except _NeverSent as never_sent:
                    last_error = never_sent.error
                    if never_sent.reconnect and attempt == 0:
                        continue  # the same node, on a fresh connection
                    break
                except _MaySend as failed:
                    last_error = failed.error
                    break
        assert last_error is not None
        raise last_error

    async def _call_once(
        self, invoke: Callable[[Any], Awaitable[T]], address: Address, idempotent: bool
    ) -> T:
        """One try at `address`. Raises _NeverSent (the request did not leave), _MaySend
        (another node may be tried) or ClientError (the caller's answer)."""
        try:
            stub = await self._pool.stub(address, KeyValueStub)
        except (OSError, ConnectionError) as error:
            # Not connected: the request was never sent, any endpoint may take it.
            raise _NeverSent(ClientError("UNAVAILABLE", f"{address}: {error}")) from None
        if self._metadata is not None:
            stub = _WithMetadata(stub, self._metadata)
        try:
            with trio.fail_after(self.timeout):
                return await invoke(stub)
        except purerpc.RpcFailedError as error:
            failure = _status_error(error)
            if failure.code != "UNAVAILABLE" or not idempotent:
                raise failure from None
            raise _MaySend(failure) from None
        except trio.TooSlowError:
            self._pool.discard(address)
            raise ClientError(
                "DEADLINE_EXCEEDED",
                f"no answer from {address} within {self.timeout}s; "
                "the request may or may not have been applied",
            ) from None
        except ConnectionLostError as error:
            self._pool.discard(address)
            if error.unsent:
                unsent = ClientError(
                    "UNAVAILABLE", f"{address}: {error} (the request was not sent)"
                )
                raise _NeverSent(unsent, reconnect=True) from None
            raise self._lost_during(address, error, idempotent) from None
        except _TRANSPORT_ERRORS as error:
            self._pool.discard(address)
            raise self._lost_during(address, error, idempotent) from None

    @staticmethod
    def _lost_during(address: Address, error: Exception, idempotent: bool) -> Exception:
        failure = ClientError(
            "UNAVAILABLE",
            f"connection to {address} failed during the request ({type(error).__name__})"
            + ("" if idempotent else "; the request may or may not have been applied"),
        )
        return _MaySend(failure) if idempotent else failure


class _NeverSent(Exception):
    """The request did not leave: another node, or with `reconnect` the same one, may take it."""

    def __init__(self, error: ClientError, reconnect: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        self.reconnect = reconnect


class _MaySend(Exception):
    """An idempotent request failed on this node: the next one may take it."""

    def __init__(self, error: ClientError) -> None:
        super().__init__(error.message)
        self.error = error


def _route(key: bytes, consistency: Consistency | None) -> bytes | None:
    # LOCAL means "the node I asked": never send it elsewhere.
    return None if consistency is Consistency.LOCAL else key


def _get_result(key: bytes, response: pb.GetResponse) -> GetResult:
    version = wire.version_from_pb(response.version) if response.HasField("version") else None
    return GetResult(
        key,
        response.found,
        response.value if response.found else None,
        version,
        response.expires_at_ms if response.found else 0,
    )


def ttl_milliseconds(ttl: float | timedelta) -> int:
    """A TTL given in seconds (or as a timedelta) in whole milliseconds, at least 1."""
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    if not (math.isfinite(seconds) and seconds * 1000 >= 1):
        raise ValueError(f"a TTL must be at least 1 millisecond, not {ttl!r}")
    return round(seconds * 1000)
