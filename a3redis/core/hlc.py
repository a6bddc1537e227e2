"""Hybrid logical clock: the source of every write's version.

Rules: a version is `(wall_ms, logical, node_id)` and versions compare as
tuples, so every pair of versions is ordered and ties are broken by node id.
`now` never returns a version less than or equal to one it returned or
observed before, whatever the wall clock does. The wall time is an argument.
"""

from __future__ import annotations

from typing import NamedTuple

# The logical counter is a uint32 on the wire.
MAX_LOGICAL = 2**32 - 1


class Version(NamedTuple):
    wall_ms: int
    logical: int
    node_id: str

    def __str__(self) -> str:
        return f"{self.wall_ms}.{self.logical}@{self.node_id}"


class ClockOverflowError(RuntimeError):
    """The logical counter ran out while the wall clock stood still."""


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
        else:
            self._bump_logical()
        return self.last

    def observe(self, remote: Version, wall_ms: int) -> None:
        """Move past a version seen elsewhere, so later `now` calls exceed it."""
        if wall_ms > self._wall_ms and wall_ms > remote.wall_ms:
            self._wall_ms, self._logical = wall_ms, 0
        elif remote.wall_ms > self._wall_ms:
            self._wall_ms, self._logical = remote.wall_ms, remote.logical
        elif remote.wall_ms == self._wall_ms and remote.logical > self._logical:
            self._logical = remote.logical

    def _bump_logical(self) -> None:
        if self._logical >= MAX_LOGICAL:
            raise ClockOverflowError("hybrid logical clock counter overflow")
        self._logical += 1
