"""SCAN cursors: numbers a client can hold, mapped to where the scan goes on, in a bounded table."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a3redis.core.resp_values import ErrorReply
from a3redis.core.scan_cursors import (
    INVALID_CURSOR,
    MAX_ISSUED_CURSOR,
    ScanCursors,
    parse_cursor,
    scan_reply,
)


def test_invalid_cursor_is_redis_text() -> None:
    assert ErrorReply("ERR invalid cursor") == INVALID_CURSOR


# Redis's string2ull (src/util.c, Redis 7.4 and later). Rows marked 7.0 were also
# sent to redis-server 7.0.15, whose older strtoul parse agrees on them.
@pytest.mark.parametrize(
    ("argument", "cursor"),
    [
        (b"0", 0),  # 7.0
        (b"1", 1),  # 7.0
        (b"18446744073709551615", 2**64 - 1),  # 7.0: the largest cursor
        (b"18446744073709551616", None),  # 7.0: past 2^64-1
        (b"99999999999999999999999", None),
        (b"9223372036854775808", 2**63),  # 7.0: past a signed 64-bit integer, still a cursor
        (b"abc", None),  # 7.0
        (b"1e3", None),  # 7.0
        (b"0x10", None),  # 7.0
        (b"1_000", None),  # 7.0: Python's int() would take it; Redis does not
        (b"\xd9\xa1", None),  # 7.0: a non-ASCII digit
        (b"5 ", None),  # 7.0
        (b"+5", 5),  # 7.0
        (b"05", 5),  # 7.0
        (b"0" * 30 + b"1", 1),  # 7.0: leading zeros, however many
        (b"0" * 5000, 0),
        (b"9" * 5000, None),  # too long for int() to read: refused before it
        (b"5\x00x", 5),  # 7.0: the argument ends at a NUL byte, as a C string
        (b"-", None),  # 7.0
        (b"+", None),  # 7.0
        (b"  +", None),  # 7.0
        (b"-1", None),  # a negative plain decimal is refused (7.0 took it as 2^64-1)
        (b"-9223372036854775808", None),
        (b"", None),  # (7.0 took it as 0)
        (b" 5", 5),  # strtoull skips leading white space (7.0 refused it)
        (b"\t7", 7),
        (b"-0", 0),  # not a plain decimal, so strtoull reads it
        (b"-05", 2**64 - 5),  # strtoull negates modulo 2^64
        (b"-9223372036854775809", 2**63 - 1),
        (b"-18446744073709551615", 1),
        (b"-18446744073709551616", None),
    ],
)
def test_a_cursor_argument_is_parsed_as_redis_does(argument: bytes, cursor: int | None) -> None:
    assert parse_cursor(argument) == cursor


@given(st.integers(0, 2**64 - 1))
def test_every_cursor_redis_prints_reads_back(cursor: int) -> None:
    assert parse_cursor(str(cursor).encode()) == cursor


def test_zero_starts_a_scan_and_ends_it() -> None:
    table = ScanCursors(4, random.Random(1))
    assert table.start_of(0) == b""
    assert table.resume(b"0") == b""
    assert table.cursor_for(None) == 0
    assert len(table) == 0


def test_a_cursor_resumes_where_the_page_ended_and_can_be_retried() -> None:
    table = ScanCursors(4, random.Random(1))
    cursor = table.cursor_for(b"key:0042\x00")
    assert 1 <= cursor <= MAX_ISSUED_CURSOR
    argument = str(cursor).encode()
    assert table.resume(argument) == b"key:0042\x00"
    assert table.resume(argument) == b"key:0042\x00"  # a retry gets the same start
    assert table.cursor_for(b"key:0042\x00") == cursor  # and the same next cursor back
    assert len(table) == 1


def test_an_unknown_or_malformed_cursor_is_invalid() -> None:
    table = ScanCursors(4, random.Random(1))
    issued = table.cursor_for(b"k")
    never_issued = str(issued % MAX_ISSUED_CURSOR + 1).encode()
    for argument in [b"12345", b"18446744073709551615", b"-1", b"nope", b"", never_issued]:
        assert table.resume(argument) == INVALID_CURSOR


def test_the_least_recently_used_cursor_is_forgotten_first() -> None:
    table = ScanCursors(3, random.Random(7))
    first, second, third = (table.cursor_for(start) for start in (b"a", b"b", b"c"))
    assert table.start_of(first) == b"a"  # used again: now the most recent
    fourth = table.cursor_for(b"d")
    assert len(table) == 3
    assert table.start_of(second) is None
    assert table.resume(str(second).encode()) == INVALID_CURSOR
    assert [table.start_of(c) for c in (first, third, fourth)] == [b"a", b"c", b"d"]
    # A forgotten start that comes back gets a new cursor.
    again = table.cursor_for(b"b")
    assert again != second
    assert table.start_of(again) == b"b"


def test_cursors_come_from_the_random_source_passed_in() -> None:
    one, two = ScanCursors(8, random.Random(3)), ScanCursors(8, random.Random(3))
    starts = [b"a", b"b", b"c"]
    assert [one.cursor_for(s) for s in starts] == [two.cursor_for(s) for s in starts]
    other = ScanCursors(8, random.Random(4))
    assert [other.cursor_for(s) for s in starts] != [one.cursor_for(s) for s in starts]


class _Stuck(random.Random):
    """A random source that always draws the same number, to force collisions."""

    def randint(self, a: int, b: int) -> int:
        return b - 1


def test_a_drawn_cursor_already_in_use_is_stepped_past() -> None:
    table = ScanCursors(4, _Stuck())
    cursors = [table.cursor_for(start) for start in (b"a", b"b", b"c", b"d")]
    assert cursors == [MAX_ISSUED_CURSOR - 1, MAX_ISSUED_CURSOR, 1, 2]  # wraps, never to 0
    assert [table.start_of(c) for c in cursors] == [b"a", b"b", b"c", b"d"]


def test_the_table_needs_room() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ScanCursors(0, random.Random(1))


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 6),
    steps=st.lists(st.tuples(st.booleans(), st.binary(max_size=2)), max_size=60),
    seed=st.integers(0, 2**32),
)
def test_a_held_cursor_always_resolves_to_its_start(
    capacity: int, steps: list[tuple[bool, bytes]], seed: int
) -> None:
    table = ScanCursors(capacity, random.Random(seed))
    recent: list[int] = []  # the model: cursors, least recently used first
    starts: dict[int, bytes] = {}
    for use_old, start in steps:
        if use_old and starts:
            cursor = sorted(starts)[len(start) % len(starts)]
            assert table.start_of(cursor) == (starts[cursor] if cursor in recent else None)
            if cursor in recent:
                recent.remove(cursor)
                recent.append(cursor)
            continue
        cursor = table.cursor_for(start)
        assert cursor != 0
        if cursor in recent:
            assert starts[cursor] == start
            recent.remove(cursor)
        elif len(recent) == capacity:
            recent.pop(0)
        recent.append(cursor)
        starts[cursor] = start
        assert len(table) == len(recent) <= capacity
    for cursor in recent:
        assert table.start_of(cursor) == starts[cursor]


def test_the_reply_carries_the_cursor_as_a_bulk_string() -> None:
    assert scan_reply(0, [b"a", b"b"]) == [b"0", [b"a", b"b"]]
    assert scan_reply(2**63 - 1, []) == [b"9223372036854775807", []]
