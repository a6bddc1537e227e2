"""The in-memory record table: one last-write-wins record per key, in key order.

Rules: `apply` stores a record only if it supersedes the current one and says
whether it did; tombstones are records too (they stay until purged, so a late
older write cannot resurrect a deleted key). The table tracks the bytes its
records would take on disk, so the storage shell can decide when to compact,
and the greatest version it has ever held (a high-water mark that removal
does not lower), so a restarted clock can move past it. It keeps the keys of
its tombstones and of its values that carry an expiry: what a purge pass
looks at (core.purge), and the count of keys with a TTL.

A Merkle index for anti-entropy can be attached without stopping writes:
`begin_index` hands out a copy of the records to index (elsewhere, slowly)
and logs every change from then on; `finish_index` replays that log onto the
built index and keeps it up to date with every later change.

Each key's record is held as an entry: a plain tuple of plain values (value,
wall_ms, logical, node_id, expires_at_ms), made into a Record again when it
is read. Python's cyclic collector stops tracking a plain tuple of untracked
values the first time it sees one, but tracks named tuples (Record, Version)
for good: held as Records, a table of a million keys would be two million
objects that every full collection walks (a3redis.runtime.collector keeps the
young collections short). Entries live in a plain dict, their
keys in a sorted list: a copy handed out for work elsewhere (`snapshot`,
`begin_index`) is a copy of both, the cheapest a large table allows the event
loop (a sorted dict's values would be looked up key by key), made into
Records there (`snapshot_records`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sortedcontainers import SortedList

from a3redis.core.hlc import Version
from a3redis.core.merkle import MerkleIndex
from a3redis.core.record import Record, supersedes

# Fixed per-record overhead of the log encoding (format v3: frame header plus fields),
# and what an expiry adds to it.
RECORD_OVERHEAD_BYTES = 31
EXPIRY_BYTES = 8
# What a record costs in a node's memory besides its key's and value's bytes: the two
# bytes objects, its entry, its slots in the dict and the sorted key list, and its
# place in the Merkle index a running node keeps. The figure: benchmarks/README.md,
# "A record's memory (`RECORD_MEMORY_OVERHEAD`)"; a test holds it to the measurement.
RECORD_MEMORY_OVERHEAD = 330


# value, wall_ms, logical, node_id, expires_at_ms
Entry = tuple[bytes | None, int, int, str, int]
# A copy of the table: its keys in order, and their entries.
Snapshot = tuple[list[bytes], dict[bytes, Entry]]

_new_tuple = tuple.__new__  # what a named tuple's own constructor does, without a Python call


def _entry(record: Record) -> Entry:
    version = record.version
    return (record.value, version.wall_ms, version.logical, version.node_id, record.expires_at_ms)


def _record(key: bytes, entry: Entry) -> Record:
    value, wall_ms, logical, node_id, expires_at_ms = entry
    version = _new_tuple(Version, (wall_ms, logical, node_id))
    record: Record = _new_tuple(Record, (key, value, version, expires_at_ms))
    return record


def snapshot_records(snapshot: Snapshot) -> Iterator[Record]:
    """The records of a `snapshot`, in key order (made one by one, wherever this runs)."""
    keys, entries = snapshot
    for key in keys:
        yield _record(key, entries[key])


def encoded_size(record: Record) -> int:
    """The length of `record`'s log frame; node ids count in UTF-8 bytes."""
    return _entry_size(record.key, _entry(record))


def memory_usage(record: Record) -> int:
    """About how many bytes of a node's memory `record` takes (MEMORY USAGE)."""
    value = record.value
    return len(record.key) + (0 if value is None else len(value)) + RECORD_MEMORY_OVERHEAD


def _entry_size(key: bytes, entry: Entry) -> int:
    """The length of the log frame of `key`'s record held as `entry`."""
    value, _, _, node_id, expires_at_ms = entry
    node_len = len(node_id) if node_id.isascii() else len(node_id.encode())
    size = RECORD_OVERHEAD_BYTES + node_len + len(key)
    if value is not None:
        size += len(value)
    return size + EXPIRY_BYTES if expires_at_ms else size


