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
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from blake3 import blake3

DEFAULT_PARTITIONS = 4096
_MASK = (1 << 64) - 1


def key_hash(key: bytes) -> int:
    """The 128-bit blake3 hash that places a key: its top bits are the partition."""
    return int.from_bytes(blake3(key).digest(16), "big")


def _hash64(data: bytes) -> int:
    return int.from_bytes(blake3(data).digest(8), "big")


def _mix(value: int) -> int:
    # splitmix64's finalizer: a cheap, well-distributed 64-bit mix, so a score
    # costs integer arithmetic instead of one blake3 call per (partition, node).
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
    value = (value ^ (value >> 27)) * 0x94D049BB133111EB & _MASK
    return value ^ (value >> 31)


def partition_of(key: bytes, partitions: int = DEFAULT_PARTITIONS) -> int:
    """The partition of a key: the top bits of its blake3 hash."""
    return key_hash(key) >> (128 - partitions.bit_length() + 1)


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
        self._lists = self._build()

    def _build(self) -> list[tuple[str, ...]]:
        take = min(self.replication_factor, len(self.members))
        if take == 0:
            return [()] * self.partitions
        seeds = [(_hash64(b"node:" + node.encode()), node) for node in self.members]
        lists = []
        for partition in range(self.partitions):
            salt = _mix(partition + 0x9E3779B97F4A7C15)
            scored = sorted(((_mix(seed ^ salt), node) for seed, node in seeds), reverse=True)
            lists.append(tuple(node for _, node in scored[:take]))
        return lists

    def preference_list(self, key: bytes) -> tuple[str, ...]:
        """The nodes that hold `key`, most preferred first."""
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

    def with_members(self, members: Sequence[str]) -> Ring:
        return Ring(members, self.replication_factor, self.partitions)
