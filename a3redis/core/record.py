"""Records and their last-write-wins merge.

Rules: a record is a key, a value or a tombstone (`value is None`), a
version, and an expiry (`expires_at_ms`: wall-clock milliseconds since the
epoch after which the record reads as missing; 0: never; a3redis.core.expiry
holds the rules). The expiry follows the version: it is never merged on its
own, a new expiry is a new write. `merge` keeps the record with the greater
version; for the same version it compares the payload too, so merge is a
true semilattice join: commutative, associative and idempotent even for
malformed input. A record replaces another only if it is strictly greater
(`supersedes`): a write that ties or loses is never reported as stored.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from a3redis.core.hlc import Version


class Record(NamedTuple):
    key: bytes
    value: bytes | None
    version: Version
    expires_at_ms: int = 0

    @property
    def is_tombstone(self) -> bool:
        return self.value is None

    def order_key(self) -> tuple[Version, bool, bytes, int]:
        # A live value sorts above a tombstone of the very same version, and the
        # payload and expiry decide between two records of that version, only to
        # make the order total; real versions are unique per write.
        return (self.version, self.value is not None, self.value or b"", self.expires_at_ms)


def supersedes(new: Record, old: Record | None) -> bool:
    """Whether `new` should replace `old` (strictly newer by LWW order)."""
    if old is None:
        return True
    if new.version != old.version:
        return new.version > old.version
    return new.order_key() > old.order_key()


def merge(a: Record, b: Record) -> Record:
    """The last-write-wins join of two records of the same key."""
    if a.key != b.key:
        raise ValueError("cannot merge records of different keys")
    return b if supersedes(b, a) else a


class ApplyOutcome(enum.IntEnum):
    """What a replica did with a record (the numbers are the wire's)."""

    STORED = 0
    DUPLICATE = 1  # it already held exactly this version
    SUPERSEDED = 2  # it holds a newer version: the record lost last-write-wins
    REJECTED = 3  # the record failed the replica's checks (core.validation): nothing changed


def outcome(record: Record, stored: bool, current: Record | None) -> ApplyOutcome:
    """Classify an apply, given whether it stored and what the replica holds now."""
    if stored:
        return ApplyOutcome.STORED
    if current is not None and current.order_key() == record.order_key():
        return ApplyOutcome.DUPLICATE
    return ApplyOutcome.SUPERSEDED
