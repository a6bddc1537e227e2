"""Streaming partitions: pages carry every record once, resume anywhere, refuse bad input."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a3redis.config import SETTINGS_BY_ENV, Integer
from a3redis.core.hlc import Version
from a3redis.core.record import Record
from a3redis.core.ring import partition_of
from a3redis.core.streaming import (
    BUILDING,
    DEFAULT_STREAM_RECORDS,
    MAX_STREAM_PARTITIONS,
    MAX_STREAM_RECORDS,
    StreamPage,
    StreamRequest,
    answer_stream,
    answer_stream_packed,
    check_page,
    check_request,
    finished_partitions,
    next_request,
)
from a3redis.core.validation import (
    MAX_PEER_RESPONSE_BYTES,
    InvalidRequestError,
    Limits,
    Reason,
    record_bytes,
)
from a3redis.storage import codec

RING = 16
NOW_MS = 1_000_000
LIMITS = Limits(max_key_bytes=8, max_value_bytes=16, max_clock_skew_ms=1_000)


class Source:
    """A replica's records as the Stream service sees them: keys by partition, and reads."""

    def __init__(self, records: Sequence[Record], hidden: frozenset[bytes] = frozenset()) -> None:
        self.records = {record.key: record for record in records}
        self.hidden = hidden  # read as absent, like a record beyond the clock-skew bound
        self.reads = 0

    def keys_of(self, partition: int) -> list[bytes]:
        return sorted(k for k in self.records if partition_of(k, RING) == partition)

    def read(self, keys: Sequence[bytes]) -> list[Record | None]:
        self.reads += len(keys)
        return [None if key in self.hidden else self.records.get(key) for key in keys]

    def page(self, request: StreamRequest, budget: int = MAX_PEER_RESPONSE_BYTES) -> StreamPage:
        check_request(request, RING, LIMITS)
        return answer_stream(request, self.keys_of, self.read, budget)

    def visible(self, partitions: Sequence[int], start: tuple[int, bytes]) -> list[Record]:
        """What a stream from `start` over `partitions` must deliver, in order."""
        found = sorted(
            (partition_of(key, RING), key)
            for key in self.records
            if key not in self.hidden and partition_of(key, RING) in partitions
        )
        return [self.records[key] for partition, key in found if (partition, key) >= start]


def hiding_some(stored: list[Record], data: st.DataObject) -> Source:
    """A source of `stored` whose reads leave out a drawn subset of the keys."""
    hidden = frozenset(data.draw(st.sets(st.sampled_from([r.key for r in stored] or [b"-"]))))
    return Source(stored, hidden)


def stream_all(
    source: Source, request: StreamRequest, budget: int = MAX_PEER_RESPONSE_BYTES
) -> tuple[list[Record], list[StreamPage]]:
    """Page through `request` as a caller does; every page checked, the loop bounded.

    Also checks that a partition a page reports finished gets no record later.
    """
    received: list[Record] = []
    pages: list[StreamPage] = []
    finished: set[int] = set()
    following: StreamRequest | None = request
    for _ in range(len(source.records) + len(request.partitions) + 2):
        if following is None:
            return received, pages
        page = source.page(following, budget)
        check_page(following, page, LIMITS, NOW_MS)
        assert not any(partition_of(r.key, RING) in finished for r in page.records)
        finished.update(finished_partitions(following, page))
        received.extend(page.records)
        pages.append(page)
        following = next_request(following, page)
    raise AssertionError("the stream did not end")


def _record(key: bytes, tombstone: bool, value_size: int, wall: int) -> Record:
    return Record(key, None if tombstone else b"v" * value_size, Version(wall, 0, "node-1"))


records = st.builds(
    _record,
    st.binary(min_size=1, max_size=LIMITS.max_key_bytes),
    st.booleans(),
    st.integers(0, LIMITS.max_value_bytes),
    st.integers(0, NOW_MS),
)
record_lists = st.lists(records, max_size=60, unique_by=lambda r: r.key)
partition_sets = st.sets(st.integers(0, RING - 1), min_size=1).map(lambda s: tuple(sorted(s)))


