"""The repair exchange core: the walk finds exactly what differs; newer wins both ways."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a3redis.core.anti_entropy import (
    BUILDING_RETRY,
    INDEX_BUILD_WAIT,
    MAX_FANOUT,
    ChunksRequest,
    EntriesAnswer,
    EntriesRequest,
    EntryVersion,
    TreeAnswer,
    TreeRequest,
    TreeWalk,
    answer_chunks,
    answer_tree,
    check_entries,
    entries_keys,
    shared_digest,
    transfers,
)
from a3redis.core.hlc import Version
from a3redis.core.merkle import MerkleIndex
from a3redis.core.record import Record, supersedes
from a3redis.core.validation import InvalidRequestError, Limits, Reason

PARTITIONS, CHUNKS = 16, 4
NOW_MS = 10_000
GRACE_MS = 1_000
LIMITS = Limits()

versions = st.builds(
    Version,
    wall_ms=st.sampled_from([1, 2, 8_000, 9_500]),  # expired and live tombstones both
    logical=st.integers(0, 1),
    node_id=st.sampled_from(["node-1", "node-2"]),
)


def _record(key: bytes, version: Version, tombstone: bool) -> Record:
    # One payload per version, as in a real cluster: versions are unique per write.
    return Record(key, None if tombstone else str(version).encode(), version)


records = st.builds(_record, st.binary(min_size=1, max_size=3), versions, st.booleans())


class Replica:
    """A dict store with its index kept up to date, as the record table does."""

    def __init__(self, held: list[Record] = []) -> None:  # noqa: B006 (never mutated)
        self.data: dict[bytes, Record] = {}
        self.index = MerkleIndex(PARTITIONS, CHUNKS)
        for record in held:
            self.apply(record)

    def apply(self, record: Record) -> None:
        current = self.data.get(record.key)
        if supersedes(record, current):
            self.data[record.key] = record
            self.index.update(current, record)

    def read(self, keys: list[bytes]) -> list[Record | None]:
        return [self.data.get(key) for key in keys]


def exchange(me: Replica, peer: Replica, shared: list[int], fanout: int) -> TreeWalk:
    """One exchange, the peer answering as repair.py's serving side does; transfers applied."""
    walk = TreeWalk("node-1", me.index, shared, fanout)
    for _ in range(20):
        request = walk.request
        if isinstance(request, TreeRequest):
            walk.on_tree(answer_tree(request, shared, CHUNKS, peer.index), now=0.0)
        elif isinstance(request, ChunksRequest):
            walk.on_chunks(answer_chunks(request, peer.index))
        elif isinstance(request, EntriesRequest):
            keys = entries_keys(request, peer.index)
            walk.on_entries(EntriesAnswer.of(peer.read(keys)))
        else:
            break
    assert walk.request is None and not walk.skipped
    theirs, refused = check_entries(walk.entries, LIMITS, NOW_MS)
    assert refused == []
    moves = transfers(me.read(walk.my_keys()), theirs, NOW_MS, GRACE_MS)
    for record in peer.read(moves.pull):
        assert record is not None
        me.apply(record)
    for record in moves.push:
        peer.apply(record)
    return walk


def true_differing_leaves(a: Replica, b: Replica, shared: list[int]) -> set[tuple[int, int]]:
    def leaves(replica: Replica) -> dict[tuple[int, int], set[Record]]:
        found: dict[tuple[int, int], set[Record]] = {}
        for record in replica.data.values():
            found.setdefault(replica.index.leaf_of(record.key), set()).add(record)
        return found

    ours, theirs = leaves(a), leaves(b)
    return {
        leaf
        for leaf in ours.keys() | theirs.keys()
        if leaf[0] in shared and ours.get(leaf) != theirs.get(leaf)
    }


