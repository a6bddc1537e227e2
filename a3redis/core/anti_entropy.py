"""Anti-entropy: the rules of one repair exchange between two replicas.

Rules, in the order an exchange follows them:
- Scope: the partitions both replicas own (`Ring.shared_partitions`), in
  partition order. The asker names that list by a digest and its
  CHUNK_COUNT; a peer whose own ring gives another list, or that has
  another CHUNK_COUNT, answers `same_ring=False` and the exchange ends with
  nothing changed (membership is still converging).
- The walk (`TreeWalk`) asks one message at a time and reads each answer:
  1. Tree: the root of the range tree over the shared partitions' roots
     (level 0), then, one level per request, only the children of nodes
     whose hashes differed. Equal roots end the exchange: a few dozen bytes.
     A peer still building its Merkle index answers `building`: ask the
     same again every BUILDING_RETRY seconds, for INDEX_BUILD_WAIT at most.
  2. Chunks: the CHUNK_COUNT leaf hashes of every partition that differed
     (a hash the peer left out counts as different).
  3. Entries: the (key, version, tombstone, expiry) lists of the leaves that
     differed.
  The walk ends with those leaves and the peer's entries. The same walk,
  with a local index answering, is `merkle.diff`.
- Bounds, on the serving side: the fan-out is 2..MAX_FANOUT; a request names
  at most what exists (a level's nodes, the ring's partitions, the index's
  leaves), checked before any work, or it is refused naming the bound.
- What the peer sends is checked like any peer input (`check_entries`): an
  entry whose key or version fails is left out of the comparison, so our
  valid copy is pushed over it. (The shell also leaves records beyond the
  clock-skew bound out of what it offers and pushes.)
- The pull/push rule (`transfers`), per key of the differing leaves:
  newer version wins, in both directions; at the very same version a value
  beats a tombstone. A key only one side holds is copied to the other,
  except a record dead for longer than TOMBSTONE_GRACE (a tombstone, or an
  expired record: core.expiry.dead_since): it is about to be purged
  everywhere (core.purge), and copying it to a replica that has already
  purged it would only bring it back for a while. A replica holding an
  older value of that key always gets it. Records move in
  batches of TRANSFER_BATCH keys: pulls read from the peer, pushes applied
  on it.
- Pure: the shell moves the messages, keeps time (`now` is an argument) and
  paces the transfers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from blake3 import blake3

from a3redis.core.expiry import MAX_EXPIRES_AT_MS
from a3redis.core.hlc import Version
from a3redis.core.record import Record
from a3redis.core.validation import InvalidRequestError, Limits, Reason

if TYPE_CHECKING:
    from a3redis.core.merkle import MerkleIndex

MAX_FANOUT = 256
FANOUT = 16  # MERKLE_FANOUT's default
# How long an exchange waits for a peer that is still building its Merkle index.
INDEX_BUILD_WAIT = 60.0
BUILDING_RETRY = 0.2
TRANSFER_BATCH = 256

Leaf = tuple[int, int]
"""(partition, chunk)"""


def shared_digest(partitions: Sequence[int]) -> bytes:
    """What names the shared partition list in a Tree request."""
    return blake3(b",".join(str(p).encode() for p in partitions)).digest(16)


# ----- the messages ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TreeRequest:
    requester: str
    shared_digest: bytes
    level: int  # 0 is the root; the deepest level holds one hash per shared partition
    indexes: Sequence[int]
    fanout: int
    chunks: int


@dataclass(frozen=True, slots=True)
class TreeAnswer:
    same_ring: bool
    hashes: Sequence[bytes] = ()
    building: bool = False


@dataclass(frozen=True, slots=True)
class ChunksRequest:
    partitions: Sequence[int]


@dataclass(frozen=True, slots=True)
class ChunksAnswer:
    hashes: Sequence[bytes]  # CHUNK_COUNT per requested partition, in request order


@dataclass(frozen=True, slots=True)
class EntriesRequest:
    leaves: Sequence[Leaf]


class EntryVersion(NamedTuple):
    key: bytes
    version: Version
    tombstone: bool
    expires_at_ms: int = 0

    @classmethod
    def of(cls, record: Record) -> EntryVersion:
        return cls(record.key, record.version, record.value is None, record.expires_at_ms)


@dataclass(frozen=True, slots=True)
class EntriesAnswer:
    entries: Sequence[EntryVersion]

    @classmethod
    def of(cls, records: Iterable[Record | None]) -> EntriesAnswer:
        entry = EntryVersion  # one per record of the differing leaves: no method call each
        return cls(
            [
                entry(r.key, r.version, r.value is None, r.expires_at_ms)
                for r in records
                if r is not None
            ]
        )


WalkRequest = TreeRequest | ChunksRequest | EntriesRequest


# ----- the asking side: the walk --------------------------------------------------------------


class TreeWalk:
    """One exchange's descent from the shared roots to the differing entries.

    The shell sends `request` (after `pause` seconds), hands the answer to
    `on_tree`, `on_chunks` or `on_entries`, and stops when `request` is None.
    """

    def __init__(
        self, requester: str, index: MerkleIndex, shared: Sequence[int], fanout: int = FANOUT
    ) -> None:
        self.requester = requester
        self.index = index
        self.shared = shared
        self.fanout = fanout
        self.tree = index.range_tree(shared, fanout)
        self.request: WalkRequest | None = None
        self.pause = 0.0
        self.skipped = ""  # why the exchange ended unfinished
        self.tree_nodes = 0  # Tree hashes compared
        self.partitions: list[int] = []  # that differed
        self.leaves: list[Leaf] = []  # that differed
        self.entries: Sequence[EntryVersion] = ()  # the peer's, not yet checked
        self._digest = shared_digest(shared)
        self._building_since: float | None = None
        if shared:
            self.request = self._tree_request(0, [0])

    def _tree_request(self, level: int, indexes: list[int]) -> TreeRequest:
        return TreeRequest(
            self.requester, self._digest, level, indexes, self.fanout, self.index.chunks
        )

    def _end(self, skipped: str = "") -> None:
        self.request = None
        self.skipped = skipped

    def on_tree(self, answer: TreeAnswer, now: float) -> None:
        request = self.request
        assert isinstance(request, TreeRequest)
        self.pause = 0.0
        if answer.building:
            if self._building_since is None:
                self._building_since = now
            if now - self._building_since < INDEX_BUILD_WAIT:
                self.pause = BUILDING_RETRY  # the same request, a little later
            else:
                self._end("the peer is still building its Merkle index")
            return
        if not answer.same_ring:
            self._end("ring views or CHUNK_COUNT differ (membership may be converging)")
            return
        self.tree_nodes += len(request.indexes)
        mine = self.tree.levels[request.level]
        # A hash the peer left out counts as equal: the walk descends only on evidence.
        differing = [
            i
            for i, theirs in zip(request.indexes, answer.hashes, strict=False)
            if mine[i] != theirs
        ]
        if not differing:
            self._end()
            return
        level = request.level + 1
        if level < self.tree.depth:
            fanout, width = self.fanout, len(self.tree.levels[level])
            children = [
                child
                for parent in differing
                for child in range(parent * fanout, min((parent + 1) * fanout, width))
            ]
            self.request = self._tree_request(level, children)
        else:
            self.partitions = [self.shared[i] for i in differing]
            self.request = ChunksRequest(self.partitions)

    def on_chunks(self, answer: ChunksAnswer) -> None:
        assert isinstance(self.request, ChunksRequest)
        chunks = self.index.chunks
        for position, partition in enumerate(self.partitions):
            theirs = answer.hashes[position * chunks : (position + 1) * chunks]
            ours = self.index.leaf_hashes(partition)
            self.leaves.extend(
                (partition, chunk)
                for chunk in range(chunks)
                if chunk >= len(theirs) or ours[chunk] != theirs[chunk]
            )
        if self.leaves:
            self.request = EntriesRequest(self.leaves)
        else:
            self._end()

    def on_entries(self, answer: EntriesAnswer) -> None:
        assert isinstance(self.request, EntriesRequest)
        self.entries = answer.entries
        self._end()

    def my_keys(self) -> list[bytes]:
        """The keys this side holds in the differing leaves, leaf by leaf, sorted within each."""
        return keys_in_leaves(self.index, self.leaves)


# ----- the serving side -----------------------------------------------------------------------


def answer_tree(
    request: TreeRequest, shared: Sequence[int], chunks: int, index: MerkleIndex | None
) -> TreeAnswer:
    """The Tree answer over the partitions shared with the requester (`index` None: not built)."""
    if shared_digest(shared) != request.shared_digest or request.chunks != chunks:
        return TreeAnswer(same_ring=False)
    if not 2 <= request.fanout <= MAX_FANOUT:
        raise InvalidRequestError(f"Merkle fan-out {request.fanout} is not within 2..{MAX_FANOUT}")
    if index is None:
        return TreeAnswer(same_ring=True, building=True)
    tree = index.range_tree(shared, request.fanout)
    if request.level >= tree.depth:
        return TreeAnswer(same_ring=False)
    nodes = tree.levels[request.level]
    if len(request.indexes) > len(nodes):
        raise InvalidRequestError(
            f"Tree asks for {len(request.indexes)} nodes; level {request.level} has {len(nodes)}"
        )
    return TreeAnswer(same_ring=True, hashes=[nodes[i] for i in request.indexes if i < len(nodes)])


def answer_chunks(request: ChunksRequest, index: MerkleIndex) -> ChunksAnswer:
    if len(request.partitions) > index.partitions:
        raise InvalidRequestError(
            f"Chunks asks for {len(request.partitions)} partitions; the ring has {index.partitions}"
        )
    hashes: list[bytes] = []
    for partition in request.partitions:
        if partition < index.partitions:
            hashes.extend(index.leaf_hashes(partition))
    return ChunksAnswer(hashes)


def entries_keys(request: EntriesRequest, index: MerkleIndex) -> list[bytes]:
    """The keys whose entries answer an Entries request; the shell reads their records."""
    leaves = index.partitions * index.chunks
    if len(request.leaves) > leaves:
        raise InvalidRequestError(
            f"{len(request.leaves)} leaves asked for; this node's index has {leaves}",
            Reason.BATCH,
        )
    return keys_in_leaves(index, request.leaves)


def keys_in_leaves(index: MerkleIndex, leaves: Iterable[Leaf]) -> list[bytes]:
    keys: list[bytes] = []
    for partition, chunk in leaves:
        if partition < index.partitions and chunk < index.chunks:
            keys.extend(sorted(index.keys_in(partition, chunk)))
    return keys


# ----- what the peer sent ---------------------------------------------------------------------


def check_entries(
    entries: Iterable[EntryVersion], limits: Limits, now_ms: int
) -> tuple[dict[bytes, EntryVersion], list[InvalidRequestError]]:
    """The entries that pass the checks, by key; and why each other one failed."""
    valid: dict[bytes, EntryVersion] = {}
    refused: list[InvalidRequestError] = []
    for entry in entries:
        try:
            limits.check_key(entry.key)
            limits.check_version(entry.version, now_ms, "entry.version")
            if not 0 <= entry.expires_at_ms <= MAX_EXPIRES_AT_MS:
                raise InvalidRequestError(
                    f"entry.expires_at_ms is out of range (0 to {MAX_EXPIRES_AT_MS})",
                    Reason.EXPIRY,
                )
        except InvalidRequestError as error:
            refused.append(error)
            continue
        valid[entry.key] = entry
    return valid, refused


# ----- the pull/push rule ---------------------------------------------------------------------


def long_dead(
    version: Version, tombstone: bool, expires_at_ms: int, now_ms: int, grace_ms: int
) -> bool:
    """Whether a record has been dead (deleted, or expired) for longer than the grace period."""
    if tombstone:
        return version.wall_ms < now_ms - grace_ms
    return bool(expires_at_ms) and expires_at_ms < now_ms - grace_ms


@dataclass(frozen=True, slots=True)
class Transfers:
    pull: list[bytes]  # keys to read from the peer and apply here, in the peer's order
    push: list[Record]  # our records to apply on the peer, in our order


def transfers(
    mine: Iterable[Record | None],
    theirs: Mapping[bytes, EntryVersion],
    now_ms: int,
    grace_ms: int,
) -> Transfers:
    """Given our records and the peer's (checked) entries of the differing leaves: what moves.

    `mine` may hold None for keys read but not there (any more).
    """
    ours = {record.key: record for record in mine if record is not None}
    pull = []
    for key, (_, version, tombstone, expires_at_ms) in theirs.items():
        held = ours.get(key)
        if held is None:
            if not long_dead(version, tombstone, expires_at_ms, now_ms, grace_ms):
                pull.append(key)
        elif (version, not tombstone) > (held.version, held.value is not None):
            pull.append(key)
    push = []
    for key, record in ours.items():
        entry = theirs.get(key)
        if entry is None:
            dead = long_dead(
                record.version, record.value is None, record.expires_at_ms, now_ms, grace_ms
            )
            if not dead:
                push.append(record)
        elif (record.version, record.value is not None) > (entry.version, not entry.tombstone):
            push.append(record)
    return Transfers(pull, push)
