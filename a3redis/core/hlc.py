"""Hybrid logical clock: the source of every write's version.

Rules: a version is `(wall_ms, logical, node_id)` and versions compare as
tuples, so every pair of versions is ordered and ties are broken by node id.
`now` never returns a version less than or equal to one it returned or
observed before, whatever the wall clock does, and never fails: when the
logical counter is spent within one millisecond, the clock moves its wall
component on by 1 ms instead. The wall time is an argument. What a clock may
observe is bounded elsewhere (a3redis.core.validation: a version far ahead of
the local wall clock is refused before it reaches `observe`).
"""

from __future__ import annotations

from typing import NamedTuple

# The logical counter is a uint32 on the wire.
MAX_LOGICAL = 2**32 - 1

_new_tuple = tuple.__new__  # what a named tuple's own constructor does, without a Python call


class Version(NamedTuple):
    wall_ms: int
    logical: int
    node_id: str

    def __str__(self) -> str:
        return f"{self.wall_ms}.{self.logical}@{self.node_id}"


class HybridLogicalClock:
    def __init__(self, node_id: str) -> None:
        if not node_id:
            raise ValueError("node_id must not be empty")
        self.node_id = node_id
        self._wall_ms = 0
        self._logical = 0

    @property
    def last(self) -> Version:
        return Version(self._wall_ms, self._logical, self.node_id)

    def now(self, wall_ms: int) -> Version:
        """A fresh version, greater than every version issued or observed."""
        if wall_ms > self._wall_ms:
            self._wall_ms, self._logical = wall_ms, 0
        elif self._logical < MAX_LOGICAL:
            self._logical += 1
        else:
            # The counter is spent: the next millisecond is still later than
            # everything issued or observed, and fits the wire again.
            self._wall_ms, self._logical = self._wall_ms + 1, 0
        # Every write takes one: made as `last` makes it, without a Python call.
        version: Version = _new_tuple(Version, (self._wall_ms, self._logical, self.node_id))
        return version

    def observe(self, remote: Version, wall_ms: int) -> None:
        """Move past a version seen elsewhere, so later `now` calls exceed it."""
        if wall_ms > self._wall_ms and wall_ms > remote.wall_ms:
            self._wall_ms, self._logical = wall_ms, 0
        elif remote.wall_ms > self._wall_ms:
            self._wall_ms, self._logical = remote.wall_ms, min(remote.logical, MAX_LOGICAL)
        elif remote.wall_ms == self._wall_ms and remote.logical > self._logical:
            # A counter beyond the wire's range is held at its top: the next `now`
            # moves on to the next millisecond, which is later than `remote` too.
            self._logical = min(remote.logical, MAX_LOGICAL)
