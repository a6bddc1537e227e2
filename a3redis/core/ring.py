"""Placement: which nodes hold a key.

Rules:
- Keys map to one of `partitions` fixed partitions by blake3 (never Python's
  `hash()`, which differs per process); the partition count is a power of two
  and never changes for a cluster.
- Each partition's preference list is the N ring members with the highest
  rendezvous score (highest-random-weight hashing): a deterministic function
  of the member set only, so every node computes the same lists. Adding or
  removing one of M nodes moves only the partitions whose top N that node
  enters or leaves: about N/M of them, and nothing else.
- Ring members are the members that have not left or been removed; a dead
  node keeps its partitions (its writes become hints), so a flapping node
  never reshuffles data.
- Fewer members than N give shorter lists: the caller decides whether a
  consistency level can still be met.
- Building is fast enough for MAX_MEMBERS (1024) members, and a change is
  cheaper still: a score is splitmix64(member seed ^ partition salt), and
  one member's scores for every partition are computed at once on 128-bit
  lanes of one Python integer (the multiplications cannot carry from lane
  to lane). `with_members` reuses the current lists: an added member is
  scored once per partition and kept where it beats the N-th; only the
  partitions that lost an owner are scored again. Both give exactly the
  lists a fresh build gives (a test holds them to it and to placements
  computed before this speed-up).
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable
from functools import cache
from itertools import compress
from operator import ge

from blake3 import blake3

DEFAULT_PARTITIONS = 4096
_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
# Scoring one partition for every member in plain Python costs about this many
# times a lane of the per-member computation; it decides between a change and
# a fresh build.
_PLAIN_COST = 8


def key_hash(key: bytes) -> int:
    """The 128-bit blake3 hash that places a key: its top bits are the partition."""
    return int.from_bytes(blake3(key).digest(16), "big")


def _hash64(data: bytes) -> int:
    return int.from_bytes(blake3(data).digest(8), "big")


def _mix(value: int) -> int:
    # splitmix64's finalizer: a cheap, well-distributed 64-bit mix, so a score
    # costs integer arithmetic instead of one blake3 call per (partition, node).
    value = (value ^ (value >> 30)) * _MIX1 & _MASK
    value = (value ^ (value >> 27)) * _MIX2 & _MASK
    return value ^ (value >> 31)


@cache
def _seed(node: str) -> int:
    return _hash64(b"node:" + node.encode())


def partition_of(key: bytes, partitions: int = DEFAULT_PARTITIONS) -> int:
    """The partition of a key: the top bits of its blake3 hash."""
    return key_hash(key) >> (128 - partitions.bit_length() + 1)


def partitions_of(keys: Iterable[bytes], partitions: int = DEFAULT_PARTITIONS) -> list[int]:
    """`partition_of` each key, in one call (a Stream page checks thousands)."""
    shift = 128 - partitions.bit_length() + 1
    from_bytes = int.from_bytes
    return [from_bytes(blake3(key).digest(16), "big") >> shift for key in keys]


class _Lanes:
    """Scores of one member for every partition at once, on 128-bit lanes of one integer."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.salts = [_mix(partition + _GOLDEN) for partition in range(partitions)]
        # Every lane's low bit, and every lane's low 64 bits.
        self.ones = int.from_bytes((b"\x01" + bytes(15)) * partitions, "little")
        self.low = self.ones * _MASK
        interleaved = array("Q", [0]) * (2 * partitions)
        interleaved[::2] = array("Q", self.salts)
        if sys.byteorder == "big":
            interleaved.byteswap()
        self.packed_salts = int.from_bytes(interleaved.tobytes(), "little")

    def scores(self, seed: int) -> array[int]:
        """`_mix(seed ^ salt)` for every partition's salt, in partition order."""
        low = self.low
        value = seed * self.ones ^ self.packed_salts
        value = ((value ^ (value >> 30)) & low) * _MIX1 & low
        value = ((value ^ (value >> 27)) & low) * _MIX2 & low
        value = (value ^ (value >> 31)) & low
        lanes = array("Q", value.to_bytes(16 * self.partitions, "little"))
        if sys.byteorder == "big":
            lanes.byteswap()
        return lanes[::2]


@cache
def _lanes(partitions: int) -> _Lanes:
    return _Lanes(partitions)


# Per partition: its owners with their scores, best first (score, then node id, descending).
_Top = list[tuple[int, str]]


