"""Keys that expire: when a record reads as missing, when it is dead, what EXPIRE writes.

Rules:
- A record may carry an absolute expiry, `expires_at_ms`: wall-clock
  milliseconds since the epoch (0: it never expires). A write asked to live
  `ttl_ms` gets `version.wall_ms + ttl_ms`, relative to its own HLC version,
  so every replica stores the same expiry; an absolute expiry (EXPIREAT) is
  taken as given (`Expiry.resolve`).
- The expiry belongs to the record: it replicates, is hashed into the Merkle
  leaves and follows last-write-wins with the version. Setting or removing
  it on an existing key is a new write of the same value with a new version.
- A record is live at `now_ms` if it is not a tombstone and it has no expiry
  or `now_ms < expires_at_ms` (`is_live`).
- Reads: the coordinator first picks the newest version (last-write-wins over
  the replicas' answers, read repair unchanged), then judges that record's
  expiry by its own clock (`visible`): an expired newest record reads as
  missing, never as an older live version. Replicas whose clocks differ
  therefore agree within the clock skew.
- Never resurrect: an expired record is kept exactly as a tombstone is (it
  still supersedes older versions in repair, hints and streaming); it is
  dead since its expiry, as a tombstone is since its version's wall time
  (`dead_since`), and a3redis.core.purge removes both by the same rule.
- EXPIRE and PERSIST are read-modify-write: given the current record, the
  time and the request, `decide_expire` and `decide_persist` say what to
  answer and what (if anything) to write; the write then goes through the
  ordinary write path. A concurrent write of the key is ordered by
  last-write-wins like every write (it may undo the new expiry, or be
  undone by it).
- Durations a person types ("500ms", "30s", "5m", "2h", "1d"; a bare number
  is seconds) are read by `parse_duration`, for every tool.
- Pure: no I/O, no clock; `now_ms` is an argument.
"""

from __future__ import annotations

import enum
import re
from typing import NamedTuple

from a3redis.core.record import Record

# The largest expiry a record may carry: the largest integer a double holds
# exactly (JSON, JavaScript clients), some 285,000 years from the epoch.
MAX_EXPIRES_AT_MS = 2**53 - 1


# ----- what a write asks for ---------------------------------------------------------------


class Expiry(NamedTuple):
    """The expiry a write asks for: `ttl_ms` after its version, or `at_ms`, or neither."""

    ttl_ms: int = 0
    at_ms: int = 0

    def resolve(self, wall_ms: int) -> int:
        """The record's `expires_at_ms` for a write whose version's wall time is `wall_ms`."""
        if self.at_ms:
            return self.at_ms
        if self.ttl_ms:
            return wall_ms + self.ttl_ms
        return 0


NEVER = Expiry()


# ----- reads -------------------------------------------------------------------------------


def is_live(record: Record, now_ms: int) -> bool:
    """Whether `record` holds a value at `now_ms` (not a tombstone, not expired)."""
    if record.value is None:
        return False
    expires = record.expires_at_ms
    return not expires or now_ms < expires


def is_expired(record: Record, now_ms: int) -> bool:
    """Whether `record` is a value whose expiry has passed at `now_ms`."""
    expires = record.expires_at_ms
    return bool(expires) and now_ms >= expires and record.value is not None


def visible(record: Record | None, now_ms: int) -> Record | None:
    """What a read answers for the newest record of a key: the record itself, or
    for an expired one a tombstone of the same version and expiry ("missing")."""
    if record is not None and is_expired(record, now_ms):
        return Record(record.key, None, record.version, record.expires_at_ms)
    return record


def remaining_ms(record: Record | None, now_ms: int) -> int:
    """Redis's PTTL: -2 for a missing (or expired) key, -1 for one without an
    expiry, else the milliseconds it has left (at least 1)."""
    if record is None or not is_live(record, now_ms):
        return -2
    if not record.expires_at_ms:
        return -1
    return record.expires_at_ms - now_ms