@settings(max_examples=300, deadline=None)
@given(
    record_lists,
    st.data(),
    partition_sets,
    st.integers(0, 7),
    st.integers(1, 60),
)
def test_pages_deliver_every_record_of_the_requested_partitions_exactly_once_in_order(
    stored: list[Record],
    data: st.DataObject,
    partitions: tuple[int, ...],
    max_records: int,
    budget: int,
) -> None:
    source = hiding_some(stored, data)
    request = StreamRequest(partitions, b"", max_records, RING)
    received, pages = stream_all(source, request, budget)
    assert received == source.visible(partitions, (0, b""))
    for page in pages:
        assert len(page.records) <= (max_records or DEFAULT_STREAM_RECORDS)
        # Within the budget, unless one record alone exceeds it.
        assert len(page.records) == 1 or sum(map(record_bytes, page.records)) <= budget
        # Only the last page may be empty: every other one moved the cursor on.
        assert page.records or page is pages[-1]
    assert pages[-1].resume is None


@settings(max_examples=200, deadline=None)
@given(record_lists, st.data(), partition_sets, st.integers(0, 7), st.integers(1, 600))
def test_packed_pages_deliver_the_same_records_within_a_budget_of_their_bytes(
    stored: list[Record],
    data: st.DataObject,
    partitions: tuple[int, ...],
    max_records: int,
    budget: int,
) -> None:
    """A source that sends each record as the bytes that carry it pages the same way,
    its budget counting those bytes."""
    source = hiding_some(stored, data)

    def read_packed(keys: Sequence[bytes]) -> list[bytes | None]:
        return [None if r is None else codec.pack_records([r]) for r in source.read(keys)]

    received: list[Record] = []
    following: StreamRequest | None = StreamRequest(partitions, b"", max_records, RING)
    for _ in range(len(stored) + len(partitions) + 2):
        if following is None:
            break
        packed = answer_stream_packed(following, source.keys_of, read_packed, budget)
        assert len(packed.packed) <= (max_records or DEFAULT_STREAM_RECORDS)
        assert len(packed.packed) == 1 or sum(map(len, packed.packed)) <= budget
        records, _ = codec.unpack_payloads(b"".join(packed.packed), MAX_STREAM_RECORDS)
        page = StreamPage(records, packed.resume)
        check_page(following, page, LIMITS, NOW_MS)
        received.extend(records)
        following = next_request(following, page)
    assert following is None
    assert received == source.visible(partitions, (0, b""))


@settings(max_examples=200, deadline=None)
@given(record_lists, partition_sets, st.binary(max_size=LIMITS.max_key_bytes), st.integers(0, 5))
def test_a_stream_started_at_any_cursor_delivers_exactly_the_records_from_there(
    stored: list[Record], partitions: tuple[int, ...], start_key: bytes, max_records: int
) -> None:
    source = Source(stored)
    received, _ = stream_all(source, StreamRequest(partitions, start_key, max_records, RING))
    assert received == source.visible(partitions, (partitions[0], start_key))


def keys_in(partition: int, count: int) -> list[bytes]:
    found = sorted(k for n in range(4000) if partition_of(k := b"k%d" % n, RING) == partition)
    assert len(found) >= count
    return found[:count]


def following(request: StreamRequest, page: StreamPage) -> StreamRequest:
    continued = next_request(request, page)
    assert continued is not None
    return continued


def test_resume_names_the_first_key_not_sent_then_the_next_partition_then_nothing() -> None:
    first, second = keys_in(3, 3), keys_in(9, 1)
    source = Source([_record(key, False, 1, 5) for key in first + second])
    request = StreamRequest((3, 9, 12), b"", 2, RING)
    page = source.page(request)
    assert [r.key for r in page.records] == first[:2]
    assert page.resume == (3, first[2])
    assert finished_partitions(request, page) == ()
    request = following(request, page)
    assert request == StreamRequest((3, 9, 12), first[2], 2, RING)
    page = source.page(request)
    assert [r.key for r in page.records] == [first[2], second[0]]
    # The page is full at the end of partition 9: the next one starts at partition 12.
    assert page.resume == (12, b"")
    assert finished_partitions(request, page) == (3, 9)
    request = following(request, page)
    assert request == StreamRequest((12,), b"", 2, RING)
    page = source.page(request)
    assert page == StreamPage([], None)
    assert finished_partitions(request, page) == (12,)
    assert next_request(request, page) is None