class RecordTable:
    def __init__(self, records: Iterable[Record] = ()) -> None:
        self._entries: dict[bytes, Entry] = {}
        self._keys = SortedList()
        self.live_count = 0
        self.encoded_bytes = 0
        self.max_version: Version | None = None
        # Keys whose current record is a tombstone: with `expiring`'s due keys,
        # what a purge pass looks at.
        self.tombstones: set[bytes] = set()
        # Keys whose current record is a value with an expiry, and that expiry: a
        # purge pass picks the due ones without looking each record up.
        self.expiring: dict[bytes, int] = {}
        self.index: MerkleIndex | None = None
        self._index_log: list[tuple[Record | None, Record | None]] | None = None
        self._index_replayed = 0  # how much of the log `catch_up_index` has replayed
        for record in records:
            self.apply(record)

    @classmethod
    def from_sorted_unique(cls, records: Iterable[Record]) -> RecordTable:
        """Fast bulk load of records already in key order with distinct keys (taken
        one at a time: an iterator that lets go of each saves holding two copies)."""
        table = cls()
        keys: list[bytes] = []
        entries = table._entries
        for record in records:
            keys.append(key := record.key)
            entry = entries[key] = _entry(record)
            table._account(key, entry, +1)
            table._note_version(record.version)
        if len(entries) != len(keys):
            # A repeated key would be counted twice in the byte and live totals.
            raise ValueError("from_sorted_unique given duplicate keys")
        table._keys = SortedList(keys)
        return table

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Record | None:
        entry = self._entries.get(key)
        return None if entry is None else _record(key, entry)

    def entries_of(self, keys: Iterable[bytes]) -> list[Entry | None]:
        """Each key's entry as held (None: no record), for work that needs no Record."""
        return list(map(self._entries.get, keys))

    def apply(self, record: Record) -> bool:
        """Store `record` if it supersedes the key's current one; say whether it did."""
        return self.apply_all((record,)) == 1

    def apply_all(self, records: Iterable[Record]) -> int:
        """Store each record that supersedes its key's current one, in turn (a commit's,
        in the order they were queued); how many were stored.

        One call for a whole commit: it publishes thousands of records at a time
        (a Stream page), and a call of `apply` per record would cost about as
        much as the work itself.
        """
        entries = self._entries
        add_key = self._keys.add
        account = self._account
        max_version = self.max_version
        indexed = self.index is not None or self._index_log is not None
        stored = 0
        try:
            for record in records:
                key, value, version, expires_at_ms = record
                held = entries.get(key)
                if held is None:
                    add_key(key)
                else:
                    # Versions decide unless they tie (then the payloads do): compared
                    # with the held entry's fields, no Record is made for most writes.
                    held_version = (held[1], held[2], held[3])
                    if version == held_version:
                        if not supersedes(record, _record(key, held)):
                            continue
                    elif version < held_version:
                        continue
                    account(key, held, -1)
                entry = entries[key] = (value, version[0], version[1], version[2], expires_at_ms)
                account(key, entry, +1)
                stored += 1
                if max_version is None or version > max_version:
                    max_version = version
                if indexed:
                    self._indexed(None if held is None else _record(key, held), record)
        finally:
            self.max_version = max_version
        return stored

    def remove(self, key: bytes) -> Record | None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self._keys.remove(key)
        self._account(key, entry, -1)
        record = _record(key, entry)
        self._indexed(record, None)
        return record

    def purge(self, record: Record) -> bool:
        """Remove `record` for good, if it is still the key's record; say whether it was.

        Only its exact version goes: a newer write of the key that arrived since stays.
        """
        current = self.get(record.key)
        if current is None or current.version != record.version:
            return False
        self.remove(record.key)
        return True

    def begin_index(self) -> Snapshot:
        """The records to build an index from (`snapshot_records` makes them Records);
        changes are logged until `finish_index`."""
        self._index_log = []
        self._index_replayed = 0  # an earlier build may have been given up part way
        return self.snapshot()

    def catch_up_index(self, index: MerkleIndex, limit: int) -> bool:
        """Replay onto `index` (built from `begin_index`'s records) at most `limit` more
        of the changes logged since; say whether more are logged."""
        log = self._index_log or []
        start = self._index_replayed
        for old, new in log[start : start + limit]:
            index.update(old, new)
        self._index_replayed = min(len(log), start + limit)
        return self._index_replayed < len(log)

    def finish_index(self, index: MerkleIndex) -> None:
        """Attach `index` (built from `begin_index`'s records, perhaps partly caught up
        by `catch_up_index`) and bring it up to date."""
        self.catch_up_index(index, len(self._index_log or ()))
        self._index_log = None
        self._index_replayed = 0
        self.index = index

    def _indexed(self, old: Record | None, new: Record | None) -> None:
        if self.index is not None:
            self.index.update(old, new)
        elif self._index_log is not None:
            self._index_log.append((old, new))

    def greatest_version(self, max_wall_ms: int) -> Version | None:
        """The greatest version held whose wall time is at most `max_wall_ms`.

        What a restarted clock observes: a stored version beyond the clock-skew
        bound (written by an older release, say) must not drag the clock there.
        Usually that is the high-water mark; otherwise every record is looked at.
        """
        if self.max_version is None or self.max_version.wall_ms <= max_wall_ms:
            return self.max_version
        within = (
            Version(wall_ms, logical, node_id)
            for _, wall_ms, logical, node_id, _ in self._entries.values()
            if wall_ms <= max_wall_ms
        )
        return max(within, default=None)

    def records(self) -> list[Record]:
        """All records (tombstones included) in key order, as a list copy."""
        entries = self._entries
        return [_record(key, entries[key]) for key in self._keys]

    def snapshot(self) -> Snapshot:
        """A copy of the table, cheap to take (`snapshot_records` makes it Records)."""
        return list(self._keys), self._entries.copy()

    def scan(
        self,
        start: bytes = b"",
        end: bytes = b"",
        prefix: bytes = b"",
        *,
        include_tombstones: bool = False,
    ) -> Iterator[Record]:
        """Records with start <= key < end (empty end: unbounded) and the prefix."""
        low = max(start, prefix)
        keys = self._keys.irange(minimum=low, maximum=end or None, inclusive=(True, False))
        for key in keys:
            if prefix and not key.startswith(prefix):
                return
            entry = self._entries[key]
            if include_tombstones or entry[0] is not None:
                yield _record(key, entry)

    def _account(self, key: bytes, entry: Entry, sign: int) -> None:
        """Count `key`'s record, held as `entry`, in (sign +1) or out (-1) of the totals."""
        self.encoded_bytes += sign * _entry_size(key, entry)
        if entry[0] is not None:
            self.live_count += sign
            expires_at_ms = entry[4]
            if expires_at_ms:
                if sign > 0:
                    self.expiring[key] = expires_at_ms
                else:
                    self.expiring.pop(key, None)
        elif sign > 0:
            self.tombstones.add(key)
        else:
            self.tombstones.discard(key)

    def _note_version(self, version: Version) -> None:
        if self.max_version is None or version > self.max_version:
            self.max_version = version
