"""The anti-entropy, Stream and Apply messages survive the trip through protobuf unchanged,
both ways, and a malformed one is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from a3redis.api import wire
from a3redis.core.anti_entropy import (
    ChunksAnswer,
    ChunksRequest,
    EntriesAnswer,
    EntriesRequest,
    EntryVersion,
    TreeAnswer,
    TreeRequest,
)
from a3redis.core.expiry import MAX_EXPIRES_AT_MS
from a3redis.core.hlc import Version
from a3redis.core.record import Record
from a3redis.core.streaming import PackedPage, StreamPage
from a3redis.core.validation import InvalidRequestError, Limits, Reason
from a3redis.storage import codec
from a3redis.v1 import replica_pb2 as rpb

u32 = st.integers(0, 2**32 - 1)
hashes = st.lists(st.binary(min_size=16, max_size=16), max_size=5)
versions = st.builds(Version, st.integers(0, 2**64 - 1), u32, st.text(max_size=8))
expiries = st.just(0) | st.integers(1, MAX_EXPIRES_AT_MS)
entries = st.builds(
    EntryVersion, st.binary(max_size=8), versions, st.booleans(), expires_at_ms=expiries
)


@given(
    requester=st.text(max_size=8),
    digest=st.binary(max_size=16),
    level=u32,
    indexes=st.lists(u32, max_size=5),
    fanout=u32,
    chunks=u32,
    answer=st.builds(TreeAnswer, st.booleans(), hashes, st.booleans()),
)
def test_tree_messages_round_trip(
    requester: str,
    digest: bytes,
    level: int,
    indexes: list[int],
    fanout: int,
    chunks: int,
    answer: TreeAnswer,
) -> None:
    request = TreeRequest(requester, digest, level, indexes, fanout, chunks)
    back = rpb.TreeRequest.FromString(wire.tree_request_to_pb(request).SerializeToString())
    assert wire.tree_request_from_pb(back) == request
    back_answer = rpb.TreeResponse.FromString(wire.tree_answer_to_pb(answer).SerializeToString())
    assert wire.tree_answer_from_pb(back_answer) == answer


@given(partitions=st.lists(u32, max_size=5), answer=st.builds(ChunksAnswer, hashes))
def test_chunks_messages_round_trip(partitions: list[int], answer: ChunksAnswer) -> None:
    request = ChunksRequest(partitions)
    assert wire.chunks_request_from_pb(wire.chunks_request_to_pb(request)) == request
    assert wire.chunks_answer_from_pb(wire.chunks_answer_to_pb(answer)) == answer


@given(leaves=st.lists(st.tuples(u32, u32), max_size=6), found=st.lists(entries, max_size=6))
def test_entries_messages_round_trip(
    leaves: list[tuple[int, int]], found: list[EntryVersion]
) -> None:
    message = rpb.EntriesRequest.FromString(
        wire.entries_request_to_pb(EntriesRequest(leaves)).SerializeToString()
    )
    decoded = wire.entries_request_from_pb(message).leaves
    assert len(decoded) == len(leaves)
    assert list(decoded) == leaves
    assert [decoded[i] for i in range(len(leaves))] == leaves
    assert decoded[1:3] == leaves[1:3]
    answer = EntriesAnswer(found)
    back = rpb.EntriesResponse.FromString(wire.entries_answer_to_pb(answer).SerializeToString())
    assert wire.entries_answer_from_pb(back) == answer


wire_records = st.builds(
    Record,
    st.binary(min_size=1, max_size=20),
    st.none() | st.binary(max_size=20),
    st.builds(Version, st.integers(1, 2**40), st.integers(0, 10), st.sampled_from(["n1", "ñ"])),
    st.just(0) | st.integers(1, MAX_EXPIRES_AT_MS),
)
stream_records = st.lists(wire_records, max_size=8)


def _packed(records: list[Record]) -> list[bytes]:
    """The records as a source packs them for a page: from its table's entries."""
    keys = [record.key for record in records]
    entries = [
        (r.value, r.version.wall_ms, r.version.logical, r.version.node_id, r.expires_at_ms)
        for r in records
    ]
    packed = codec.pack_entries(keys, entries, 2**64 - 1)
    assert None not in packed
    return [item for item in packed if item is not None]


@given(stream_records, st.booleans())
def test_stream_pages_round_trip_as_payloads_or_as_record_messages(
    records: list[Record], payloads: bool
) -> None:
    """A source answers payloads to a requester that asks for them, else (a requester
    of an older release) Record messages; the requester takes either."""
    resume = (7, b"next")
    if payloads:
        message = wire.stream_packed_to_pb(PackedPage(_packed(records), resume))
    else:
        message = wire.stream_page_to_pb(StreamPage(records, resume))
    message = rpb.StreamResponse.FromString(message.SerializeToString())
    assert bool(message.record_payloads) == (payloads and bool(records))
    assert len(message.records) == (0 if payloads else len(records))
    received = wire.stream_page_from_pb(message, len(records))
    assert received == StreamPage(records, resume)
    assert [r.value is None for r in received.records] == [r.value is None for r in records]
    if payloads and records:
        assert received.payloads == [codec.encode_payload(record) for record in records]
    else:  # an empty page has nothing to carry either way
        assert received.payloads is None


