"""Streaming: copying whole partitions from a replica, one page per call.

A node that gains partitions (it joins the ring, or another node leaves)
copies them from a current owner before it owns them. This module holds the
rules of that copy; who streams what from whom, and when, is decided
elsewhere.

Rules:
- A request names partitions, strictly ascending, and a cursor: the page
  starts in `partitions[0]` at `start_key` (inclusive; empty: its first key),
  then goes on through the following partitions from their first keys. It
  asks for `max_records` per page (0: DEFAULT_STREAM_RECORDS) and names the
  ring's partition count as the requester knows it. The serving side checks
  all of it before any work (`check_request`), counts first: a request may
  name at most MAX_STREAM_PARTITIONS partitions and MAX_STREAM_RECORDS
  records, and only partitions its own ring has; each error names the field
  and the bound.
- A page (`answer_stream`) carries records in (partition, key) order,
  tombstones included, each as the source's reads see it (the shell's `read`
  leaves out a record beyond the clock-skew bound, as every read does); at
  most `max_records`, and no more keys and values than the byte budget
  (MAX_PEER_RESPONSE_BYTES, like every answer to a peer); a page of packed
  records (`answer_stream_packed`, each record as the bytes that carry it)
  counts those bytes instead. It always makes
  progress: its first record is sent even if it alone exceeds the budget (a
  record within the key and value limits, 64 KiB and 16 MiB at most, always
  fits a message, so the budget bounds batching, never one record). So a
  page that is not the last holds at least one record, and a stream of
  finitely many records ends.
- `resume` is the cursor of the next page: the first key not sent yet, or
  the next partition from its first key; None once every requested partition
  was sent completely. Every partition before the resume partition is
  complete (`finished_partitions`); `next_request` is the request that
  continues, so a stream can be resumed from a saved cursor after a restart
  of either side. A record written into a partition behind the cursor is
  not in the stream: the caller gets it the way it gets any write.
- `building`: the source is still building the Merkle index that lists a
  partition's keys (seconds for a million keys, started by the request); the
  page carries nothing, and the same request is asked again shortly.
- The requesting side checks a page before any of it is used (`check_page`):
  no more records than asked for, each of a requested partition, at or after
  the request's cursor, in strictly ascending (partition, key) order, each
  passing `Limits.check_record` (key, value, version within the clock-skew
  bound); a resume cursor strictly after the last record and the request's
  cursor, in a requested partition, with a key a request may carry. One
  failure refuses the whole page: leaving a record out would make the copy
  silently incomplete, so the caller treats the source as failed for these
  partitions instead (a record refused for being just beyond this node's
  clock-skew bound is accepted a moment later).
- Pure: the shells list keys, read records, move the messages and keep time.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from a3redis.core.record import Record
from a3redis.core.ring import DEFAULT_PARTITIONS, partitions_of
from a3redis.core.validation import (
    MAX_PEER_RESPONSE_BYTES,
    InvalidRequestError,
    Limits,
    Reason,
    record_bytes,
)

T = TypeVar("T")

# Partitions per request: every partition of the default ring.
MAX_STREAM_PARTITIONS = 4096
# Records per page, and the page a request that names no size gets.
MAX_STREAM_RECORDS = 8192
DEFAULT_STREAM_RECORDS = 1024

Cursor = tuple[int, bytes]
"""(partition, key): where a page starts, inclusive."""


# ----- the messages ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamRequest:
    # Strictly ascending. A Sequence, not only a tuple: the serving side gets the
    # wire's container and checks its length before it reads any (it may hold millions).
    partitions: Sequence[int]
    start_key: bytes = b""  # in partitions[0], inclusive; empty: from its first key
    max_records: int = 0  # 0: DEFAULT_STREAM_RECORDS
    ring_partitions: int = DEFAULT_PARTITIONS  # the requester's ring's partition count

    @property
    def page_size(self) -> int:
        """The most records a page may carry."""
        return self.max_records or DEFAULT_STREAM_RECORDS


@dataclass(frozen=True, slots=True)
class StreamPage:
    records: list[Record]  # in (partition, key) order, tombstones included
    resume: Cursor | None  # where the next page starts; None: every partition was sent
    building: bool = False  # the source is building its index: nothing sent, ask again
    # Each record's log payload (a3redis.storage.codec), when the page came as
    # payloads: exactly what encoding the record makes, so the store may log them
    # as they are. Not part of what the page says.
    payloads: Sequence[bytes] | None = field(default=None, compare=False)


BUILDING = StreamPage([], None, building=True)


@dataclass(frozen=True, slots=True)
class PackedPage:
    """A page as a source sends it to a requester that takes payloads: each record as
    the bytes that carry it on the wire (a3redis.storage.codec.pack_entries)."""

    packed: list[bytes]
    resume: Cursor | None


# ----- the serving side -----------------------------------------------------------------------


def check_request(request: StreamRequest, ring_partitions: int, limits: Limits) -> None:
    """Refuse a request this node cannot answer as asked, naming the field and the bound."""
    if request.ring_partitions != ring_partitions:
        raise InvalidRequestError(
            f"Stream names a ring of {request.ring_partitions} partitions; "
            f"this node's ring has {ring_partitions}"
        )
    count = len(request.partitions)
    if not 1 <= count <= MAX_STREAM_PARTITIONS:
        raise InvalidRequestError(
            f"Stream asks for {count} partitions; "
            f"the limit is 1 to MAX_STREAM_PARTITIONS={MAX_STREAM_PARTITIONS} per call",
            Reason.BATCH,
        )
    if not 0 <= request.max_records <= MAX_STREAM_RECORDS:
        raise InvalidRequestError(
            f"Stream asks for {request.max_records} records per page; the limit is "
            f"MAX_STREAM_RECORDS={MAX_STREAM_RECORDS} (0: {DEFAULT_STREAM_RECORDS})",
            Reason.BATCH,
        )
    if len(request.start_key) > limits.max_key_bytes:
        raise InvalidRequestError(
            f"Stream start_key is {len(request.start_key)} bytes; "
            f"the limit is MAX_KEY_BYTES={limits.max_key_bytes}",
            Reason.KEY,
        )
    previous = -1
    for position, partition in enumerate(request.partitions):
        if not 0 <= partition < ring_partitions:
            raise InvalidRequestError(
                f"Stream partition {position} is {partition}; "
                f"this node's ring has partitions 0 to {ring_partitions - 1}",
                Reason.MALFORMED,
            )
        if partition <= previous:
            raise InvalidRequestError(
                f"Stream partitions must be strictly ascending: partition {position} "
                f"is {partition}, after {previous}",
                Reason.MALFORMED,
            )
        previous = partition


def answer_stream(
    request: StreamRequest,
    keys_of: Callable[[int], Sequence[bytes]],
    read: Callable[[Sequence[bytes]], Sequence[Record | None]],
    budget: int = MAX_PEER_RESPONSE_BYTES,
) -> StreamPage:
    """One page of a checked request.

    `keys_of(partition)` lists the partition's keys in ascending order;
    `read(keys)` gives their records as reads see them (None: not there, or
    not to be sent). Bounded: every key looked at moves the cursor on.
    """
    records, resume = _page(request, keys_of, read, record_bytes, budget)
    return StreamPage(records, resume)


def answer_stream_packed(
    request: StreamRequest,
    keys_of: Callable[[int], Sequence[bytes]],
    read_packed: Callable[[Sequence[bytes]], Sequence[bytes | None]],
    budget: int = MAX_PEER_RESPONSE_BYTES,
) -> PackedPage:
    """`answer_stream`, with each record as the bytes that carry it (`read_packed`
    gives them as it gives the records), and the budget counting those bytes."""
    packed, resume = _page(request, keys_of, read_packed, len, budget)
    return PackedPage(packed, resume)


def _page(
    request: StreamRequest,
    keys_of: Callable[[int], Sequence[bytes]],
    read: Callable[[Sequence[bytes]], Sequence[T | None]],
    size_of: Callable[[T], int],
    budget: int,
) -> tuple[list[T], Cursor | None]:
    """The items of one page, and where the next starts (see `answer_stream`)."""
    wanted = request.page_size
    items: list[T] = []
    size = 0
    partitions = request.partitions
    for position, partition in enumerate(partitions):
        keys = keys_of(partition)
        start = bisect.bisect_left(keys, request.start_key) if position == 0 else 0
        while start < len(keys):
            batch = keys[start : start + wanted - len(items)]
            for key, item in zip(batch, read(batch), strict=True):
                if item is not None:
                    size += size_of(item)
                    if size > budget and items:
                        return items, (partition, key)
                    items.append(item)
                start += 1
            if len(items) == wanted:
                if start < len(keys):
                    return items, (partition, keys[start])
                if position + 1 < len(partitions):
                    return items, (partitions[position + 1], b"")
                return items, None
    return items, None


# ----- the requesting side --------------------------------------------------------------------


def _refused(message: str, reason: Reason = Reason.MALFORMED) -> InvalidRequestError:
    return InvalidRequestError(f"a Stream page {message}; the page is refused", reason)


def check_page(request: StreamRequest, page: StreamPage, limits: Limits, wall_ms: int) -> None:
    """Refuse a page that does not answer `request` (`wall_ms`: this node's wall clock)."""
    records = page.records
    if page.building:
        if records or page.resume is not None:
            raise _refused("marked building carries records or a resume cursor")
        return
    if len(records) > request.page_size:
        raise _refused(
            f"carries {len(records)} records; {request.page_size} were asked for",
            Reason.RESPONSE_SIZE,
        )
    refused = limits.first_refused_record(records, wall_ms)
    if refused >= 0:
        try:
            limits.check_record(records[refused], wall_ms)
        except InvalidRequestError as error:
            raise _refused(f"record {refused}: {error}", error.reason) from None
        # Unreachable while the two agree (a test holds them to it); a refusal, not a
        # crash, if they ever do not.
        raise _refused(f"record {refused} fails the record checks")
    asked = frozenset(request.partitions)
    keys = [record.key for record in records]
    previous: Cursor = (request.partitions[0], request.start_key)
    first = True
    partitions = partitions_of(keys, request.ring_partitions)
    for index, cursor in enumerate(zip(partitions, keys, strict=True)):
        if cursor[0] not in asked:
            raise _refused(
                f"record {index} is of partition {cursor[0]}, which was not asked for",
                Reason.WRONG_KEY,
            )
        # The request's cursor is inclusive; each record after it strictly follows the one before.
        if cursor < previous or (cursor == previous and not first):
            raise _refused(f"record {index} is out of (partition, key) order or before the start")
        previous, first = cursor, False
    resume = page.resume
    if resume is None:
        return
    if resume[0] not in asked:
        raise _refused(f"resumes in partition {resume[0]}, which was not asked for")
    if len(resume[1]) > limits.max_key_bytes:
        raise _refused(
            f"resumes at a key of {len(resume[1])} bytes; the limit is "
            f"MAX_KEY_BYTES={limits.max_key_bytes}",
            Reason.KEY,
        )
    # Strictly after: a page that is not the last must move the cursor on.
    if resume <= previous:
        raise _refused("resumes at or before its last record or the request's start")


def next_request(request: StreamRequest, page: StreamPage) -> StreamRequest | None:
    """The request that continues after a checked `page`; None once the stream is complete."""
    if page.building:
        return request  # the same again, a little later
    if page.resume is None:
        return None
    partition, key = page.resume
    position = bisect.bisect_left(request.partitions, partition)
    return StreamRequest(
        tuple(request.partitions[position:]), key, request.max_records, request.ring_partitions
    )


def finished_partitions(request: StreamRequest, page: StreamPage) -> Sequence[int]:
    """The requested partitions that a checked `page` completed (with the pages before it)."""
    if page.building:
        return ()
    if page.resume is None:
        return tuple(request.partitions)
    return tuple(request.partitions[: bisect.bisect_left(request.partitions, page.resume[0])])