@settings(max_examples=300)
@given(
    left=st.lists(records, max_size=30),
    right=st.lists(records, max_size=30),
    shared=st.sets(st.integers(0, PARTITIONS - 1)).map(sorted),
    fanout=st.integers(2, 5),
)
def test_the_walk_finds_exactly_the_differing_leaves_and_the_exchange_converges_them(
    left: list[Record], right: list[Record], shared: list[int], fanout: int
) -> None:
    a, b = Replica(left), Replica(right)
    truth = true_differing_leaves(a, b, shared)
    outside = {k: r for k, r in a.data.items() if a.index.leaf_of(k)[0] not in shared}

    walk = exchange(a, b, shared, fanout)

    assert set(walk.leaves) == truth
    assert len(walk.leaves) == len(truth)
    for key in a.data.keys() | b.data.keys():
        if a.index.leaf_of(key)[0] not in shared:
            continue
        newest = None
        for record in left + right:
            if record.key == key and supersedes(record, newest):
                newest = record
        assert newest is not None
        expired = newest.value is None and newest.version.wall_ms < NOW_MS - GRACE_MS
        held = [r.data.get(key) for r in (a, b)]
        if expired and None in held:
            # An expired tombstone is not copied where the key is absent.
            assert set(held) <= {None, newest}
        else:
            assert held == [newest, newest]  # otherwise the newest wins on both sides
    # Nothing outside the shared partitions moved.
    assert {k: r for k, r in a.data.items() if a.index.leaf_of(k)[0] not in shared} == outside
    assert walk.tree_nodes >= (1 if shared else 0)


@settings(max_examples=300)
@given(left=st.lists(records, max_size=20), right=st.lists(records, max_size=20))
def test_the_rule_is_symmetric_and_newer_wins(left: list[Record], right: list[Record]) -> None:
    a, b = Replica(left), Replica(right)
    a_entries = {r.key: EntryVersion.of(r) for r in a.data.values()}
    b_entries = {r.key: EntryVersion.of(r) for r in b.data.values()}
    from_a = transfers(a.data.values(), b_entries, NOW_MS, GRACE_MS)
    from_b = transfers(b.data.values(), a_entries, NOW_MS, GRACE_MS)
    # What a pulls is exactly what b, running the exchange the other way, pushes.
    assert set(from_a.pull) == {r.key for r in from_b.push}
    assert set(from_b.pull) == {r.key for r in from_a.push}
    for key in from_a.pull:
        theirs, mine = b.data[key], a.data.get(key)
        assert mine is None or supersedes(theirs, mine)
    for record in from_a.push:
        assert supersedes(record, b.data.get(record.key))
    # And a key is never both pulled and pushed.
    assert not set(from_a.pull) & {r.key for r in from_a.push}


def test_at_the_same_version_a_value_beats_a_tombstone_both_ways() -> None:
    version = Version(9_900, 0, "node-1")
    value, tombstone = Record(b"k", b"v", version), Record(b"k", None, version)
    moves = transfers([tombstone], {b"k": EntryVersion.of(value)}, NOW_MS, GRACE_MS)
    assert moves.pull == [b"k"] and moves.push == []
    moves = transfers([value], {b"k": EntryVersion.of(tombstone)}, NOW_MS, GRACE_MS)
    assert moves.pull == [] and moves.push == [value]
    moves = transfers([value], {b"k": EntryVersion.of(value)}, NOW_MS, GRACE_MS)
    assert moves.pull == [] and moves.push == []


def test_an_expired_tombstone_replaces_an_older_value_but_is_not_copied_where_absent() -> None:
    old = Record(b"k", b"v", Version(100, 0, "node-1"))
    expired = Record(b"k", None, Version(NOW_MS - GRACE_MS - 1, 0, "node-2"))
    live = Record(b"k", None, Version(NOW_MS - GRACE_MS, 0, "node-2"))
    assert transfers([], {b"k": EntryVersion.of(expired)}, NOW_MS, GRACE_MS).pull == []
    assert transfers([expired], {}, NOW_MS, GRACE_MS).push == []
    assert transfers([old], {b"k": EntryVersion.of(expired)}, NOW_MS, GRACE_MS).pull == [b"k"]
    assert transfers([expired], {b"k": EntryVersion.of(old)}, NOW_MS, GRACE_MS).push == [expired]
    # Within the grace period a tombstone goes everywhere, like any record.
    assert transfers([], {b"k": EntryVersion.of(live)}, NOW_MS, GRACE_MS).pull == [b"k"]
    assert transfers([live], {}, NOW_MS, GRACE_MS).push == [live]


