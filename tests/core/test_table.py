"""The record table against a plain dict model."""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from a3redis.core.hlc import Version
from a3redis.core.merkle import MerkleIndex
from a3redis.core.record import Record, supersedes
from a3redis.core.table import RECORD_OVERHEAD_BYTES, RecordTable, encoded_size, memory_usage
from a3redis.storage import codec
from tests.core.strategies import MACHINE_SETTINGS, keys, records, wide_records

bounds = keys | st.binary(max_size=3)


def expected_scan(
    model: dict[bytes, Record],
    start: bytes,
    end: bytes,
    prefix: bytes,
    include_tombstones: bool,
) -> list[Record]:
    return [
        model[key]
        for key in sorted(model)
        if key >= start
        and (not end or key < end)
        and key.startswith(prefix)
        and (include_tombstones or model[key].value is not None)
    ]


def assert_matches(
    table: RecordTable, model: dict[bytes, Record], high_water: Version | None
) -> None:
    ordered = [model[key] for key in sorted(model)]
    assert table.records() == ordered
    assert len(table) == len(model)
    assert table.live_count == sum(1 for r in model.values() if r.value is not None)
    assert table.tombstones == {key for key, r in model.items() if r.value is None}
    assert table.expiring == {
        key: r.expires_at_ms for key, r in model.items() if r.value is not None and r.expires_at_ms
    }
    assert table.encoded_bytes == sum(encoded_size(r) for r in model.values())
    assert table.encoded_bytes == sum(len(codec.encode(r)) for r in model.values())
    assert table.max_version == high_water
    for key, record in model.items():
        assert table.get(key) == record


@given(wide_records)
def test_encoded_size_is_the_codec_frame_length(record: Record) -> None:
    assert encoded_size(record) == len(codec.encode(record))


@pytest.mark.parametrize("node_id", ["n", "node-1", "nœud-é", "節点", "🦆"], ids=ascii)
@pytest.mark.parametrize("value", [None, b"", b"v" * 300])
def test_encoded_size_counts_node_id_bytes_not_characters(
    node_id: str, value: bytes | None
) -> None:
    record = Record(b"key", value, Version(1, 2, node_id))
    size = len(codec.encode(record))
    assert encoded_size(record) == size
    assert size == RECORD_OVERHEAD_BYTES + len(node_id.encode()) + 3 + len(value or b"")


class TableMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.table = RecordTable()
        self.model: dict[bytes, Record] = {}
        # The table's max_version is a high-water mark: the greatest version it
        # ever stored, which removal does not lower (the clock must stay past it).
        self.high_water: Version | None = None

    def model_apply(self, record: Record) -> bool:
        """Apply `record` to the model as the table should; whether it is stored."""
        if not supersedes(record, self.model.get(record.key)):
            return False
        self.model[record.key] = record
        if self.high_water is None or record.version > self.high_water:
            self.high_water = record.version
        return True

    @rule(record=records)
    def apply(self, record: Record) -> None:
        assert self.table.apply(record) == self.model_apply(record)

    @rule(batch=st.lists(records, max_size=6))
    def apply_all(self, batch: list[Record]) -> None:
        """A commit's records in one call (the same key may come more than once)."""
        stored = sum(self.model_apply(record) for record in batch)
        assert self.table.apply_all(batch) == stored

    @rule(record=records)
    def reapply_current(self, record: Record) -> None:
        """Applying the stored record again (a duplicate delivery) is a no-op."""
        current = self.model.get(record.key)
        if current is not None:
            assert not self.table.apply(current)
            assert not self.table.apply(Record(current.key, current.value, current.version))

    @rule(key=keys)
    def remove(self, key: bytes) -> None:
        assert self.table.remove(key) == self.model.pop(key, None)

    @rule(
        start=bounds,
        end=bounds,
        prefix=st.sampled_from([b"", b"a", b"ab", b"\xff"]) | bounds,
        include_tombstones=st.booleans(),
    )
    def scan(self, start: bytes, end: bytes, prefix: bytes, include_tombstones: bool) -> None:
        got = list(self.table.scan(start, end, prefix, include_tombstones=include_tombstones))
        assert got == expected_scan(self.model, start, end, prefix, include_tombstones)

    @rule(key=keys)
    def get_missing_or_present(self, key: bytes) -> None:
        assert self.table.get(key) == self.model.get(key)

    @invariant()
    def consistent_with_model(self) -> None:
        assert_matches(self.table, self.model, self.high_water)


TestTableMachine = TableMachine.TestCase
TestTableMachine.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None, **MACHINE_SETTINGS
)


@given(
    contents=st.lists(records, max_size=30),
    start=bounds,
    end=bounds,
    prefix=bounds,
    include_tombstones=st.booleans(),
)
def test_scan_matches_a_sorted_filter(
    contents: list[Record], start: bytes, end: bytes, prefix: bytes, include_tombstones: bool
) -> None:
    table = RecordTable()
    model: dict[bytes, Record] = {}
    for record in contents:
        if table.apply(record):
            model[record.key] = record
    got = list(table.scan(start, end, prefix, include_tombstones=include_tombstones))
    assert got == expected_scan(model, start, end, prefix, include_tombstones)


def test_scan_bounds_and_prefix() -> None:
    v = Version(1, 0, "n")
    table = RecordTable(
        Record(key, None if key == b"ab" else key, v)
        for key in [b"a", b"aa", b"ab", b"abc", b"ac", b"b", b"b\x00", b"\xff"]
    )

    def scan(*args: bytes, tombs: bool = False) -> list[bytes]:
        return [r.key for r in table.scan(*args, include_tombstones=tombs)]

    assert scan() == [b"a", b"aa", b"abc", b"ac", b"b", b"b\x00", b"\xff"]
    assert scan(tombs=True)[:3] == [b"a", b"aa", b"ab"]
    assert scan(b"ab", b"b") == [b"abc", b"ac"]
    assert scan(b"", b"", b"ab", tombs=True) == [b"ab", b"abc"]
    assert scan(b"abb", b"", b"ab") == [b"abc"]
    assert scan(b"", b"ab\x00", b"ab", tombs=True) == [b"ab"]
    assert scan(b"c", b"b") == []
    assert scan(b"", b"", b"b") == [b"b", b"b\x00"]


