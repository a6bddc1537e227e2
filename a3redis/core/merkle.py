"""Merkle trees for anti-entropy: what two replicas compare to find what differs.

Rules:
- A key's leaf is fixed by its blake3 hash: the top bits give its partition
  (the same as the ring's), the next bits its chunk within the partition.
  Never by position in sorted order: one insert changes exactly one leaf.
- A leaf's hash is an order-independent combination (XOR) of one 128-bit
  blake3 digest per entry of (key, version, tombstone flag, expiry), as in Riak's
  tictac AAE, so a write updates it in O(1): XOR out the old entry's digest,
  XOR in the new one. The expiry is hashed only when there is one, so a
  record without one hashes as it did before records could expire (nodes
  of both releases compare equal). Inner hashes are computed lazily and cached per
  partition until a write in it invalidates them.
- A RangeTree is built on demand over the partitions two replicas share, from
  the cached partition roots, so equal replicas compare a single root.
- `diff` descends only into children whose hashes differ and returns exactly
  the differing leaves: it is the anti-entropy walk (core.anti_entropy)
  with a local index answering as the peer.
- Pure: no I/O, no clock; hashing only.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from blake3 import blake3

from a3redis.core.anti_entropy import (
    FANOUT,
    ChunksRequest,
    TreeRequest,
    TreeWalk,
    answer_chunks,
    answer_tree,
)
from a3redis.core.record import Record
from a3redis.core.ring import key_hash

DIGEST_BYTES = 16
EMPTY = bytes(DIGEST_BYTES)


def partition_and_chunk(hashed: int, partitions: int, chunks: int) -> tuple[int, int]:
    """The leaf of a key hash: the ring's partition, then the chunk within it."""
    partition_bits = partitions.bit_length() - 1
    chunk_bits = chunks.bit_length() - 1
    partition = hashed >> (128 - partition_bits)
    chunk = (hashed >> (128 - partition_bits - chunk_bits)) & (chunks - 1)
    return partition, chunk


_ENTRY = struct.Struct(">IQIB")
_EXPIRY = struct.Struct(">Q")
_FLAG_EXPIRES = 2  # beside the tombstone flag (1): an expiry follows the node id


def entry_digest(record: Record) -> int:
    """A record's contribution to its leaf: 128 bits over (key, version, tombstone, expiry)."""
    key, value, version, expires = record
    if expires:
        header = _ENTRY.pack(
            len(key), version.wall_ms, version.logical, (value is None) | _FLAG_EXPIRES
        )
        data = b"".join((header, key, version.node_id.encode(), _EXPIRY.pack(expires)))
    else:
        header = _ENTRY.pack(len(key), version.wall_ms, version.logical, value is None)
        data = b"".join((header, key, version.node_id.encode()))
    return int.from_bytes(blake3(data).digest(DIGEST_BYTES), "big")


def combine(hashes: Iterable[bytes]) -> bytes:
    return blake3(b"".join(hashes)).digest(DIGEST_BYTES)