def test_a_page_that_ends_exactly_at_the_last_partitions_end_is_the_last() -> None:
    keys = keys_in(5, 2)
    source = Source([_record(key, True, 0, 5) for key in keys])
    page = source.page(StreamRequest((5,), b"", 2, RING))
    assert [r.key for r in page.records] == keys and page.resume is None


def test_a_record_larger_than_the_budget_goes_alone_and_the_stream_goes_on() -> None:
    keys = keys_in(2, 3)
    source = Source([_record(key, False, 16, 5) for key in keys])
    received, pages = stream_all(source, StreamRequest((2,), b"", 0, RING), budget=4)
    assert [len(page.records) for page in pages] == [1, 1, 1]
    assert [r.key for r in received] == keys


def test_the_source_reads_no_more_keys_than_a_page_can_take() -> None:
    source = Source([_record(key, False, 1, 5) for key in keys_in(7, 20)])
    source.page(StreamRequest((7,), b"", 4, RING))
    assert source.reads == 4


def test_one_maximal_record_always_fits_a_peer_answer() -> None:
    # The largest key and value any configuration accepts, in one page, within the limit.
    largest = []
    for name in ("MAX_KEY_BYTES", "MAX_VALUE_BYTES"):
        rule = SETTINGS_BY_ENV[name].parse
        assert isinstance(rule, Integer)
        largest.append(rule.high)
    assert sum(largest) <= MAX_PEER_RESPONSE_BYTES


def test_building_asks_the_same_again_and_finishes_nothing() -> None:
    request = StreamRequest((1, 2), b"k", 3, RING)
    check_page(request, BUILDING, LIMITS, NOW_MS)
    assert next_request(request, BUILDING) is request
    assert finished_partitions(request, BUILDING) == ()


# ----- the serving side refuses what it cannot answer as asked ---------------------------------


@pytest.mark.parametrize(
    ("request_", "reason", "message"),
    [
        (StreamRequest((1,), b"", 0, 64), Reason.OTHER, "names a ring of 64 partitions; "),
        (StreamRequest((), b"", 0, RING), Reason.BATCH, "asks for 0 partitions"),
        (
            StreamRequest(tuple(range(MAX_STREAM_PARTITIONS + 1)), b"", 0, RING),
            Reason.BATCH,
            f"{MAX_STREAM_PARTITIONS + 1} partitions; the limit is 1 to MAX_STREAM_PARTITIONS",
        ),
        (
            StreamRequest((1,), b"", MAX_STREAM_RECORDS + 1, RING),
            Reason.BATCH,
            f"{MAX_STREAM_RECORDS + 1} records per page; the limit is MAX_STREAM_RECORDS",
        ),
        (StreamRequest((1,), b"", -1, RING), Reason.BATCH, "-1 records per page"),
        (
            StreamRequest((1,), b"x" * 9, 0, RING),
            Reason.KEY,
            "start_key is 9 bytes; the limit is MAX_KEY_BYTES=8",
        ),
        (
            StreamRequest((1, RING), b"", 0, RING),
            Reason.MALFORMED,
            f"partition 1 is {RING}; this node's ring has partitions 0 to {RING - 1}",
        ),
        (StreamRequest((-1,), b"", 0, RING), Reason.MALFORMED, "partition 0 is -1"),
        (
            StreamRequest((3, 3), b"", 0, RING),
            Reason.MALFORMED,
            "strictly ascending: partition 1 is 3, after 3",
        ),
        (StreamRequest((4, 2), b"", 0, RING), Reason.MALFORMED, "partition 1 is 2, after 4"),
    ],
)
def test_a_request_beyond_its_bounds_is_refused_naming_them(
    request_: StreamRequest, reason: Reason, message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message) as refused:
        check_request(request_, RING, LIMITS)
    assert refused.value.reason is reason