@given(st.lists(records, max_size=40))
def test_from_sorted_unique_equals_applying_one_by_one(contents: list[Record]) -> None:
    applied = RecordTable()
    for record in contents:
        applied.apply(record)
    bulk = RecordTable.from_sorted_unique(applied.records())
    model = {r.key: r for r in applied.records()}
    assert_matches(bulk, model, applied.max_version)
    assert bulk.records() == applied.records()
    assert (len(bulk), bulk.live_count, bulk.encoded_bytes, bulk.max_version) == (
        len(applied),
        applied.live_count,
        applied.encoded_bytes,
        applied.max_version,
    )
    # The bulk-loaded table keeps working like any other.
    for record in contents:
        assert bulk.apply(record) == applied.apply(record)
    assert bulk.records() == applied.records()
    assert bulk.encoded_bytes == applied.encoded_bytes


def test_from_sorted_unique_refuses_duplicate_keys() -> None:
    a1 = Record(b"a", b"1", Version(1, 0, "n"))
    a2 = Record(b"a", b"2", Version(2, 0, "n"))
    with pytest.raises(ValueError, match="duplicate"):
        RecordTable.from_sorted_unique([a1, a2])


@given(
    st.lists(records, max_size=12).flatmap(lambda rs: st.permutations(rs).map(lambda p: (rs, p)))
)
@settings(max_examples=200)
def test_apply_order_does_not_change_the_final_table(
    lists: tuple[list[Record], list[Record]],
) -> None:
    """Replicas that receive the same writes in any order converge."""
    original, permuted = lists
    first, second = RecordTable(original), RecordTable(permuted)
    assert first.records() == second.records()
    assert first.encoded_bytes == second.encoded_bytes
    assert first.live_count == second.live_count
    assert first.max_version == second.max_version


def test_tombstone_blocks_an_older_write_and_counts_as_a_record() -> None:
    table = RecordTable()
    assert table.apply(Record(b"k", b"v1", Version(1, 0, "a")))
    assert table.live_count == 1
    assert table.apply(Record(b"k", None, Version(3, 0, "a")))
    assert (len(table), table.live_count) == (1, 0)
    # A late, older write cannot resurrect the deleted key.
    assert not table.apply(Record(b"k", b"v2", Version(2, 0, "b")))
    assert table.get(b"k") == Record(b"k", None, Version(3, 0, "a"))
    assert list(table.scan()) == []
    assert list(table.scan(include_tombstones=True)) == [Record(b"k", None, Version(3, 0, "a"))]


def test_empty_table() -> None:
    table = RecordTable()
    assert (len(table), table.live_count, table.encoded_bytes, table.max_version) == (0, 0, 0, None)
    assert table.records() == []
    assert table.get(b"") is None
    assert table.remove(b"x") is None
    assert list(table.scan(b"", b"", b"", include_tombstones=True)) == []


def test_records_returns_a_copy() -> None:
    table = RecordTable([Record(b"a", b"1", Version(1, 0, "n"))])
    listed = table.records()
    listed.clear()
    assert len(table.records()) == 1


def test_encoded_bytes_follows_replacement_sizes() -> None:
    table = RecordTable()
    small = Record(b"k", b"v", Version(1, 0, "n"))
    big = Record(b"k", b"v" * 100, Version(2, 0, "n"))
    table.apply(small)
    assert table.encoded_bytes == len(codec.encode(small))
    table.apply(big)
    assert table.encoded_bytes == len(codec.encode(big))
    table.remove(b"k")
    assert table.encoded_bytes == 0
    assert table.max_version == big.version
    assert list(table.scan(include_tombstones=True)) == []


def test_held_records_leave_the_cyclic_collectors_work_once_it_has_seen_them() -> None:
    # A table of many keys must not make every collection walk every record
    # (a3redis.core.table's rules): after one pass, its records are untracked.
    table = RecordTable()
    gc.collect()
    tracked_before = len(gc.get_objects())
    for number in range(20_000):
        table.apply(Record(b"key%05d" % number, b"value", Version(number + 1, 0, "n1")))
    gc.collect()
    assert len(gc.get_objects()) - tracked_before < 1_000
    assert table.get(b"key00007") == Record(b"key00007", b"value", Version(8, 0, "n1"))


@pytest.mark.parametrize("value_bytes", [1, 1000])
def test_memory_usage_is_what_a_record_takes_in_an_indexed_table(value_bytes: int) -> None:
    """MEMORY USAGE's estimate against the memory a table of 100,000 keys with a Merkle
    index (as a running node has) takes for each record, measured: within a quarter.
    (The share of the index's and the dict's fixed parts falls as a table grows.)"""
    count = 100_000
    table = RecordTable()
    table.begin_index()
    table.finish_index(MerkleIndex(256, 64))
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for number in range(count):
            key = b"key:%08d" % number
            table.apply(
                Record(key, bytes(value_bytes), Version(1_700_000_000_000 + number, 0, "n1"))
            )
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    measured = (after - before) / count
    estimate = memory_usage(Record(b"key:00000000", bytes(value_bytes), Version(1, 0, "n1")))
    assert 0.75 * measured <= estimate <= 1.25 * measured, (estimate, measured)