class MerkleIndex:
    """Leaf accumulators for every (partition, chunk) of one replica's store."""

    def __init__(self, partitions: int, chunks: int) -> None:
        for name, value in (("partitions", partitions), ("chunks", chunks)):
            if value < 1 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two")
        self.partitions = partitions
        self.chunks = chunks
        self._leaves = [0] * (partitions * chunks)
        # A key hash shifted right by this many bits is its global leaf number.
        self._leaf_shift = 128 - (partitions * chunks).bit_length() + 1
        self._keys: dict[int, set[bytes]] = {}
        self._roots: dict[int, bytes] = {}

    def leaf_of(self, key: bytes) -> tuple[int, int]:
        return partition_and_chunk(key_hash(key), self.partitions, self.chunks)

    def update(self, old: Record | None, new: Record | None) -> None:
        """Account for one key's record changing from `old` to `new` (None: absent)."""
        record = new if new is not None else old
        if record is None:
            return
        # Partition bits then chunk bits: the top bits of the hash number the leaf.
        leaf = key_hash(record.key) >> self._leaf_shift
        partition = leaf // self.chunks
        value = self._leaves[leaf]
        if old is not None:
            value ^= entry_digest(old)
        if new is not None:
            value ^= entry_digest(new)
            self._keys.setdefault(leaf, set()).add(record.key)
        else:
            keys = self._keys.get(leaf)
            if keys is not None:
                keys.discard(record.key)
                if not keys:
                    del self._keys[leaf]
        self._leaves[leaf] = value
        self._roots.pop(partition, None)

    def leaf_hashes(self, partition: int) -> list[bytes]:
        start = partition * self.chunks
        return [
            value.to_bytes(DIGEST_BYTES, "big")
            for value in self._leaves[start : start + self.chunks]
        ]

    def partition_root(self, partition: int) -> bytes:
        root = self._roots.get(partition)
        if root is None:
            root = self._roots[partition] = combine(self.leaf_hashes(partition))
        return root

    def keys_in(self, partition: int, chunk: int) -> set[bytes]:
        return set(self._keys.get(partition * self.chunks + chunk, ()))

    def occupied_partitions(self) -> set[int]:
        """The partitions that hold at least one key."""
        return {leaf // self.chunks for leaf in self._keys}

    def partition_keys(self, partition: int) -> list[bytes]:
        start = partition * self.chunks
        found: list[bytes] = []
        for leaf in range(start, start + self.chunks):
            found.extend(self._keys.get(leaf, ()))
        return sorted(found)

    def range_tree(self, partitions: Sequence[int], fanout: int) -> RangeTree:
        return RangeTree([self.partition_root(p) for p in partitions], fanout)


class RangeTree:
    """A Merkle tree over an ordered list of partition roots (its leaves)."""

    def __init__(self, leaves: list[bytes], fanout: int) -> None:
        if fanout < 2:
            raise ValueError("fanout must be at least 2")
        self.leaves = leaves
        self.fanout = fanout
        levels = [leaves]
        while len(levels[-1]) > 1:
            below = levels[-1]
            levels.append([combine(below[i : i + fanout]) for i in range(0, len(below), fanout)])
        # levels[0] is the root level, levels[-1] the partition roots.
        self.levels = levels[::-1]

    @property
    def depth(self) -> int:
        return len(self.levels)

    @property
    def root(self) -> bytes:
        return self.levels[0][0] if self.leaves else EMPTY

    def children(self, level: int, index: int) -> list[bytes]:
        """The hashes one level down under node `index` of `level`."""
        return self.levels[level + 1][index * self.fanout : (index + 1) * self.fanout]


def diff_trees(mine: RangeTree, theirs: RangeTree) -> list[int]:
    """Indexes of the leaves (partitions, in list order) whose roots differ.

    Walks down from the root and compares only the children of differing
    nodes, as two replicas do over the network one level per round trip.
    """
    if len(mine.leaves) != len(theirs.leaves):
        raise ValueError("trees over different partition lists cannot be compared")
    if mine.root == theirs.root:
        return []
    differing = [0]
    for level in range(mine.depth - 1):
        following: list[int] = []
        for index in differing:
            ours, others = mine.children(level, index), theirs.children(level, index)
            following.extend(
                index * mine.fanout + offset
                for offset, (a, b) in enumerate(zip(ours, others, strict=True))
                if a != b
            )
        differing = following
    return differing


def diff(
    mine: MerkleIndex, theirs: MerkleIndex, partitions: Sequence[int], fanout: int = FANOUT
) -> list[tuple[int, int]]:
    """The (partition, chunk) leaves whose entry sets differ, among `partitions`.

    The anti-entropy walk itself, with `theirs` answering as a peer would.
    """
    if mine.partitions != theirs.partitions or mine.chunks != theirs.chunks:
        raise ValueError("indexes of different shapes cannot be compared")
    order = sorted(partitions)
    walk = TreeWalk("local", mine, order, fanout)
    # Each step goes one level down (or on to the chunks): the depth bounds the walk.
    for _ in range(walk.tree.depth + 1):
        request = walk.request
        if isinstance(request, TreeRequest):
            walk.on_tree(answer_tree(request, order, theirs.chunks, theirs), now=0.0)
        elif isinstance(request, ChunksRequest):
            walk.on_chunks(answer_chunks(request, theirs))
        else:
            break  # done, or it would ask for the entries of the leaves found
    return walk.leaves