def dead_since(record: Record) -> int | None:
    """When `record` stopped holding a value: a tombstone's version wall time, an
    expiring record's expiry; None for a record without an expiry."""
    if record.value is None:
        return record.version.wall_ms
    return record.expires_at_ms or None


# ----- EXPIRE and PERSIST ------------------------------------------------------------------


class Condition(enum.Enum):
    """EXPIRE's options, as Redis defines them (no expiry counts as an infinite one)."""

    ALWAYS = "always"
    NX = "nx"  # only if the key has no expiry
    XX = "xx"  # only if the key has an expiry
    GT = "gt"  # only if the new expiry is later than the current one
    LT = "lt"  # only if the new expiry is earlier than the current one


class Rewrite(NamedTuple):
    """The write an EXPIRE or PERSIST makes: the key's value again (None: delete it)
    with the expiry asked for, under a new version."""

    key: bytes
    value: bytes | None
    expiry: Expiry


class Decision(NamedTuple):
    """What to answer (whether the expiry was set or removed) and what to write."""

    changed: bool
    write: Rewrite | None


UNCHANGED = Decision(False, None)


def decide_expire(
    current: Record | None, now_ms: int, expiry: Expiry, condition: Condition = Condition.ALWAYS
) -> Decision:
    """EXPIRE: set `expiry` on the key whose newest record is `current`.

    A missing or expired key is left alone (answer False). The condition
    compares the new expiry (a TTL counted from `now_ms`) with the current
    one, no expiry counting as infinite. An expiry at or before `now_ms`
    deletes the key, as in Redis.
    """
    if current is None or not is_live(current, now_ms):
        return UNCHANGED
    new_at = expiry.resolve(now_ms)
    held = current.expires_at_ms
    if condition is Condition.NX and held:
        return UNCHANGED
    if condition is Condition.XX and not held:
        return UNCHANGED
    if condition is Condition.GT and (not held or new_at <= held):
        return UNCHANGED
    if condition is Condition.LT and held and new_at >= held:
        return UNCHANGED
    if new_at <= now_ms:
        return Decision(True, Rewrite(current.key, None, NEVER))
    return Decision(True, Rewrite(current.key, current.value, expiry))


def decide_persist(current: Record | None, now_ms: int) -> Decision:
    """PERSIST: remove the expiry of a live key that has one (answer whether it did)."""
    if current is None or not is_live(current, now_ms) or not current.expires_at_ms:
        return UNCHANGED
    return Decision(True, Rewrite(current.key, current.value, NEVER))


# ----- durations ---------------------------------------------------------------------------

_DURATION = re.compile(r"(\d{1,15}(?:\.\d{1,9})?)(ms|s|m|h|d)?")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1000}


def parse_duration(text: str) -> int:
    """Milliseconds in a duration such as "500ms", "30s", "1.5m", "2h", "1d" (a bare
    number is seconds); ValueError naming the text if it is not one or is zero."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text[:40]!r} is not a duration; write a number and a unit: ms, s, m, h or d "
            "(as in 500ms, 30s, 5m, 2h)"
        )
    number, unit = match.groups()
    whole, _, fraction = number.partition(".")
    scale = _UNIT_MS[unit]
    divisor: int = 10 ** len(fraction)
    milliseconds = int(whole) * scale + int(fraction or "0") * scale // divisor
    if milliseconds <= 0:
        raise ValueError(f"{text[:40]!r} is not a positive duration of at least 1ms")
    return milliseconds


def format_duration(milliseconds: int) -> str:
    """A duration for people: "450ms", "29.5s", "5m 0s", "2h 3m"."""
    if milliseconds < 1000:
        return f"{milliseconds}ms"
    if milliseconds < 60_000:
        return f"{milliseconds / 1000:g}s"
    minutes, ms = divmod(milliseconds, 60_000)
    if minutes < 60:
        return f"{minutes}m {ms // 1000}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m"
