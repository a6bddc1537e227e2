"""The public KeyValue gRPC service: decode, call the node, encode.

Rules: no decisions here. Each method converts the request to core types,
calls the Keyspace, and converts the answer back; `_status` is the one
place where an exception becomes a gRPC status code. Requests are decoded
inside each method's guard, not by purerpc (see `_Undecoded`), so bytes
that are not a valid message are INVALID_ARGUMENT "malformed request" and
never a Python repr. With CLIENT_TOKENS_FILE, each KeyValue call's
`authorization: Bearer <token>` metadata is checked before its method runs
(`_requiring_tokens`, ACTION_OF_CALL); the Replica service is not a client's.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import purerpc
import trio
from google.protobuf.message import DecodeError
from purerpc.grpclib.events import RequestReceived
from purerpc.grpclib.status import StatusCode

from a3redis import __version__
from a3redis.api import status_details, wire
from a3redis.api.metrics import NodeMetrics
from a3redis.cluster.anti_entropy import AntiEntropy
from a3redis.cluster.keyspace import Keyspace
from a3redis.cluster.peer_auth import HEADERS, PeerGuard
from a3redis.cluster.rebalance import StreamPacer
from a3redis.config import Config
from a3redis.core.client_tokens import Action, TokenHolder, bearer_token
from a3redis.core.error_details import details, details_of
from a3redis.core.errors import ErrorKind, RequestError
from a3redis.core.expiry import NEVER
from a3redis.core.hlc import Version
from a3redis.core.peer_auth import Refusal
from a3redis.core.replica_frames import METHOD_OF_KIND, Frame, failure
from a3redis.core.streaming import (
    BUILDING,
    answer_stream,
    answer_stream_packed,
    check_request,
)
from a3redis.core.validation import (
    MAX_PEER_RESPONSE_BYTES,
    InvalidRequestError,
    Reason,
    is_node_id,
)
from a3redis.net.frames import Handle
from a3redis.net.grpc_server import RequestGate
from a3redis.v1 import kv_pb2 as pb
from a3redis.v1 import replica_pb2 as rpb
from a3redis.v1.kv_grpc import KeyValueServicer
from a3redis.v1.replica_grpc import ReplicaServicer

log = logging.getLogger(__name__)

# Rows sent per scan page; the table is read synchronously one page at a time,
# so a long scan never holds an iterator across an await.
SCAN_PAGE = 256

Req = TypeVar("Req")
Resp = TypeVar("Resp")


# The one table from the front-end-neutral error kinds to gRPC status codes.
STATUS_CODE_OF_KIND: dict[ErrorKind, StatusCode] = {
    ErrorKind.INVALID: StatusCode.INVALID_ARGUMENT,
    ErrorKind.TOO_LARGE: StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.CONFLICT: StatusCode.ABORTED,
    ErrorKind.UNSATISFIABLE: StatusCode.FAILED_PRECONDITION,
    ErrorKind.UNAVAILABLE: StatusCode.UNAVAILABLE,
    ErrorKind.TIMEOUT: StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.NODE_UNAVAILABLE: StatusCode.UNAVAILABLE,
    ErrorKind.UNAUTHENTICATED: StatusCode.UNAUTHENTICATED,
    ErrorKind.PERMISSION_DENIED: StatusCode.PERMISSION_DENIED,
}


def _status(error: Exception) -> purerpc.RpcFailedError:
    """The gRPC status of a failed call, with its details (a3redis.api.status_details)."""
    if isinstance(error, RequestError):
        return status_details.failure(
            STATUS_CODE_OF_KIND[error.kind], str(error), details_of(error)
        )
    log.exception("unexpected error in a request")
    return status_details.explain(
        StatusCode.INTERNAL, f"internal error: {type(error).__name__}", "INTERNAL"
    )


def _after(request: Any) -> Version | None:
    return wire.version_from_pb(request.after) if request.HasField("after") else None


class _Undecoded:
    """A request's bytes, handed to its method undecoded.

    purerpc parses each request before the method runs and answers a parse
    failure CANCELLED with the exception's repr as the message. Given a
    subclass of this (one per request type, from `_undecoded`) as the request
    type instead, it keeps the bytes, and the method's guard decodes them: a
    malformed message becomes INVALID_ARGUMENT, counted in the metrics like
    any other answer.
    """

    __slots__ = ("data",)
    message_type: Callable[[], Any]

    def ParseFromString(self, data: bytes) -> None:
        self.data = data

    def decode(self) -> Any:
        message = self.message_type()
        try:
            message.ParseFromString(self.data)
        except DecodeError as error:
            # protobuf's text is "Error parsing message with type 'T': <what was wrong>".
            what = str(error).rpartition(": ")[2] or "undecodable"
            name = message.DESCRIPTOR.full_name
            raise InvalidRequestError(
                f"malformed request: the bytes sent are not a valid {name} message ({what})",
                Reason.MALFORMED,
            ) from None
        return message


def _undecoded(message_type: Callable[[], Any]) -> type[_Undecoded]:
    # A class rather than a functools.partial: purerpc calls it once per request,
    # and a class attribute is cheaper than a partial and __init__ (benchmarks/README.md).
    name = f"Undecoded{getattr(message_type, '__name__', 'Request')}"
    return type(name, (_Undecoded,), {"__slots__": (), "message_type": message_type})


def _decoded_by_methods(service: purerpc.Service) -> purerpc.Service:
    """`service` with each request handed to its method as `_Undecoded` bytes."""
    for name, bound in list(service.methods.items()):
        signature = bound.signature
        service.methods[name] = bound._replace(
            signature=purerpc.RPCSignature(
                signature.cardinality,
                _undecoded(signature.request_type),
                signature.response_type,
            )
        )
    return service


def _members_only(service: purerpc.Service, guard: PeerGuard) -> purerpc.Service:
    """`service` with every call checked against the cluster secret before it is handled:
    the metadata must sign the method's name and the request's bytes as received."""
    for name, bound in list(service.methods.items()):
        service.methods[name] = bound._replace(
            method_fn=_signed_calls(name, bound.method_fn, guard)
        )
    return service


def _signed_calls(
    method: str, handle: Callable[..., Awaitable[Any]], guard: PeerGuard
) -> Callable[[_Undecoded, RequestReceived], Awaitable[Any]]:
    async def checked(undecoded: _Undecoded, request: RequestReceived) -> Any:
        refusal = guard.check_metadata(method, request.custom_metadata, undecoded.data)
        if refusal is not None:
            # A full replay cache is our limit, not the caller's fault: it may retry.
            code = StatusCode.UNAVAILABLE if refusal is Refusal.BUSY else StatusCode.UNAUTHENTICATED
            raise status_details.failure(
                code,
                f"not a cluster member's call (cluster secret): {refusal.value}",
                details("NOT_A_MEMBER", {"refusal": refusal.value}),
            )
        return await handle(undecoded, request=request)

    return checked


_READ_REQUEST = _undecoded(rpb.ReadRequest)
_APPLY_REQUEST = _undecoded(rpb.ApplyRequest)


# Calls that copy or compare data in the background: they do not make a node busy (the
# pace of background copying yields to every other call).
BACKGROUND_CALLS = frozenset({"Stream", "Tree", "Chunks", "Entries"})


def _unary(
    method: Callable[[Any, Req], Awaitable[Resp]],
) -> Callable[[Any, _Undecoded], Awaitable[Resp]]:
    rpc = method.__name__
    foreground = rpc not in BACKGROUND_CALLS

    @functools.wraps(method)
    async def guarded(self: Any, request: _Undecoded) -> Resp:
        started = time.perf_counter()
        code = "OK"
        try:
            with self.gate:
                if foreground:
                    self.gate.foreground_served += 1
                return await method(self, request.decode())
        except purerpc.RpcFailedError as error:
            code = error.status.status_code.name
            raise
        except Exception as error:
            failure = _status(error)
            code = failure.status.status_code.name
            raise failure from error
        finally:
            self.metrics.observe(self.SERVICE, rpc, code, time.perf_counter() - started)

    return guarded


# ----- client tokens (CLIENT_TOKENS_FILE) ------------------------------------------------------

# What each KeyValue call needs a client token to allow; Repair is an operator action.
# Describe needs none: it is how a node finds the gossip address of a PEERS entry
# (a3redis.api.describe), and nodes hold no client token. It tells who a node is,
# as GET /health does.
ACTION_OF_CALL: dict[str, Action | None] = {
    "Put": Action.WRITE,
    "Delete": Action.WRITE,
    "BatchPut": Action.WRITE,
    "Expire": Action.WRITE,
    "Persist": Action.WRITE,
    "Get": Action.READ,
    "BatchGet": Action.READ,
    "Scan": Action.READ,
    "Describe": None,
    "Topology": Action.READ,
    "Repair": Action.ADMIN,
}


def _requiring_tokens(
    service: purerpc.Service, holder: TokenHolder, metrics: NodeMetrics
) -> purerpc.Service:
    """`service` with each call's `authorization: Bearer <token>` metadata checked before
    its method runs: UNAUTHENTICATED without a valid token, PERMISSION_DENIED when the
    token's role does not allow the call (ACTION_OF_CALL)."""
    for name, bound in list(service.methods.items()):
        if ACTION_OF_CALL[name] is None:
            continue
        service.methods[name] = bound._replace(
            method_fn=_checked(bound.method_fn, service.name, name, holder, metrics)
        )
    return service