class Ring:
    def __init__(
        self,
        members: Iterable[str],
        replication_factor: int,
        partitions: int = DEFAULT_PARTITIONS,
    ) -> None:
        if partitions < 1 or partitions & (partitions - 1):
            raise ValueError("partitions must be a power of two")
        if replication_factor < 1:
            raise ValueError("replication_factor must be at least 1")
        self.members = tuple(sorted(set(members)))
        self.replication_factor = replication_factor
        self.partitions = partitions
        self._top = self._build()
        self._set_lists()

    @property
    def _take(self) -> int:
        return min(self.replication_factor, len(self.members))

    def _build(self) -> list[_Top]:
        top: list[_Top] = [[] for _ in range(self.partitions)]
        self._insert(top, self.members, set())
        return top

    def _insert(self, top: list[_Top], nodes: Iterable[str], skip: set[int]) -> None:
        """Score `nodes` for every partition but `skip` and keep them where they place."""
        take = self._take
        if take == 0:
            return
        lanes = _lanes(self.partitions)
        everything = range(self.partitions)
        # A partition's bar: the lowest kept score once it has `take` owners, else -1.
        bars = [owners[-1][0] if len(owners) >= take else -1 for owners in top]
        for partition in skip:
            bars[partition] = 1 << 64  # never reached by a 64-bit score
        for node in nodes:
            scores = lanes.scores(_seed(node))
            # Equal scores pass too: the node id then breaks the tie.
            for partition in compress(everything, map(ge, scores, bars)):
                owners = top[partition]
                owners.append((scores[partition], node))
                owners.sort(reverse=True)
                del owners[take:]
                if len(owners) >= take:
                    bars[partition] = owners[-1][0]

    def _rescore(self, partition: int) -> _Top:
        salt = _lanes(self.partitions).salts[partition]
        scored = sorted(((_mix(_seed(node) ^ salt), node) for node in self.members), reverse=True)
        return scored[: self._take]

    def _set_lists(self) -> None:
        self._lists = [tuple(node for _, node in top) for top in self._top]
        # A ring of one node places every key there: no key needs hashing.
        self._sole = self.members if len(self.members) == 1 else None

    @property
    def sole_owners(self) -> tuple[str, ...] | None:
        """Every key's preference list when the ring has one member (else None)."""
        return self._sole

    def preference_list(self, key: bytes) -> tuple[str, ...]:
        """The nodes that hold `key`, most preferred first."""
        if self._sole is not None:
            return self._sole
        return self._lists[partition_of(key, self.partitions)]

    def partition_owners(self, partition: int) -> tuple[str, ...]:
        return self._lists[partition]

    def partitions_of(self, node: str) -> list[int]:
        """The partitions that `node` holds a replica of."""
        return [p for p, owners in enumerate(self._lists) if node in owners]

    def shares(self) -> dict[str, float]:
        """Each member's fraction of all replicas (sums to 1)."""
        counts = dict.fromkeys(self.members, 0)
        for owners in self._lists:
            for node in owners:
                counts[node] += 1
        total = sum(counts.values()) or 1
        return {node: count / total for node, count in counts.items()}

    def shared_partitions(self, a: str, b: str) -> list[int]:
        """Partitions that both nodes replicate (what anti-entropy compares)."""
        return [p for p, owners in enumerate(self._lists) if a in owners and b in owners]

    def with_members(self, members: Iterable[str]) -> Ring:
        """The ring of `members`, computed from this one: the same lists as a fresh build."""
        wanted = set(members)
        old = set(self.members)
        if wanted == old:
            return self
        added = sorted(wanted - old)
        removed = old - wanted
        ring = Ring.__new__(Ring)
        ring.members = tuple(sorted(wanted))
        ring.replication_factor = self.replication_factor
        ring.partitions = self.partitions
        take = ring._take
        # Partitions that lost an owner, or (with fewer members than N) must shrink,
        # are scored again from scratch; the others only meet the newcomers.
        dirty = {
            partition
            for partition, owners in enumerate(self._top)
            if len(owners) > take or any(node in removed for _, node in owners)
        }
        size, count = len(ring.members), self.partitions
        if len(dirty) * size * _PLAIN_COST + len(added) * count >= size * count:
            ring._top = ring._build()
        else:
            top = [owners if p in dirty else list(owners) for p, owners in enumerate(self._top)]
            for partition in dirty:
                top[partition] = ring._rescore(partition)
            ring._insert(top, added, dirty)
            ring._top = top
        ring._set_lists()
        return ring

    def change_cost(self, members: Iterable[str]) -> int:
        """Roughly how many member-partition scores `with_members(members)` computes."""
        wanted = set(members)
        old = set(self.members)
        added, removed = len(wanted - old), len(old - wanted)
        # A removed member owns about N/M of the partitions; each is scored again.
        dirty = min(self.partitions, removed * self.partitions * self._take // max(1, len(old)))
        incremental = added * self.partitions + dirty * len(wanted) * _PLAIN_COST
        return min(incremental, len(wanted) * self.partitions)