def test_requests_at_their_bounds_are_answered() -> None:
    check_request(StreamRequest((0, RING - 1), b"x" * 8, MAX_STREAM_RECORDS, RING), RING, LIMITS)
    every = tuple(range(MAX_STREAM_PARTITIONS))
    check_request(
        StreamRequest(every, b"", 0, MAX_STREAM_PARTITIONS), MAX_STREAM_PARTITIONS, LIMITS
    )


# ----- the requesting side refuses a page that does not answer its request ---------------------

P, OTHER = 6, 11
KEYS = keys_in(P, 4)
REQUEST = StreamRequest((P, OTHER), KEYS[1], 2, RING)


def rec(key: bytes, wall: int = 5, value: bytes | None = b"v") -> Record:
    return Record(key, value, Version(wall, 0, "node-1"))


@pytest.mark.parametrize(
    ("page", "reason", "message"),
    [
        (StreamPage([rec(KEYS[1])] * 3, None), Reason.RESPONSE_SIZE, "3 records; 2 were asked"),
        (StreamPage([rec(keys_in(4, 1)[0])], None), Reason.WRONG_KEY, "record 0 is of partition 4"),
        (
            StreamPage([rec(KEYS[0])], None),
            Reason.MALFORMED,
            "record 0 is out of .* before the start",
        ),
        (StreamPage([rec(KEYS[2]), rec(KEYS[1])], None), Reason.MALFORMED, "record 1 is out of"),
        (StreamPage([rec(KEYS[2]), rec(KEYS[2])], None), Reason.MALFORMED, "record 1 is out of"),
        (
            StreamPage([rec(keys_in(OTHER, 1)[0]), rec(KEYS[2])], None),
            Reason.MALFORMED,
            "record 1 is out of",
        ),
        (
            StreamPage([rec(KEYS[1], wall=NOW_MS + 1_001)], None),
            Reason.CLOCK_SKEW,
            "record 0: record.version.wall_ms is 1001 ms ahead",
        ),
        (StreamPage([rec(KEYS[1], value=b"v" * 17)], None), Reason.VALUE, "record 0: value is 17"),
        (StreamPage([rec(b"")], None), Reason.KEY, "record 0: key must not be empty"),
        (StreamPage([rec(KEYS[1])], (4, b"")), Reason.MALFORMED, "resumes in partition 4"),
        (StreamPage([rec(KEYS[1])], (P, b"x" * 9)), Reason.KEY, "resumes at a key of 9 bytes"),
        (StreamPage([rec(KEYS[2])], (P, KEYS[2])), Reason.MALFORMED, "resumes at or before"),
        (StreamPage([rec(KEYS[2])], (P, KEYS[1])), Reason.MALFORMED, "resumes at or before"),
        (StreamPage([], (P, KEYS[1])), Reason.MALFORMED, "resumes at or before"),
        (StreamPage([], (P, KEYS[0])), Reason.MALFORMED, "resumes at or before"),
        (StreamPage([rec(KEYS[1])], None, True), Reason.MALFORMED, "building carries records"),
        (StreamPage([], (P, KEYS[2]), True), Reason.MALFORMED, "building carries records"),
    ],
)
def test_a_page_that_does_not_answer_its_request_is_refused_whole(
    page: StreamPage, reason: Reason, message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message) as refused:
        check_page(REQUEST, page, LIMITS, NOW_MS)
    assert refused.value.reason is reason
    assert str(refused.value).endswith("the page is refused")


def test_pages_that_answer_their_request_pass() -> None:
    other = keys_in(OTHER, 1)[0]
    for page in (
        StreamPage([], None),
        StreamPage([], (P, KEYS[1] + b"\x00")),  # moved on, if with nothing to send
        StreamPage([rec(KEYS[1])], (P, KEYS[2])),
        StreamPage([rec(KEYS[1], value=None), rec(other)], None),
        StreamPage([rec(KEYS[3])], (OTHER, b"")),
        StreamPage([rec(KEYS[2], wall=NOW_MS + 1_000)], None),  # at the skew bound
    ):
        check_page(REQUEST, page, LIMITS, NOW_MS)
