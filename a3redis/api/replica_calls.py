"""One peer's Replica service, called in core types.

Rules: the only place the cluster layer's calls to a peer meet protobuf: each
method converts its arguments with a3redis.api.wire, makes one call on the
peer's channel from the node's ChannelPool, checks the answer's shape and
converts it back. It neither retries nor times out (the peer link does
both) and decides nothing. `discard` drops the channel, so the next call
reconnects. With a cluster secret (`guard`), each request is serialized
once, signed over the method's name and those bytes, and those very bytes
are sent (`_Serialized`) with the signature as metadata.

Read and Apply, the calls of every quorum read and write, go as replica
frames (a3redis.core.replica_frames) when the peer speaks them: the same
request bytes and signature, without HTTP/2's cost per call. A peer that
does not (an older node) gets them over gRPC, as every other call.

Records travel as log payloads (a3redis.storage.codec's: cheaper to make
and to read than Record messages, and written to a log as they came) where
the peer is known to take them. A Read asks for its answer in payloads (a
peer of an older release ignores the request's field and answers
ReadResults). An Apply carries Record messages until the peer's answer on
that frames connection says it takes payloads, then payloads; a new
connection starts over, as the peer may have restarted as another release.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import purerpc
from google.protobuf.message import DecodeError
from purerpc.grpclib.status import Status, StatusCode

from a3redis.api import wire
from a3redis.cluster.peer_auth import PeerGuard
from a3redis.cluster.peers import Meter
from a3redis.core.anti_entropy import (
    ChunksAnswer,
    ChunksRequest,
    EntriesAnswer,
    EntriesRequest,
    TreeAnswer,
    TreeRequest,
)
from a3redis.core.record import ApplyOutcome, Record
from a3redis.core.replica_frames import APPLY, METHOD_OF_KIND, READ
from a3redis.core.streaming import StreamPage, StreamRequest
from a3redis.net.address import Address
from a3redis.net.channels import ChannelPool
from a3redis.net.frames import FailedCallError, FrameConnection
from a3redis.storage.codec import MalformedPayloadsError
from a3redis.v1 import replica_pb2 as rpb
from a3redis.v1.replica_grpc import ReplicaStub

# An answer's outcome numbers: the core enum shares the wire's numbering.
_OUTCOME_OF = {int(outcome): outcome for outcome in ApplyOutcome}


class _Serialized:
    """A request already serialized: purerpc sends `SerializeToString()`, these bytes."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        return self.data


class MalformedAnswerError(Exception):
    """A peer's answer does not fit its request (another count of results)."""


