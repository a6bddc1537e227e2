"""Merkle anti-entropy core: diff finds exactly what differs; incremental equals rebuilt."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from a3redis.core.hlc import Version
from a3redis.core.merkle import MerkleIndex, RangeTree, diff, diff_trees
from a3redis.core.record import Record, supersedes
from a3redis.core.ring import partition_of

PARTITIONS, CHUNKS = 16, 4

versions = st.builds(
    Version,
    wall_ms=st.integers(0, 5),
    logical=st.integers(0, 2),
    node_id=st.sampled_from(["a", "b"]),
)


def _record(key: bytes, version: Version, tombstone: bool) -> Record:
    # One payload per version, as in a real cluster: versions are unique per write.
    return Record(key, None if tombstone else str(version).encode(), version)


records = st.builds(_record, st.binary(min_size=1, max_size=3), versions, st.booleans())


class Replica:
    """A dict store with its index kept up to date, as the record table does."""

    def __init__(self) -> None:
        self.data: dict[bytes, Record] = {}
        self.index = MerkleIndex(PARTITIONS, CHUNKS)

    def apply(self, record: Record) -> None:
        current = self.data.get(record.key)
        if supersedes(record, current):
            self.data[record.key] = record
            self.index.update(current, record)

    def purge(self, key: bytes) -> None:
        current = self.data.pop(key, None)
        self.index.update(current, None)

    def leaf_entries(self) -> dict[tuple[int, int], set[Record]]:
        leaves: dict[tuple[int, int], set[Record]] = {}
        for record in self.data.values():
            leaves.setdefault(self.index.leaf_of(record.key), set()).add(record)
        return leaves


def rebuilt(replica: Replica) -> MerkleIndex:
    index = MerkleIndex(PARTITIONS, CHUNKS)
    for record in replica.data.values():
        index.update(None, record)
    return index


@settings(max_examples=200)
@given(left=st.lists(records, max_size=30), right=st.lists(records, max_size=30))
def test_diff_returns_exactly_the_leaves_whose_entries_differ(
    left: list[Record], right: list[Record]
) -> None:
    a, b = Replica(), Replica()
    for record in left:
        a.apply(record)
    for record in right:
        b.apply(record)
    found = diff(a.index, b.index, range(PARTITIONS), fanout=2)
    ours, theirs = a.leaf_entries(), b.leaf_entries()
    truth = {leaf for leaf in ours.keys() | theirs.keys() if ours.get(leaf) != theirs.get(leaf)}
    assert set(found) == truth
    assert len(found) == len(set(found))

    # Exchange the differing leaves' entries both ways, newer wins.
    for partition, chunk in found:
        for key in a.index.keys_in(partition, chunk) | b.index.keys_in(partition, chunk):
            for held in (a.data.get(key), b.data.get(key)):
                if held is not None:
                    a.apply(held)
                    b.apply(held)
    assert diff(a.index, b.index, range(PARTITIONS)) == []
    assert (
        a.index.range_tree(range(PARTITIONS), 16).root
        == b.index.range_tree(range(PARTITIONS), 16).root
    )
    for key in a.data.keys() | b.data.keys():
        candidates = [r for r in left + right if r.key == key]
        newest: Record | None = None
        for record in candidates:
            if supersedes(record, newest):
                newest = record
        assert a.data[key] == b.data[key] == newest


operations = st.lists(
    st.one_of(
        st.tuples(st.just("apply"), records),
        st.tuples(st.just("purge"), records),
    ),
    max_size=60,
)


@settings(max_examples=200)
@given(steps=operations)
def test_incremental_maintenance_equals_a_rebuild(steps: list[tuple[str, Record]]) -> None:
    replica = Replica()
    for operation, record in steps:
        if operation == "apply":
            replica.apply(record)
        else:
            replica.purge(record.key)
        # Reading roots in between must not leave stale cached hashes behind.
        replica.index.partition_root(replica.index.leaf_of(record.key)[0])
    fresh = rebuilt(replica)
    for partition in range(PARTITIONS):
        assert replica.index.partition_root(partition) == fresh.partition_root(partition)
        for chunk in range(CHUNKS):
            assert replica.index.keys_in(partition, chunk) == fresh.keys_in(partition, chunk)
    # What handoff walks: the partitions holding keys, and each one's keys.
    by_partition: dict[int, list[bytes]] = {}
    for key in sorted(replica.data):
        by_partition.setdefault(partition_of(key, PARTITIONS), []).append(key)
    assert replica.index.occupied_partitions() == set(by_partition)
    for partition in range(PARTITIONS):
        assert replica.index.partition_keys(partition) == by_partition.get(partition, [])


@given(key=st.binary(max_size=40))
def test_a_keys_leaf_lies_in_the_rings_partition_for_it(key: bytes) -> None:
    index = MerkleIndex(4096, 16)
    assert index.leaf_of(key)[0] == partition_of(key, 4096)


def test_equal_trees_compare_by_root_alone_and_one_change_touches_one_path() -> None:
    leaves = [i.to_bytes(16, "big") for i in range(300)]
    tree = RangeTree(leaves, 16)
    assert tree.depth == 4  # 300 -> 19 -> 2 -> 1
    assert diff_trees(tree, RangeTree(list(leaves), 16)) == []
    changed = list(leaves)
    changed[123] = b"x" * 16
    assert diff_trees(tree, RangeTree(changed, 16)) == [123]


@settings(max_examples=100)
@given(before=st.lists(records, max_size=20), during=operations, after=operations)
def test_an_index_built_while_writes_go_on_matches_the_table(
    before: list[Record],
    during: list[tuple[str, Record]],
    after: list[tuple[str, Record]],
) -> None:
    from a3redis.core.table import RecordTable, snapshot_records

    table = RecordTable(before)
    snapshot = table.begin_index()
    for operation, record in during:  # writes that land while the index is being built
        table.apply(record) if operation == "apply" else table.remove(record.key)
    built = MerkleIndex(PARTITIONS, CHUNKS)
    for record in snapshot_records(snapshot):
        built.update(None, record)
    # Caught up a little at a time while writes go on, as the store does.
    for operation, record in during:
        table.catch_up_index(built, 2)
        table.apply(record) if operation == "apply" else table.remove(record.key)
    table.finish_index(built)
    for operation, record in after:  # and writes after it is attached
        table.apply(record) if operation == "apply" else table.remove(record.key)

    fresh = MerkleIndex(PARTITIONS, CHUNKS)
    for record in table.records():
        fresh.update(None, record)
    assert table.index is built
    for partition in range(PARTITIONS):
        assert built.partition_root(partition) == fresh.partition_root(partition)


def test_an_index_build_given_up_part_way_leaves_the_next_one_exact() -> None:
    from a3redis.core.table import RecordTable, snapshot_records

    def version(wall: int) -> Version:
        return Version(wall, 0, "n1")

    table = RecordTable([Record(b"a", b"1", version(1)), Record(b"b", b"1", version(1))])
    abandoned = MerkleIndex(PARTITIONS, CHUNKS)
    for record in snapshot_records(table.begin_index()):
        abandoned.update(None, record)
    for wall in range(2, 6):
        table.apply(Record(b"a", b"%d" % wall, version(wall)))
    table.catch_up_index(abandoned, 2)  # then the build is cancelled: never attached

    built = MerkleIndex(PARTITIONS, CHUNKS)
    for record in snapshot_records(table.begin_index()):
        built.update(None, record)
    table.apply(Record(b"b", b"2", version(9)))
    table.catch_up_index(built, 1)
    table.finish_index(built)

    fresh = MerkleIndex(PARTITIONS, CHUNKS)
    for record in table.records():
        fresh.update(None, record)
    for partition in range(PARTITIONS):
        assert built.partition_root(partition) == fresh.partition_root(partition)
