"""SCAN's numeric cursors over a store walked in key order.

Rules:
- A node scans keys in byte order from a start key (see
  `Keyspace.scan_page`); where the next page starts is a key, but Redis
  clients expect a number they can print, compare with 0 and send back
  (redis-cli `--scan` parses a u64, redis-py calls `int()`). So each node
  keeps a table from cursor numbers to next start keys, as Kvrocks does.
- Cursor 0 starts a scan (from the empty key, the first in byte order), and
  a reply with cursor 0 ends it. Every other cursor is drawn from the
  `random.Random` passed in, from 1 to 2^63-1, so clients that keep a
  cursor in a signed 64-bit integer work too, and cursors cannot be guessed
  from each other.
- The table is bounded (`capacity`): the least recently used cursor is
  forgotten first. Using a cursor does not consume it, so a client that
  retries a page with the same cursor gets the same start again; and while
  a start key is in the table it keeps its cursor, so a retried page hands
  back the same next cursor and the table does not grow.
- A cursor that is not a number, or is out of Redis's range, or is unknown
  to this node (never issued here, forgotten, or issued before the node
  restarted) is answered with Redis's `ERR invalid cursor`. Cursors live on
  the node that issued them: a client must keep one scan on one node (a
  connection does), and begin again from 0 after that node restarts or the
  error comes back.
- A cursor is a position in key order, not in the ring, so it survives ring
  changes. As Redis promises, a key present for the whole scan is returned;
  and since the walk is in key order, no key is returned twice.
- A cursor argument is parsed as Redis's `string2ull` (src/util.c, used by
  `parseScanCursorOrReply` since Redis 7.4): a plain decimal
  (`-?[1-9][0-9]*` or `0`, at most 20 characters) is taken if it fits a
  signed 64-bit integer and refused if it is negative; anything else goes
  through C's `strtoull` (leading white space, a sign and leading zeros
  allowed, a `-` negating modulo 2^64, at most 2^64-1). As in C, the
  argument ends at its first NUL byte. Redis 7.2 and older parsed with
  `strtoul` instead, which took `-1` (as 2^64-1) and the empty string (as 0)
  and refused leading white space.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import TYPE_CHECKING

from a3redis.core.resp_values import ErrorReply, Reply

if TYPE_CHECKING:
    import random

INVALID_CURSOR = ErrorReply("ERR invalid cursor")
MAX_CURSOR = 2**64 - 1
# Issued cursors stay below 2^63 (see the rules).
MAX_ISSUED_CURSOR = 2**63 - 1

_PLAIN_DECIMAL = re.compile(rb"0|-?[1-9][0-9]{0,19}")
# C's isspace in the C locale, an optional sign, then digits to the end.
_STRTOULL = re.compile(rb"[ \t\n\v\f\r]*([+-]?)0*([0-9]+)")
_INT64 = range(-(2**63), 2**63)


def parse_cursor(argument: bytes) -> int | None:
    """The cursor Redis reads from `argument`, or None where Redis answers `invalid cursor`."""
    text = argument.split(b"\x00", 1)[0]
    if _PLAIN_DECIMAL.fullmatch(text) and len(text) < 21:
        value = int(text)
        if value in _INT64:
            return value if value >= 0 else None
    found = _STRTOULL.fullmatch(text)
    if found is None:
        return None
    sign, digits = found.groups()
    if len(digits) > 20:  # past 2^64 (and never handed to int(): it refuses huge digit strings)
        return None
    value = int(digits)
    if value > MAX_CURSOR:
        return None
    return (-value) % 2**64 if sign == b"-" else value


def scan_reply(cursor: int, keys: list[bytes]) -> Reply:
    """SCAN's reply: the next cursor (a bulk string, as Redis sends it) and the page's keys."""
    page: list[Reply] = list(keys)
    return [str(cursor).encode(), page]


class ScanCursors:
    """One node's table from cursor numbers to the keys where scans go on."""

    def __init__(self, capacity: int, rng: random.Random) -> None:
        if capacity < 1:
            raise ValueError("the cursor table needs room for at least one cursor")
        self.capacity = capacity
        self._rng = rng
        self._starts: OrderedDict[int, bytes] = OrderedDict()  # least recently used first
        self._cursors: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._starts)

    def start_of(self, cursor: int) -> bytes | None:
        """Where the scan `cursor` goes on (b"" for 0), or None if this node does not know it."""
        if cursor == 0:
            return b""
        start = self._starts.get(cursor)
        if start is not None:
            self._starts.move_to_end(cursor)
        return start

    def resume(self, argument: bytes) -> bytes | ErrorReply:
        """SCAN's cursor argument as the key to start from, or Redis's `ERR invalid cursor`."""
        cursor = parse_cursor(argument)
        start = None if cursor is None else self.start_of(cursor)
        return INVALID_CURSOR if start is None else start

    def cursor_for(self, next_start: bytes | None) -> int:
        """The cursor to hand back for a page after which the scan goes on at `next_start`.

        None (the scan is done) is cursor 0. A start already in the table
        keeps its cursor; a new one gets a fresh number, and the least
        recently used cursor is forgotten if the table is full.
        """
        if next_start is None:
            return 0
        cursor = self._cursors.get(next_start)
        if cursor is not None:
            self._starts.move_to_end(cursor)
            return cursor
        if len(self._starts) >= self.capacity:
            _, forgotten = self._starts.popitem(last=False)
            del self._cursors[forgotten]
        cursor = self._rng.randint(1, MAX_ISSUED_CURSOR)
        # A collision is a 1-in-2^63 event per cursor held; stepping to the
        # next free number ends within `capacity` steps.
        while cursor in self._starts:
            cursor = cursor % MAX_ISSUED_CURSOR + 1
        self._starts[cursor] = next_start
        self._cursors[next_start] = cursor
        return cursor