def _checked(
    method_fn: Callable[..., Any],
    service_name: str,
    rpc: str,
    holder: TokenHolder,
    metrics: NodeMetrics,
) -> Callable[..., Any]:
    action = ACTION_OF_CALL[rpc]
    assert action is not None
    short_name = service_name.rpartition(".")[2]

    def checked(message: Any, request: Any) -> Any:
        # `request` is purerpc's RequestReceived event: its headers, name by name.
        header = next(
            (value for name, value in request.custom_metadata if name == "authorization"), None
        )
        try:
            holder.tokens.check(bearer_token(header), action)
        except RequestError as error:
            failure = _status(error)
            metrics.observe(short_name, rpc, failure.status.status_code.name, 0.0)
            raise failure from None
        return method_fn(message, request)

    return checked


class KeyValueService(KeyValueServicer):  # type: ignore[misc]
    SERVICE = "KeyValue"

    def __init__(
        self,
        keyspace: Keyspace,
        config: Config,
        gate: RequestGate,
        repair: AntiEntropy,
        metrics: NodeMetrics,
        tokens: TokenHolder | None = None,
    ) -> None:
        self.keyspace = keyspace
        self.config = config
        self.gate = gate
        self.repair = repair
        self.metrics = metrics
        self.tokens = tokens  # None: no CLIENT_TOKENS_FILE, every client is served

    @property
    def service(self) -> purerpc.Service:
        service = _decoded_by_methods(super().service)
        if self.tokens is None:
            return service
        return _requiring_tokens(service, self.tokens, self.metrics)

    @_unary
    async def Put(self, request: pb.PutRequest) -> pb.PutResponse:
        level = wire.consistency_from_pb(request.consistency)
        expiry = wire.expiry_from_pb(request)
        version = await self.keyspace.put(
            request.key, request.value, level, _after(request), expiry
        )
        return pb.PutResponse(version=wire.version_to_pb(version))

    @_unary
    async def Get(self, request: pb.GetRequest) -> pb.GetResponse:
        level = wire.consistency_from_pb(request.consistency)
        return wire.get_response(await self.keyspace.get(request.key, level))

    @_unary
    async def Delete(self, request: pb.DeleteRequest) -> pb.DeleteResponse:
        level = wire.consistency_from_pb(request.consistency)
        version = await self.keyspace.delete(request.key, level, _after(request))
        return pb.DeleteResponse(version=wire.version_to_pb(version))

    @_unary
    async def BatchPut(self, request: pb.BatchPutRequest) -> pb.BatchPutResponse:
        level = wire.consistency_from_pb(request.consistency)
        pairs = [(pair.key, pair.value) for pair in request.pairs]
        if any(pair.WhichOneof("expiry") for pair in request.pairs):
            expiries = [wire.expiry_from_pb(pair) for pair in request.pairs]
            versions = await self.keyspace.batch_write(pairs, level, _after(request), expiries)
        else:
            versions = await self.keyspace.batch_put(pairs, level, _after(request))
        return pb.BatchPutResponse(versions=[wire.version_to_pb(v) for v in versions])

    @_unary
    async def Expire(self, request: pb.ExpireRequest) -> pb.ExpireResponse:
        level = wire.consistency_from_pb(request.consistency)
        condition = wire.condition_from_pb(request.condition)
        expiry = wire.expiry_from_pb(request)
        if expiry == NEVER:
            raise InvalidRequestError("Expire needs ttl_ms or expires_at_ms", Reason.EXPIRY)
        changed = await self.keyspace.expire(request.key, expiry, condition, level, level)
        return pb.ExpireResponse(set=changed)

    @_unary
    async def Persist(self, request: pb.PersistRequest) -> pb.PersistResponse:
        level = wire.consistency_from_pb(request.consistency)
        removed = await self.keyspace.persist(request.key, level, level)
        return pb.PersistResponse(removed=removed)

    @_unary
    async def BatchGet(self, request: pb.BatchGetRequest) -> pb.BatchGetResponse:
        level = wire.consistency_from_pb(request.consistency)
        records = await self.keyspace.batch_get(list(request.keys), level)
        return pb.BatchGetResponse(results=[wire.get_response(record) for record in records])

    @_unary
    async def Describe(self, request: pb.DescribeRequest) -> pb.DescribeResponse:
        config = self.config
        return pb.DescribeResponse(
            node_id=config.node_id,
            grpc_address=str(config.grpc_address),
            gossip_address=str(config.gossip_address),
            cluster_name=config.cluster_name,
            replication_factor=config.replication_factor,
            version=__version__,
        )

    @_unary
    async def Topology(self, request: pb.TopologyRequest) -> pb.TopologyResponse:
        cluster = self.keyspace.cluster
        return pb.TopologyResponse(
            members=[
                pb.Member(node_id=m.node_id, grpc_address=m.grpc_addr, status=m.status.name.lower())
                for m in cluster.membership.members()
            ],
            replication_factor=cluster.replication_factor,
            partitions=cluster.ring.partitions,
        )

    @_unary
    async def Repair(self, request: pb.RepairRequest) -> pb.RepairResponse:
        if not request.wait:
            self.repair.trigger()
            return pb.RepairResponse(started=True)
        reports = await self.repair.round()
        return pb.RepairResponse(
            started=True,
            peers=[
                pb.PeerRepair(
                    peer=r.peer,
                    partitions=r.partitions,
                    tree_nodes=r.tree_nodes,
                    leaves=r.leaves,
                    keys_pulled=r.keys_pulled,
                    keys_pushed=r.keys_pushed,
                    bytes_sent=r.bytes_sent,
                    bytes_received=r.bytes_received,
                    seconds=r.seconds,
                    skipped=r.skipped,
                    calls=r.calls,
                )
                for r in reports
            ],
        )

    async def Scan(self, undecoded: _Undecoded) -> AsyncIterator[pb.Entry]:
        started, code = time.perf_counter(), "OK"
        try:
            with self.gate:
                self.gate.foreground_served += 1
                request: pb.ScanRequest = undecoded.decode()
                level = wire.consistency_from_pb(request.consistency)
                if request.end and request.start and request.end <= request.start:
                    raise InvalidRequestError("scan end must be greater than start")
                start: bytes | None = request.start
                remaining = request.limit or None
                while start is not None and remaining != 0:
                    size = SCAN_PAGE if remaining is None else min(SCAN_PAGE, remaining)
                    page, start = await self.keyspace.scan_page(
                        start, request.end, request.prefix, size, level
                    )
                    for record in page:
                        yield wire.entry(record)
                    if remaining is not None:
                        remaining -= len(page)
        except purerpc.RpcFailedError as error:
            code = error.status.status_code.name
            raise
        except Exception as error:
            failure = _status(error)
            code = failure.status.status_code.name
            raise failure from error
        finally:
            self.metrics.observe(self.SERVICE, "Scan", code, time.perf_counter() - started)