class ReplicaCalls:
    """The Replica service of the node at `address`, asked on behalf of `coordinator`."""

    def __init__(
        self,
        channels: ChannelPool,
        address: Address,
        coordinator: str,
        guard: PeerGuard | None = None,
        frames: bool = True,
    ) -> None:
        self.address = address
        self._channels = channels
        self._coordinator = coordinator
        self._guard = guard
        self._frames = frames  # Read and Apply as replica frames, to a peer that speaks them
        # The frames connection whose Apply answers said the peer takes log payloads.
        self._takes_payloads: FrameConnection | None = None

    def discard(self) -> None:
        """Drop the channel: the connection is not to be trusted any more."""
        self._channels.discard(self.address)
        self._takes_payloads = None

    async def _call(self, method: str, request: Any) -> Any:
        """One call of `method`, signed when the cluster has a secret."""
        stub = await self._channels.stub(self.address, ReplicaStub)
        if self._guard is None:
            return await getattr(stub, method)(request)
        data = request.SerializeToString(deterministic=True)
        metadata = self._guard.metadata(method, data)
        return await getattr(stub, method)(_Serialized(data), metadata=metadata)

    # ----- the coordinator's batched calls ------------------------------------------------

    async def _frames_connection(self) -> FrameConnection | None:
        return await self._channels.frames(self.address) if self._frames else None

    async def _frame_or_call(
        self,
        kind: int,
        request: Any,
        response_type: Callable[[], Any],
        connection: FrameConnection | None,
    ) -> Any:
        """A call on `connection` as a replica frame, or over gRPC (None: the peer
        does not speak frames)."""
        method = METHOD_OF_KIND[kind]
        if connection is None:
            return await self._call(method, request)
        if self._guard is None:
            body = request.SerializeToString()
            meta: tuple[str, ...] = ()
        else:
            body = request.SerializeToString(deterministic=True)
            meta = self._guard.fields(method, body)
        try:
            answer = await connection.call(kind, body, meta)
        except FailedCallError as error:
            # The failure the same call over gRPC raises, so callers see one kind.
            code = StatusCode.__members__.get(error.code, StatusCode.UNKNOWN)
            raise purerpc.RpcFailedError(Status(code, error.message)) from None
        response = response_type()
        try:
            response.ParseFromString(answer)
        except DecodeError:
            raise MalformedAnswerError(f"an undecodable {method} answer") from None
        return response

    async def apply(self, records: Sequence[Record]) -> list[ApplyOutcome]:
        """Apply `records` on the peer. On a frames connection whose answers said the
        peer takes log payloads, they go as such; a new connection (the peer may have
        restarted as another release) starts again with Record messages."""
        connection = await self._frames_connection()
        payloads = connection is not None and connection is self._takes_payloads
        request = wire.apply_request_to_pb(self._coordinator, records, payloads)
        response = await self._frame_or_call(APPLY, request, rpb.ApplyResponse, connection)
        if len(response.outcomes) != len(records):
            raise MalformedAnswerError("a malformed Apply answer")
        if response.takes_payloads and connection is not None:
            self._takes_payloads = connection
        of = _OUTCOME_OF
        try:
            return [of[value] for value in response.outcomes]
        except KeyError as error:
            raise MalformedAnswerError(f"an Apply answer of unknown outcome {error}") from None

    async def read(self, keys: Sequence[bytes]) -> list[Record | None]:
        request = rpb.ReadRequest(keys=keys, payloads=True)
        response = await self._frame_or_call(
            READ, request, rpb.ReadResponse, await self._frames_connection()
        )
        return _read_records(response, len(keys))

    async def ping(self) -> None:
        """An empty Read: the cheapest call that proves the connection (the frames
        connection, when Read goes as frames: the one calls use)."""
        await self._frame_or_call(
            READ, rpb.ReadRequest(), rpb.ReadResponse, await self._frames_connection()
        )

    # ----- unbatched calls ----------------------------------------------------------------

    async def local_scan(
        self, start: bytes, end: bytes, prefix: bytes, limit: int
    ) -> tuple[list[Record], bool]:
        request = rpb.LocalScanRequest(start=start, end=end, prefix=prefix, limit=limit)
        response = await self._call("LocalScan", request)
        return [wire.record_from_pb(r) for r in response.records], response.more

    async def stream(self, request: StreamRequest) -> StreamPage:
        """One page of whole partitions (core.streaming); the caller checks its records."""
        response = await self._call("Stream", wire.stream_request_to_pb(request))
        # Counted as they are decoded: a message may hold millions of tiny records.
        try:
            return wire.stream_page_from_pb(response, request.page_size)
        except MalformedPayloadsError as error:
            raise MalformedAnswerError(f"a malformed Stream answer: {error}") from None

    # Anti-entropy's calls, counted in the caller's meter.

    async def tree(self, request: TreeRequest, meter: Meter) -> TreeAnswer:
        response = await self._metered("Tree", wire.tree_request_to_pb(request), meter)
        return wire.tree_answer_from_pb(response)

    async def chunks(self, request: ChunksRequest, meter: Meter) -> ChunksAnswer:
        response = await self._metered("Chunks", wire.chunks_request_to_pb(request), meter)
        return wire.chunks_answer_from_pb(response)

    async def entries(self, request: EntriesRequest, meter: Meter) -> EntriesAnswer:
        response = await self._metered("Entries", wire.entries_request_to_pb(request), meter)
        return wire.entries_answer_from_pb(response)

    async def fetch(self, keys: Sequence[bytes], meter: Meter) -> list[Record]:
        """The peer's records of `keys` that it holds (a repair pull)."""
        response = await self._metered("Read", rpb.ReadRequest(keys=keys, payloads=True), meter)
        return [record for record in _read_records(response, len(keys)) if record is not None]

    async def push(self, records: Sequence[Record], meter: Meter) -> None:
        """Apply `records` on the peer (a repair push); the outcomes do not matter."""
        request = wire.apply_request_to_pb(self._coordinator, records, payloads=False)
        await self._metered("Apply", request, meter)

    async def _metered(self, method: str, request: Any, meter: Meter) -> Any:
        meter.bytes_sent += request.ByteSize()
        meter.calls += 1
        response = await self._call(method, request)
        meter.bytes_received += response.ByteSize()
        return response


def _read_records(response: rpb.ReadResponse, asked: int) -> list[Record | None]:
    try:
        return wire.read_records_from_pb(response, asked)
    except MalformedPayloadsError as error:
        raise MalformedAnswerError(f"a malformed Read answer: {error}") from None
