"""Conversion between the generated protobuf messages and core types.

Rules: the only module that knows both the protobuf classes and the core
types; it converts, it does not decide. Anything a client can get wrong in a
message (an enum number this server does not know) is an InvalidRequestError.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import cast, overload

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from a3redis.core.anti_entropy import (
    ChunksAnswer,
    ChunksRequest,
    EntriesAnswer,
    EntriesRequest,
    EntryVersion,
    Leaf,
    TreeAnswer,
    TreeRequest,
)
from a3redis.core.consistency import Consistency
from a3redis.core.expiry import NEVER, Condition, Expiry
from a3redis.core.hlc import Version
from a3redis.core.record import Record
from a3redis.core.streaming import Cursor, PackedPage, StreamPage, StreamRequest
from a3redis.core.validation import InvalidRequestError, Limits, Reason
from a3redis.storage import codec
from a3redis.v1 import kv_pb2 as pb
from a3redis.v1 import replica_pb2 as rpb

CONSISTENCY_DEFAULT = pb.CONSISTENCY_DEFAULT


def consistency_from_pb(value: int) -> Consistency | None:
    """The level a request asks for; None asks for the node's default."""
    if value == pb.CONSISTENCY_DEFAULT:
        return None
    try:
        return Consistency(value)
    except ValueError:
        names = ", ".join(pb.Consistency.keys())
        raise InvalidRequestError(
            f"unknown consistency level {value}; expected one of {names}"
        ) from None


def consistency_to_pb(level: Consistency | None) -> pb.Consistency:
    # The core enum shares the protobuf numbering; 0 asks for the server's default.
    return pb.CONSISTENCY_DEFAULT if level is None else cast(pb.Consistency, level.value)


def version_to_pb(version: Version) -> pb.Version:
    return pb.Version(wall_ms=version.wall_ms, logical=version.logical, node_id=version.node_id)


def version_from_pb(message: pb.Version) -> Version:
    return Version(message.wall_ms, message.logical, message.node_id)


def get_response(record: Record | None) -> pb.GetResponse:
    """A read's answer: `record` as Keyspace reads return it (an expired one is a tombstone)."""
    if record is None:
        return pb.GetResponse(found=False)
    if record.value is None:
        return pb.GetResponse(found=False, version=version_to_pb(record.version))
    return pb.GetResponse(
        found=True,
        value=record.value,
        version=version_to_pb(record.version),
        expires_at_ms=record.expires_at_ms,
    )


def entry(record: Record) -> pb.Entry:
    return pb.Entry(
        key=record.key,
        value=record.value or b"",
        version=version_to_pb(record.version),
        expires_at_ms=record.expires_at_ms,
    )


def expiry_from_pb(message: pb.PutRequest | pb.KeyValuePair | pb.ExpireRequest) -> Expiry:
    """The expiry a message asks for (NEVER if none); its bounds are checked by the
    keyspace (core.validation), so a zero or negative one that was set stays visible."""
    which = message.WhichOneof("expiry")
    if which is None:
        return NEVER
    if which == "ttl_ms":
        if message.ttl_ms <= 0:
            raise InvalidRequestError(
                f"invalid expire time: ttl_ms is {message.ttl_ms}; it must be at least 1",
                Reason.EXPIRY,
            )
        return Expiry(ttl_ms=message.ttl_ms)
    if message.expires_at_ms <= 0:
        raise InvalidRequestError(
            f"invalid expire time: expires_at_ms is {message.expires_at_ms}; it must be at least 1",
            Reason.EXPIRY,
        )
    return Expiry(at_ms=message.expires_at_ms)


_CONDITIONS = {
    pb.EXPIRE_ALWAYS: Condition.ALWAYS,
    pb.EXPIRE_NX: Condition.NX,
    pb.EXPIRE_XX: Condition.XX,
    pb.EXPIRE_GT: Condition.GT,
    pb.EXPIRE_LT: Condition.LT,
}


def condition_from_pb(value: int) -> Condition:
    condition = _CONDITIONS.get(cast(pb.ExpireCondition, value))
    if condition is None:
        names = ", ".join(pb.ExpireCondition.keys())
        raise InvalidRequestError(f"unknown expire condition {value}; expected one of {names}")
    return condition


def condition_to_pb(condition: Condition) -> pb.ExpireCondition:
    return next(number for number, known in _CONDITIONS.items() if known is condition)


def record_to_pb(record: Record) -> rpb.Record:
    return rpb.Record(
        key=record.key,
        value=record.value or b"",
        tombstone=record.value is None,
        version=version_to_pb(record.version),
        expires_at_ms=record.expires_at_ms,
    )


def record_from_pb(message: rpb.Record) -> Record:
    value = None if message.tombstone else message.value
    return Record(message.key, value, version_from_pb(message.version), message.expires_at_ms)


