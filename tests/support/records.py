"""Building records for tests: one helper, the fields in the order a Record has them."""

from __future__ import annotations

from a3redis.core.hlc import Version
from a3redis.core.record import Record

# The node id of the versions tests write themselves.
NODE = "n1"


def rec(
    key: bytes, value: bytes | None, wall_ms: int, logical: int = 0, node: str = NODE
) -> Record:
    """A record of `key` (value None: a tombstone) at version (wall_ms, logical, node)."""
    return Record(key, value, Version(wall_ms, logical, node))