def test_an_entry_that_fails_the_checks_is_left_out_so_our_copy_is_pushed_over_it() -> None:
    ours = Record(b"k", b"v", Version(NOW_MS, 0, "node-1"))
    far_ahead = EntryVersion(b"k", Version(NOW_MS + 10**9, 0, "node-2"), False)
    bad_key = EntryVersion(b"x" * 5000, Version(1, 0, "node-2"), False)
    good = EntryVersion(b"j", Version(1, 0, "node-2"), False)
    valid, refused = check_entries([far_ahead, bad_key, good], LIMITS, NOW_MS)
    assert valid == {b"j": good}
    assert [error.reason for error in refused] == [Reason.CLOCK_SKEW, Reason.KEY]
    moves = transfers([ours], valid, NOW_MS, GRACE_MS)
    assert moves.push == [ours] and moves.pull == [b"j"]


def test_equal_replicas_compare_one_root_and_stop() -> None:
    held = [Record(b"k%d" % n, b"v", Version(5, 0, "node-1")) for n in range(50)]
    a, b = Replica(held), Replica(held)
    walk = exchange(a, b, list(range(PARTITIONS)), 16)
    assert walk.tree_nodes == 1 and walk.leaves == []


def test_a_peer_still_building_its_index_is_asked_again_then_given_up_on() -> None:
    a = Replica([Record(b"k", b"v", Version(5, 0, "node-1"))])
    shared = list(range(PARTITIONS))
    walk = TreeWalk("node-1", a.index, shared)
    first = walk.request
    building = answer_tree(first, shared, CHUNKS, None)  # type: ignore[arg-type]
    assert building == TreeAnswer(same_ring=True, building=True)
    walk.on_tree(building, now=100.0)
    assert walk.request is first and walk.pause == BUILDING_RETRY
    walk.on_tree(building, now=100.0 + INDEX_BUILD_WAIT - 0.1)
    assert walk.request is first
    walk.on_tree(building, now=100.0 + INDEX_BUILD_WAIT)
    assert walk.request is None
    assert walk.skipped == "the peer is still building its Merkle index"


def test_another_view_of_the_ring_or_chunk_count_ends_the_walk_unfinished() -> None:
    a = Replica([Record(b"k", b"v", Version(5, 0, "node-1"))])
    walk = TreeWalk("node-1", a.index, [0, 1, 2])
    request = walk.request
    assert isinstance(request, TreeRequest)
    assert answer_tree(request, [0, 1], CHUNKS, a.index) == TreeAnswer(same_ring=False)
    assert answer_tree(request, [0, 1, 2], CHUNKS * 2, a.index) == TreeAnswer(same_ring=False)
    walk.on_tree(TreeAnswer(same_ring=False), now=0.0)
    assert walk.request is None and walk.skipped.startswith("ring views or CHUNK_COUNT differ")
    assert TreeWalk("node-1", a.index, []).request is None  # nothing shared: nothing to ask


def test_requests_naming_more_than_exists_are_refused_naming_the_bound() -> None:
    index = Replica().index
    shared = list(range(PARTITIONS))
    digest = shared_digest(shared)
    for fanout in (1, MAX_FANOUT + 1):
        with pytest.raises(InvalidRequestError, match=f"fan-out {fanout} is not within"):
            answer_tree(TreeRequest("n", digest, 0, [0], fanout, CHUNKS), shared, CHUNKS, index)
    with pytest.raises(InvalidRequestError, match="asks for 2 nodes; level 0 has 1"):
        answer_tree(TreeRequest("n", digest, 0, [0, 0], 16, CHUNKS), shared, CHUNKS, index)
    # A level below the leaves is another tree: another view of the ring.
    beyond = TreeRequest("n", digest, 5, [0], 16, CHUNKS)
    assert answer_tree(beyond, shared, CHUNKS, index) == TreeAnswer(same_ring=False)
    with pytest.raises(InvalidRequestError, match="17 partitions; the ring has 16"):
        answer_chunks(ChunksRequest(list(range(PARTITIONS + 1))), index)
    with pytest.raises(InvalidRequestError, match="65 leaves asked for") as error:
        entries_keys(EntriesRequest([(0, 0)] * (PARTITIONS * CHUNKS + 1)), index)
    assert error.value.reason is Reason.BATCH
    # Within the bounds, what does not exist is simply absent from the answer.
    assert answer_chunks(ChunksRequest([PARTITIONS + 5]), index).hashes == []
    assert entries_keys(EntriesRequest([(PARTITIONS, 0), (0, CHUNKS)]), index) == []