def test_a_stream_answer_with_too_many_records_or_both_forms_is_malformed() -> None:
    records = [Record(b"k%d" % n, b"v", Version(1, 0, "n1")) for n in range(3)]
    as_records = wire.stream_page_to_pb(StreamPage(records, None))
    as_payloads = wire.stream_packed_to_pb(PackedPage(_packed(records), None))
    for message in (as_records, as_payloads):
        with pytest.raises(codec.MalformedPayloadsError, match="more than 2 records"):
            wire.stream_page_from_pb(message, 2)
    as_records.record_payloads = as_payloads.record_payloads
    with pytest.raises(codec.MalformedPayloadsError, match="both records and record payloads"):
        wire.stream_page_from_pb(as_records, 3)


@given(stream_records, st.booleans())
def test_apply_requests_round_trip_as_payloads_or_as_record_messages(
    records: list[Record], payloads: bool
) -> None:
    """A coordinator sends payloads to a replica that said it takes them, else Record
    messages; the replica takes either, and keeps payloads to log as they came."""
    sent = wire.apply_request_to_pb("node-1", records, payloads).SerializeToString()
    message = rpb.ApplyRequest.FromString(sent)
    assert message.coordinator == "node-1"
    assert len(message.records) == (0 if payloads else len(records))
    received, kept = wire.apply_records_from_pb(message, Limits())
    assert received == records
    assert [r.value is None for r in received] == [r.value is None for r in records]
    if payloads and records:
        assert kept == [codec.encode_payload(record) for record in records]
    else:  # an empty request has nothing to carry either way
        assert kept is None


def test_an_apply_request_over_the_batch_limit_or_of_both_forms_or_garbled_is_invalid() -> None:
    records = [Record(b"k%d" % n, b"v", Version(1, 0, "n1")) for n in range(3)]
    as_records = wire.apply_request_to_pb("node-1", records, payloads=False)
    as_payloads = wire.apply_request_to_pb("node-1", records, payloads=True)
    with pytest.raises(InvalidRequestError, match="batch has 3 keys; the limit is 2") as caught:
        wire.apply_records_from_pb(as_records, Limits(max_batch_keys=2))
    assert caught.value.reason is Reason.BATCH
    with pytest.raises(InvalidRequestError, match="more than 2 records"):
        wire.apply_records_from_pb(as_payloads, Limits(max_batch_keys=2))
    as_records.record_payloads = as_payloads.record_payloads
    with pytest.raises(InvalidRequestError, match="both records and record_payloads") as caught:
        wire.apply_records_from_pb(as_records, Limits())
    assert caught.value.reason is Reason.MALFORMED
    garbled = rpb.ApplyRequest(record_payloads=as_payloads.record_payloads[:-1])
    with pytest.raises(InvalidRequestError, match="malformed record_payloads: ") as caught:
        wire.apply_records_from_pb(garbled, Limits())
    assert caught.value.reason is Reason.MALFORMED


@given(st.lists(st.none() | wire_records, max_size=8), st.booleans())
def test_read_answers_round_trip_as_payloads_or_as_results(
    found: list[Record | None], payloads: bool
) -> None:
    """A replica answers a Read in payloads when asked (and a replica of an older release
    never does); the coordinator takes either, each key's record or None in its place."""
    sent = wire.read_response_to_pb(found, payloads).SerializeToString()
    message = rpb.ReadResponse.FromString(sent)
    assert len(message.results) == (0 if payloads else len(found))
    assert wire.read_records_from_pb(message, len(found)) == found


def test_a_read_answer_that_does_not_answer_each_key_once_is_malformed() -> None:
    record = Record(b"k", b"v", Version(1, 0, "n1"))
    found = [record, None, record, None]
    as_results = wire.read_response_to_pb(found, payloads=False)
    as_payloads = wire.read_response_to_pb(found, payloads=True)
    for message in (as_results, as_payloads):
        for asked in (3, 5):
            with pytest.raises(codec.MalformedPayloadsError):
                wire.read_records_from_pb(message, asked)
    both = wire.read_response_to_pb(found, payloads=False)
    both.record_payloads = as_payloads.record_payloads
    with pytest.raises(codec.MalformedPayloadsError, match="both results and record payloads"):
        wire.read_records_from_pb(both, 4)
    for missing in ([3, 1], [1, 1], [1, 4], [1, 2, 3, 0, 0]):
        bad = rpb.ReadResponse(record_payloads=as_payloads.record_payloads, missing=missing)
        with pytest.raises(codec.MalformedPayloadsError):
            wire.read_records_from_pb(bad, 4)
    all_missing = wire.read_response_to_pb([None, None], payloads=True)
    assert not all_missing.record_payloads
    assert wire.read_records_from_pb(all_missing, 2) == [None, None]


def test_an_apply_request_with_a_record_no_log_could_hold_goes_as_record_messages() -> None:
    """A read repair may pass on a record another peer answered with a node id longer
    than a log's field: the request goes as messages and the replica refuses that one."""
    odd = Record(b"k", b"v", Version(1, 0, "n" * 70_000))
    usual = Record(b"j", b"v", Version(1, 0, "n1"))
    message = wire.apply_request_to_pb("node-1", [usual, odd], payloads=True)
    assert not message.record_payloads
    assert wire.apply_records_from_pb(message, Limits()) == ([usual, odd], None)