def apply_request_to_pb(
    coordinator: str, records: Sequence[Record], payloads: bool
) -> rpb.ApplyRequest:
    """An Apply request: its records as log payloads (`payloads`, for a replica that
    takes them: cheaper to make and to apply) or as Record messages. A record no log
    could hold (a read repair may pass on what another peer answered) makes the whole
    request Record messages, for the replica to refuse that one record alone."""
    if payloads:
        try:
            packed = codec.pack_records(records)
        except struct.error:
            pass  # as Record messages, below
        else:
            return rpb.ApplyRequest(coordinator=coordinator, record_payloads=packed)
    return rpb.ApplyRequest(
        coordinator=coordinator, records=[record_to_pb(record) for record in records]
    )


def apply_records_from_pb(
    message: rpb.ApplyRequest, limits: Limits
) -> tuple[list[Record], list[bytes] | None]:
    """An Apply request's records, and their log payloads when they came as such.

    More than the batch limit, both kinds at once or payloads that do not
    decode are an InvalidRequestError (raised before any record beyond the
    limit is decoded). The records' own fields are the caller's to check.
    """
    if not message.record_payloads:
        limits.check_batch(len(message.records))
        return [record_from_pb(record) for record in message.records], None
    if message.records:
        raise InvalidRequestError(
            "an Apply request holds both records and record_payloads", Reason.MALFORMED
        )
    try:
        return codec.unpack_payloads(message.record_payloads, limits.max_batch_keys)
    except codec.MalformedPayloadsError as error:
        raise InvalidRequestError(f"malformed record_payloads: {error}", Reason.MALFORMED) from None


def read_response_to_pb(found: Sequence[Record | None], payloads: bool) -> rpb.ReadResponse:
    """A Read's answer, one entry per key asked (None: not held): as log payloads and
    the positions of the keys not held (`payloads`, when the request asked for them),
    else as ReadResults."""
    if payloads:
        packed = codec.pack_records(r for r in found if r is not None)
        missing = [index for index, record in enumerate(found) if record is None]
        return rpb.ReadResponse(record_payloads=packed, missing=missing)
    return rpb.ReadResponse(
        results=[
            rpb.ReadResult(present=True, record=record_to_pb(record))
            if record is not None
            else rpb.ReadResult(present=False)
            for record in found
        ]
    )


def read_records_from_pb(message: rpb.ReadResponse, asked: int) -> list[Record | None]:
    """The records of a Read's answer to `asked` keys, in request order (None: not held),
    whichever form it came in. MalformedPayloadsError unless it answers each key once."""
    if not message.record_payloads and not message.missing:
        if len(message.results) != asked:
            raise codec.MalformedPayloadsError(f"{len(message.results)} results for {asked} keys")
        return [record_from_pb(r.record) if r.present else None for r in message.results]
    if message.results:
        raise codec.MalformedPayloadsError("both results and record payloads")
    missing = message.missing
    if len(missing) > asked:
        raise codec.MalformedPayloadsError(f"{len(missing)} missing of {asked} keys")
    held, _ = codec.unpack_payloads(message.record_payloads, asked - len(missing))
    if len(held) + len(missing) != asked:
        raise codec.MalformedPayloadsError(
            f"{len(held)} records and {len(missing)} missing for {asked} keys"
        )
    if not missing:
        return list(held)
    gone = [False] * asked
    previous = -1
    for index in missing:
        if not previous < index < asked:
            raise codec.MalformedPayloadsError(f"missing positions out of order at {index}")
        gone[index] = True
        previous = index
    records = iter(held)
    return [None if absent else next(records) for absent in gone]


# ----- anti-entropy (core.anti_entropy's messages) ------------------------------------------


def tree_request_to_pb(request: TreeRequest) -> rpb.TreeRequest:
    return rpb.TreeRequest(
        requester=request.requester,
        shared_digest=request.shared_digest,
        level=request.level,
        indexes=request.indexes,
        fanout=request.fanout,
        chunks=request.chunks,
    )


def tree_request_from_pb(message: rpb.TreeRequest) -> TreeRequest:
    return TreeRequest(
        message.requester,
        message.shared_digest,
        message.level,
        list(message.indexes),
        message.fanout,
        message.chunks,
    )


def tree_answer_to_pb(answer: TreeAnswer) -> rpb.TreeResponse:
    return rpb.TreeResponse(
        same_ring=answer.same_ring, hashes=answer.hashes, building=answer.building
    )


def tree_answer_from_pb(message: rpb.TreeResponse) -> TreeAnswer:
    return TreeAnswer(message.same_ring, list(message.hashes), message.building)


def chunks_request_to_pb(request: ChunksRequest) -> rpb.ChunksRequest:
    return rpb.ChunksRequest(partitions=request.partitions)


def chunks_request_from_pb(message: rpb.ChunksRequest) -> ChunksRequest:
    return ChunksRequest(list(message.partitions))


def chunks_answer_to_pb(answer: ChunksAnswer) -> rpb.ChunksResponse:
    return rpb.ChunksResponse(hashes=answer.hashes)