class ReplicaService(ReplicaServicer):  # type: ignore[misc]
    """The internal node-to-node API: apply and read this node's own copy."""

    SERVICE = "Replica"

    def __init__(
        self,
        keyspace: Keyspace,
        gate: RequestGate,
        repair: AntiEntropy,
        metrics: NodeMetrics,
        pacer: StreamPacer,
        guard: PeerGuard | None = None,
    ) -> None:
        self.keyspace = keyspace
        self.gate = gate
        self.repair = repair
        self.metrics = metrics
        self.pacer = pacer
        self.guard = guard
        self.service_name: str = self.service.name  # the gRPC name (replica frames' too)

    @property
    def service(self) -> purerpc.Service:
        service = _decoded_by_methods(super().service)
        return service if self.guard is None else _members_only(service, self.guard)

    # ----- Read and Apply as replica frames (a3redis.core.replica_frames) ------------------

    def frames(self, source: str) -> Handle:
        """The handler of one connection's frames from `source`: each request goes
        through the checks and the method its gRPC call would (the cluster secret's
        signature, the gate, decoding, limits, metrics); a refusal or failure is
        answered with the message its gRPC status would carry."""
        guard = self.guard
        methods = {"Read": (self.Read, _READ_REQUEST), "Apply": (self.Apply, _APPLY_REQUEST)}

        async def handle(frame: Frame) -> tuple[bytes, bool]:
            name = METHOD_OF_KIND[frame.kind]
            if guard is not None:
                signed = dict(zip(HEADERS, frame.meta, strict=True)) if frame.meta else {}
                refusal = guard.check(name, signed, frame.body, source)
                if refusal is not None:
                    # As over gRPC: a full replay cache is our limit, the caller may retry.
                    code = "UNAVAILABLE" if refusal is Refusal.BUSY else "UNAUTHENTICATED"
                    why = f"not a cluster member's call (cluster secret): {refusal.value}"
                    return failure(code, why), True
            method, request_type = methods[name]
            request = request_type()
            request.data = frame.body
            try:
                response = await method(request)
            except purerpc.RpcFailedError as error:
                status = error.status
                return failure(status.status_code.name, status.status_message or ""), True
            return response.SerializeToString(), False

        return handle

    @_unary
    async def Tree(self, request: rpb.TreeRequest) -> rpb.TreeResponse:
        answer = await self.repair.serve_tree(wire.tree_request_from_pb(request))
        return wire.tree_answer_to_pb(answer)

    @_unary
    async def Chunks(self, request: rpb.ChunksRequest) -> rpb.ChunksResponse:
        answer = await self.repair.serve_chunks(wire.chunks_request_from_pb(request))
        return wire.chunks_answer_to_pb(answer)

    @_unary
    async def Entries(self, request: rpb.EntriesRequest) -> rpb.EntriesResponse:
        answer = await self.repair.serve_entries(wire.entries_request_from_pb(request))
        return wire.entries_answer_to_pb(answer)

    @_unary
    async def Stream(self, request: rpb.StreamRequest) -> rpb.StreamResponse:
        stream = wire.stream_request_from_pb(request)
        keyspace = self.keyspace
        check_request(stream, keyspace.cluster.ring.partitions, keyspace.limits)
        index = self.repair.built_index()
        if index is None:
            return wire.stream_page_to_pb(BUILDING)
        # A source's pages are paced too: copying yields to the requests it serves.
        await self.pacer.wait_turn()
        started = trio.current_time()
        # Records as reads see them: one beyond the clock-skew bound is not sent.
        if request.payloads:
            packed = answer_stream_packed(
                stream, index.partition_keys, keyspace.read_local_packed, MAX_PEER_RESPONSE_BYTES
            )
            self.pacer.book(len(packed.packed), started)
            return wire.stream_packed_to_pb(packed)
        page = answer_stream(
            stream, index.partition_keys, keyspace.read_local, MAX_PEER_RESPONSE_BYTES
        )
        self.pacer.book(len(page.records), started)
        return wire.stream_page_to_pb(page)

    @_unary
    async def LocalScan(self, request: rpb.LocalScanRequest) -> rpb.LocalScanResponse:
        limit = min(request.limit or SCAN_PAGE, 10 * SCAN_PAGE)
        records = self.keyspace.store.scan(
            request.start, request.end, request.prefix, limit + 1, include_tombstones=True
        )
        # A page also ends once its keys and values would exceed the response limit.
        fits = min(limit, self.keyspace.limits.records_that_fit(records, MAX_PEER_RESPONSE_BYTES))
        return rpb.LocalScanResponse(
            records=[wire.record_to_pb(record) for record in records[:fits]],
            more=len(records) > fits,
        )

    @_unary
    async def Apply(self, request: rpb.ApplyRequest) -> rpb.ApplyResponse:
        records, payloads = wire.apply_records_from_pb(request, self.keyspace.limits)
        # Only for log lines: a name that is not a node id is not repeated.
        coordinator = request.coordinator
        source = coordinator if is_node_id(coordinator) else "a peer (no valid coordinator id)"
        outcomes = await self.keyspace.apply_replicated(records, "Apply", source, payloads)
        # The core enum shares the wire's numbering.
        return rpb.ApplyResponse(
            outcomes=cast(Any, [int(o) for o in outcomes]), takes_payloads=True
        )

    @_unary
    async def Read(self, request: rpb.ReadRequest) -> rpb.ReadResponse:
        keys = list(request.keys)
        self.keyspace.limits.check_batch(len(keys))
        self.keyspace.limits.check_keys(keys)
        found = self.keyspace.read_local(keys)
        self.keyspace.limits.check_response(found, "Read", MAX_PEER_RESPONSE_BYTES)
        return wire.read_response_to_pb(found, request.payloads)