def chunks_answer_from_pb(message: rpb.ChunksResponse) -> ChunksAnswer:
    return ChunksAnswer(list(message.hashes))


def entries_request_to_pb(request: EntriesRequest) -> rpb.EntriesRequest:
    return rpb.EntriesRequest(leaves=[rpb.Leaf(partition=p, chunk=c) for p, c in request.leaves])


class _Leaves(Sequence[Leaf]):
    """A request's leaves, converted only as they are read: the serving side checks
    how many there are before it looks at any (a request may carry millions)."""

    def __init__(self, leaves: RepeatedCompositeFieldContainer[rpb.Leaf]) -> None:
        self._leaves = leaves

    def __len__(self) -> int:
        return len(self._leaves)

    @overload
    def __getitem__(self, index: int) -> Leaf: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Leaf]: ...
    def __getitem__(self, index: int | slice) -> Leaf | Sequence[Leaf]:
        if isinstance(index, slice):
            return [(leaf.partition, leaf.chunk) for leaf in self._leaves[index]]
        leaf = self._leaves[index]
        return (leaf.partition, leaf.chunk)

    def __iter__(self) -> Iterator[Leaf]:
        return ((leaf.partition, leaf.chunk) for leaf in self._leaves)


def entries_request_from_pb(message: rpb.EntriesRequest) -> EntriesRequest:
    return EntriesRequest(_Leaves(message.leaves))


def entries_answer_to_pb(answer: EntriesAnswer) -> rpb.EntriesResponse:
    # Filled in place: a Version message built apart would be copied into each entry.
    message = rpb.EntriesResponse()
    add = message.entries.add
    for key, (wall_ms, logical, node_id), tombstone, expires_at_ms in answer.entries:
        version = add(key=key, tombstone=tombstone, expires_at_ms=expires_at_ms).version
        version.wall_ms, version.logical, version.node_id = wall_ms, logical, node_id
    return message


def entries_answer_from_pb(message: rpb.EntriesResponse) -> EntriesAnswer:
    return EntriesAnswer(
        [
            EntryVersion(
                entry.key, version_from_pb(entry.version), entry.tombstone, entry.expires_at_ms
            )
            for entry in message.entries
        ]
    )


# ----- streaming (core.streaming's messages) --------------------------------------------------


def stream_request_to_pb(request: StreamRequest) -> rpb.StreamRequest:
    # This release takes a page's records as payloads (cheaper on both sides);
    # a source of an older release answers records.
    return rpb.StreamRequest(
        partitions=request.partitions,
        start_key=request.start_key,
        max_records=request.max_records,
        ring_partitions=request.ring_partitions,
        payloads=True,
    )


def stream_request_from_pb(message: rpb.StreamRequest) -> StreamRequest:
    # The partitions stay in the message's container: the serving side checks
    # how many there are before it reads any (core.streaming.check_request).
    return StreamRequest(
        message.partitions, message.start_key, message.max_records, message.ring_partitions
    )


def stream_page_to_pb(page: StreamPage) -> rpb.StreamResponse:
    """The page's message, its records as Record messages (for a requester that
    does not take payloads; a BUILDING page is the same message for both)."""
    message = rpb.StreamResponse(building=page.building)
    # Filled in place, as entries_answer_to_pb: no Record or Version message built apart.
    add = message.records.add
    for key, value, (wall_ms, logical, node_id), expires_at_ms in page.records:
        record = add(
            key=key, value=value or b"", tombstone=value is None, expires_at_ms=expires_at_ms
        )
        version = record.version
        version.wall_ms, version.logical, version.node_id = wall_ms, logical, node_id
    _set_resume(message, page.resume)
    return message


def stream_packed_to_pb(page: PackedPage) -> rpb.StreamResponse:
    """The page's message for a requester that takes payloads: `record_payloads`."""
    message = rpb.StreamResponse(record_payloads=b"".join(page.packed))
    _set_resume(message, page.resume)
    return message


def _set_resume(message: rpb.StreamResponse, resume: Cursor | None) -> None:
    if resume is not None:
        message.resume.SetInParent()  # present even at partition 0 from its first key
        message.resume.partition, message.resume.start_key = resume


def stream_page_from_pb(message: rpb.StreamResponse, max_records: int) -> StreamPage:
    """The page of a Stream answer, with no more than `max_records` records (more
    raise MalformedPayloadsError, before any beyond them is decoded)."""
    resume = message.resume if message.HasField("resume") else None
    cursor = None if resume is None else (resume.partition, resume.start_key)
    if message.record_payloads:
        if message.records:
            raise codec.MalformedPayloadsError("both records and record payloads")
        records, payloads = codec.unpack_payloads(message.record_payloads, max_records)
        return StreamPage(records, cursor, message.building, payloads)
    if len(message.records) > max_records:
        raise codec.MalformedPayloadsError(f"more than {max_records} records")
    return StreamPage([record_from_pb(r) for r in message.records], cursor, message.building)
