"""The durable record store: a RecordTable in memory, a log on disk.

Rules: a write becomes visible to readers only once it is in the log under
the configured fsync policy, so a read never returns a write that a crash
could take back (FSYNC=always). Concurrent writes share one write+fsync
(group commit): while one batch is synced, the next batch gathers. With
FSYNC=always the loop writes a batch into the page cache and a child process
fdatasyncs it (a3redis.storage.fsync_process), so the loop serves the next
clients meanwhile; a batch is committed as soon as the one before is durable.
Without that child (it could not start, or was lost) a worker thread writes
and syncs, and under concurrent writers a batch waits up to GATHER_DELAY for
company before it is committed. Other file I/O that may block (snapshots,
recovery, FSYNC=everysec's sync) runs in worker threads.
After a failed write or fsync the store refuses all further writes: the page
cache can no longer be trusted (the "fsyncgate" lesson), so the node must
restart and recover.
With FSYNC=always the log writes zeros ahead of its records and overwrites
them (LOG_WRITE_AHEAD; files.AppendLog says why that is safe only when each
batch is synced before the next is written, which is how this store
commits). With other policies several batches may be unsynced at a crash,
so the log appends.
The store supervises its own two tasks (committer, compactor/syncer) in a
nursery that lives exactly as long as `Store.open`; closing commits (or
fails) every queued write and waits for a running compaction, and however
the committer stops, no writer waits forever.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio

from a3redis.core.errors import NodeUnavailableError
from a3redis.core.hlc import Version
from a3redis.core.merkle import MerkleIndex
from a3redis.core.record import Record, supersedes
from a3redis.core.table import RecordTable, Snapshot, snapshot_records
from a3redis.runtime import gathering
from a3redis.runtime.supervision import unwrap_single_group
from a3redis.runtime.turns import in_turns
from a3redis.storage import codec
from a3redis.storage.codec import Purge
from a3redis.storage.files import AppendLog, DataDir, DataDirError, Recovered
from a3redis.storage.fsync_process import FsyncProcess, FsyncProcessLost
from a3redis.storage.policy import FsyncPolicy

log = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["DataDirError", "FsyncPolicy", "Store", "StoreClosedError", "StoreFailedError"]

# Without the fsync process (below), group commit gathers for a moment once writes
# are evidently concurrent: each commit costs the event loop a hand-over to the
# sync thread and back (which waits for the interpreter lock while the loop is
# busy, so commits cannot usefully overlap the serving of the next batch), and the
# disk an fdatasync, so under many clients a batch committed the instant its
# first write arrived carries few writes. A batch gathers only while the
# previous commit served at least GATHER_MIN_WRITERS callers with
# GATHER_MIN_RECORDS records in all (on a cluster, a replica's commits qualify
# too: a local write or two and a peer's Apply batch). It gathers while the
# node has other work to run (requests being decoded may still join it), for
# GATHER_DELAY at most, and no longer once nothing else can run: a fixed wait
# leaves the loop idle whenever every client is already waiting on a commit.
# A lone writer, or one BatchPut at a time, never waits. The figures:
# benchmarks/README.md, "Figures behind choices in the code".
GATHER_DELAY = 0.002
GATHER_MIN_WRITERS = 2
GATHER_MIN_RECORDS = 4

# Zero bytes an FSYNC=always log writes ahead of its records, for syncs that
# overwrite rather than append: benchmarks/README.md, "Figures behind choices
# in the code".
LOG_WRITE_AHEAD = 256 * 1024


def _write_ahead(fsync: FsyncPolicy) -> int:
    """The zeros a log writes ahead under `fsync` (see the module's rules)."""
    return LOG_WRITE_AHEAD if fsync is FsyncPolicy.ALWAYS else 0


# Logged changes replayed onto a freshly built Merkle index per turn of the loop.
INDEX_CATCH_UP_SLICE = 500


class StoreClosedError(NodeUnavailableError):
    """The store is shutting down and takes no more writes."""

    reason = "SHUTTING_DOWN"


class StoreFailedError(NodeUnavailableError):
    """A write or fsync failed; the store takes no more writes until restart."""

    reason = "STORAGE_FAILED"


@dataclass(slots=True)
class _Batch:
    records: list[Record] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)  # framed at commit, at their offset
    callers: int = 0  # _queue calls (writes or purges) served by this batch
    purges: bool = False  # whether any record is a Purge (else all publish in one call)
    done: trio.Event = field(default_factory=trio.Event)
    error: BaseException | None = None
    # Writers waiting in _commit, woken by finish() (see _wait_uncancellable).
    writers: list[trio.lowlevel.Task] = field(default_factory=list)
    # Staged writes' callbacks (see Staged.when_durable), called by finish().
    callbacks: list[Callable[[BaseException | None], None]] = field(default_factory=list)

    def finish(self) -> None:
        self.done.set()
        for task in self.writers:
            trio.lowlevel.reschedule(task)
        self.writers.clear()
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            try:
                callback(self.error)
            except Exception:  # the caller's bug must not stop the committer
                log.exception("a staged write's completion callback failed")


class Staged:
    """Records queued for a group commit without a task waiting for it.

    `accepted` says, per record, whether it superseded what the store held;
    `when_durable(callback)` calls back once the commit is done (None) or
    failed (the StoreFailedError), at once if nothing needed committing. A
    front end that serves many connections from one task uses this instead
    of `apply_many`, which parks the calling task.
    """

    __slots__ = ("_batch", "accepted")

    def __init__(self, accepted: list[bool], batch: _Batch | None) -> None:
        self.accepted = accepted
        self._batch = batch

    def when_durable(self, callback: Callable[[StoreFailedError | None], None]) -> None:
        batch = self._batch
        if batch is None:
            callback(None)
            return

        def done(error: BaseException | None) -> None:
            failure = None if error is None else StoreFailedError(f"write failed: {error}")
            callback(failure)

        if batch.done.is_set():
            done(batch.error)
        else:
            batch.callbacks.append(done)


@dataclass(slots=True)
class StoreStats:
    keys: int
    live_keys: int
    log_bytes: int
    live_bytes: int
    generation: int
    commits: int
    fsyncs: int
    compactions: int
    torn_bytes_cut: int
    # FSYNC=always commits are synced by the child process now (else in the thread).
    syncs_in_process: bool
    fsync_process_lost: int  # children lost (the store then syncs in its thread)


class Store:
    def __init__(
        self,
        data_dir: DataDir,
        table: RecordTable,
        log_file: AppendLog,
        generation: int,
        fsync: FsyncPolicy,
        compact_min_bytes: int,
        torn_bytes_cut: int,
    ) -> None:
        self._dir = data_dir
        self._table = table
        # The greatest version the table holds or a commit has queued (or held once:
        # it never falls). A record above it replaces whatever its key holds, with
        # no lookup (see stage_many).
        self._high_water: Version | None = table.max_version
        self._log = log_file
        self._generation = generation
        self._fsync = fsync
        self._log_write_ahead = _write_ahead(fsync)
        self._compact_min_bytes = compact_min_bytes
        # Record bytes in the current log (not its header), to compare with live records.
        self._log_bytes = log_file.size - codec.HEADER_SIZE
        self._batch = _Batch()
        self._inflight: _Batch | None = None
        self._gather = False  # whether the last commit was shared enough to gather the next
        # Records written to the current or in-flight batch, not yet visible.
        self._unsynced: dict[bytes, Record] = {}
        self._wake = trio.Event()
        self._dirty = False
        self._closing = False
        self._failure: BaseException | None = None
        self._compacting = False
        # Set when the running compaction (if any) has finished or given up.
        self._compaction_done: trio.Event | None = None
        # Held around every sync or close of a log by a task other than the
        # committer, so none of them syncs a file descriptor another has closed.
        self._sync_lock = trio.Lock()
        self._index_lock = trio.Lock()
        self._stats = {"commits": 0, "fsyncs": 0, "compactions": 0, "fsync_process_lost": 0}
        self._torn_bytes_cut = torn_bytes_cut
        self._nursery: trio.Nursery | None = None
        self._syncer = _SyncThread()
        # FSYNC=always syncs in a child process while it runs; None: in the thread.
        self._fsync_process: FsyncProcess | None = None
        # Started the first time writes arrive while a commit is syncing (until then
        # there is nothing for the loop to do meanwhile), and tried only once.
        self._fsync_process_wanted = fsync is FsyncPolicy.ALWAYS

    # ----- opening and closing -------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: Path,
        *,
        fsync: FsyncPolicy = FsyncPolicy.ALWAYS,
        compact_min_bytes: int = 64 * 1024 * 1024,
    ) -> AsyncIterator[Store]:
        """Lock DATA_DIR, recover its contents, and run the store until exit."""
        data_dir = DataDir(path)
        lock = data_dir.prepare()
        store: Store | None = None
        try:
            store = await trio.to_thread.run_sync(
                _without_gc, cls._recover, data_dir, fsync, compact_min_bytes
            )
            with unwrap_single_group():
                async with trio.open_nursery() as nursery:
                    store._nursery = nursery
                    nursery.start_soon(store._commit_loop)
                    if fsync is FsyncPolicy.EVERYSEC:
                        nursery.start_soon(store._sync_every_second)
                    try:
                        yield store
                    finally:
                        try:
                            with trio.CancelScope(shield=True):
                                await store._drain()
                            nursery.cancel_scope.cancel()
                        finally:
                            store._syncer.stop()
        finally:
            if store is not None and store._fsync_process is not None:
                store._fsync_process.close()
            lock.release()

    @classmethod
    def _recover(cls, data_dir: DataDir, fsync: FsyncPolicy, compact_min_bytes: int) -> Store:
        recovered = data_dir.recover()
        table = cls._build_table(recovered)
        data_dir.remove_before(recovered.snapshot_generation)
        write_ahead = _write_ahead(fsync)
        log_file = data_dir.open_log(recovered.generation, write_ahead)
        if log_file.format != codec.FORMAT_VERSION:
            # Never append records of this format to a log of another: a new
            # generation begins (recovery replays both, in order).
            log.info(
                "%s is of format v%d: new writes go to a new log", log_file.path, log_file.format
            )
            log_file.close()
            recovered.generation += 1
            log_file = data_dir.open_log(recovered.generation, write_ahead)
        if recovered.torn_bytes_cut:
            log.warning(
                "cut a torn log tail of %d bytes (an unacknowledged write)",
                recovered.torn_bytes_cut,
            )
        log.info(
            "recovered %d keys from %s (generation %d)",
            len(table),
            data_dir.path,
            recovered.generation,
        )
        return cls(
            data_dir,
            table,
            log_file,
            recovered.generation,
            fsync,
            compact_min_bytes,
            recovered.torn_bytes_cut,
        )

    @staticmethod
    def _build_table(recovered: Recovered) -> RecordTable:
        """The table of the snapshot and the logs after it, built with one sort.

        Recovered records are let go of as the table takes them (it holds entries
        of its own), so recovery never holds two copies of every record, and
        superseded ones go now, not with a later collection.
        """
        records, recovered.records = recovered.records, []
        if recovered.snapshot_count == len(records):
            records.reverse()
            return RecordTable.from_sorted_unique(_popped(records))
        # Folding into a dict by the rules of _publish (RecordTable.apply and
        # .purge) and sorting the keys once replaces a sorted insert per entry.
        latest: dict[bytes, Record] = {}
        get = latest.get
        for entry in records:  # the snapshot first, then the logs in order
            key = entry.key
            current = get(key)
            if isinstance(entry, Purge):
                if current is not None and current.version == entry.version:
                    del latest[key]
            elif current is None or supersedes(entry, current):
                latest[key] = entry
        records.clear()
        return RecordTable.from_sorted_unique(latest.pop(key) for key in sorted(latest))

    async def _drain(self) -> None:
        """Stop taking writes, commit what is pending, sync and close the log."""
        self._closing = True
        for batch in (self._inflight, self._batch):
            if batch is not None and batch.records:
                self._wake.set()
                await batch.done.wait()
        # The last commit may have started a compaction that is switching logs.
        if self._compaction_done is not None:
            await self._compaction_done.wait()
        async with self._sync_lock:
            try:
                if self._failure is None and self._fsync is not FsyncPolicy.ALWAYS and self._dirty:
                    await trio.to_thread.run_sync(self._log.sync)
                    self._dirty = False
            finally:
                self._log.close()

    # ----- reads --------------------------------------------------------------------------

    def get(self, key: bytes) -> Record | None:
        """The durable record for `key`, tombstones included."""
        return self._table.get(key)

    def packed(self, keys: Sequence[bytes], max_wall_ms: int) -> list[bytes | None]:
        """The durable records of `keys` as codec.pack_entries packs them (None: no
        record, or one whose wall time is beyond `max_wall_ms`)."""
        return codec.pack_entries(keys, self._table.entries_of(keys), max_wall_ms)

    def latest(self, key: bytes) -> Record | None:
        """The record a new write of `key` is compared with: queued or durable."""
        return self._unsynced.get(key) or self._table.get(key)

    def scan(
        self,
        start: bytes = b"",
        end: bytes = b"",
        prefix: bytes = b"",
        limit: int = 0,
        *,
        include_tombstones: bool = False,
    ) -> list[Record]:
        """Records in [start, end) with the prefix, at most `limit` (0: all).

        Tombstones are left out unless asked for (a cluster scan needs them to
        let a newer delete on one replica hide an older value on another).
        """
        found: list[Record] = []
        for record in self._table.scan(start, end, prefix, include_tombstones=include_tombstones):
            found.append(record)
            if len(found) == limit:
                break
        return found

    @property
    def max_version(self) -> Version | None:
        return self._table.max_version

    def greatest_version(self, max_wall_ms: int) -> Version | None:
        """The greatest stored version whose wall time is at most `max_wall_ms`."""
        return self._table.greatest_version(max_wall_ms)

    async def merkle_index(self, partitions: int, chunks: int) -> MerkleIndex:
        """The Merkle index of the stored records, built once in a worker thread.

        Writes go on while it is built: the table logs them and replays the
        log onto the built index before handing it out (anti-entropy is its
        only user, so a node pays for it only once repair starts).
        """
        async with self._index_lock:
            if self._table.index is None:
                records = self._table.begin_index()
                built = await trio.to_thread.run_sync(_build_index, records, partitions, chunks)
                # The writes made while it was built are replayed a slice at a time
                # between other tasks' turns; the last slice is replayed as it is attached.
                while self._table.catch_up_index(built, INDEX_CATCH_UP_SLICE):
                    await trio.lowlevel.checkpoint()
                self._table.finish_index(built)
        assert self._table.index is not None
        return self._table.index

    @property
    def built_merkle_index(self) -> MerkleIndex | None:
        """The Merkle index if it has been built (never blocks)."""
        return self._table.index

    def stats(self) -> StoreStats:
        return StoreStats(
            keys=len(self._table),
            live_keys=self._table.live_count,
            log_bytes=self._log_bytes,
            live_bytes=self._table.encoded_bytes,
            generation=self._generation,
            torn_bytes_cut=self._torn_bytes_cut,
            syncs_in_process=self._syncs_in_process(),
            **self._stats,
        )

    # ----- writes -------------------------------------------------------------------------

    async def apply(self, record: Record) -> bool:
        """Store `record` durably if it supersedes the current one; say whether it did."""
        return (await self.apply_many([record]))[0]

    async def apply_many(
        self,
        records: Iterable[Record],
        void_above_wall_ms: int | None = None,
        payloads: Sequence[bytes] | None = None,
    ) -> list[bool]:
        """Apply records atomically with respect to other tasks; one commit for all;
        say which superseded what the store held. Returns once they are durable."""
        staged = self.stage_many(records, void_above_wall_ms, payloads)
        batch = staged._batch
        if batch is not None:
            await _wait_durable(batch)
        return staged.accepted

    def stage_many(
        self,
        records: Iterable[Record],
        void_above_wall_ms: int | None = None,
        payloads: Sequence[bytes] | None = None,
    ) -> Staged:
        """Queue records for the next group commit, atomically (no checkpoint).

        `payloads`, if given, are the records' log payloads, one each, exactly
        as `codec.encode_payload` makes them (a Stream page's, decoded strictly):
        they are logged as they are instead of encoded again.

        A current record whose version's wall time exceeds `void_above_wall_ms`
        (a version no clock within the skew bound could have issued: one an
        older release let in) is no version at all: it is purged and replaced,
        in the same commit, by the record written over it, so such a key stays
        writable. The purge goes to the log first, so recovery agrees.
        """
        self._check_writable()
        accepted: list[bool] = []
        staged: dict[bytes, Record] = {}
        new_records: list[Record] = []
        new_payloads: list[bytes] = []
        voided = False  # whether a void record's purge is queued too
        unsynced = self._unsynced
        table = self._table
        high_water = self._high_water
        for position, record in enumerate(records):
            key = record.key
            version = record.version
            # Above the high-water mark a record supersedes whatever its key holds, and
            # nothing held is void, if the mark itself is within the bound: then its
            # key's record need not be looked up (most writes: each new version is the
            # clock's greatest yet).
            if high_water is not None and not (
                version > high_water
                and (void_above_wall_ms is None or high_water.wall_ms <= void_above_wall_ms)
            ):
                current = staged.get(key) or unsynced.get(key) or table.get(key)
                if (
                    void_above_wall_ms is not None
                    and current is not None
                    and current.version.wall_ms > void_above_wall_ms
                    and not isinstance(current, Purge)
                ):
                    void = Purge(key, None, current.version)
                    new_payloads.append(codec.encode_payload(void))
                    new_records.append(void)
                    voided = True
                    current = None
                if current is not None and not supersedes(record, current):
                    accepted.append(False)
                    continue
            if high_water is None or version > high_water:
                high_water = version
            # Encoding may fail (a field out of range): queue nothing until all encode.
            new_payloads.append(
                codec.encode_payload(record) if payloads is None else payloads[position]
            )
            new_records.append(record)
            staged[key] = record
            accepted.append(True)
        if not new_records:
            return Staged(accepted, None)
        self._high_water = high_water
        return Staged(accepted, self._queue(new_records, new_payloads, staged, voided))

    async def purge(self, records: Iterable[Record]) -> int:
        """Remove records for good, durably; any whose version is no longer current stay.

        Anti-entropy calls this for tombstones every replica is known to hold (see
        core.purge), and handoff for copies their owners now hold; a purge is a log
        entry, so it survives a restart.
        """
        self._check_writable()
        purges: dict[bytes, Purge] = {}
        for record in records:
            current = self.latest(record.key)
            if (
                current is not None
                and not isinstance(current, Purge)
                and current.version == record.version
            ):
                purges[record.key] = Purge(current.key, None, current.version)
        if purges:
            chosen = list(purges.values())
            await _wait_durable(
                self._queue(chosen, [codec.encode_payload(p) for p in chosen], purges, True)
            )
        return len(purges)

    def tombstones(self) -> list[Record]:
        """Every tombstone currently stored."""
        found = (self._table.get(key) for key in self._table.tombstones)
        return [record for record in found if record is not None]

    def dead(self, now_ms: int) -> list[Record]:
        """Every stored tombstone and value expired at `now_ms` (what a purge pass considers)."""
        table = self._table
        due = [key for key, expires in table.expiring.items() if expires <= now_ms]
        found = (table.get(key) for key in (*table.tombstones, *due))
        return [record for record in found if record is not None]

    @property
    def failed(self) -> bool:
        """Whether a write or fsync failed: the store refuses writes until the node restarts."""
        return self._failure is not None

    @property
    def expiring_keys(self) -> int:
        """How many stored values carry an expiry (expired or not)."""
        return len(self._table.expiring)

    def _check_writable(self) -> None:
        if self._failure is not None:
            raise StoreFailedError(f"storage failed earlier: {self._failure}")
        if self._closing:
            raise StoreClosedError("the store is closing; retry on another node")

    def _queue(
        self,
        records: Sequence[Record],
        payloads: list[bytes],
        staged: Mapping[bytes, Record],
        purges: bool,
    ) -> _Batch:
        """Queue records for the next group commit; the batch says when they are durable.

        Waiting for it cannot be cancelled: once queued, the write is committed
        whether or not the caller is still interested, and the caller must not
        report success before that.
        """
        batch = self._batch
        batch.callers += 1
        batch.purges = batch.purges or purges
        self._unsynced.update(staged)
        batch.records.extend(records)
        batch.payloads.extend(payloads)
        self._wake.set()
        return batch

    async def _commit_loop(self) -> None:
        try:
            await self._commit_batches()
        finally:
            # However the committer stops (a failure, a bug, cancellation), take
            # no more writes and release every writer still waiting for it.
            self._closing = True
            for batch in (self._inflight, self._batch):
                if batch is not None and not batch.done.is_set():
                    if batch.error is None:
                        batch.error = self._failure or StoreClosedError(
                            "the store stopped before this write was committed"
                        )
                    batch.finish()
            self._unsynced.clear()

    async def _commit_batches(self) -> None:
        while True:
            await self._wake.wait()
            if self._gather:
                await gathering.while_busy(GATHER_DELAY)
            self._wake = trio.Event()
            if self._failure is not None:
                # A background fsync failed: what is queued must not reach the log.
                return
            batch, self._batch = self._batch, _Batch()
            if not batch.records:
                continue
            self._gather = (
                not self._syncs_in_process()
                and batch.callers >= GATHER_MIN_WRITERS
                and len(batch.records) >= GATHER_MIN_RECORDS
            )
            self._inflight = batch
            log_file = self._log
            data = log_file.frames(batch.payloads)
            try:
                if self._fsync is FsyncPolicy.ALWAYS:
                    await self._write_and_sync(log_file, data)
                    self._stats["fsyncs"] += 1
                else:
                    # A write() into the page cache takes microseconds: no thread hop.
                    log_file.write(data)
                    self._dirty = True
            except OSError as error:
                self._fail(error, batch)
                return
            self._stats["commits"] += 1
            self._log_bytes += len(data)
            self._publish(batch)
            self._inflight = None
            batch.finish()
            if self._fsync_process_wanted and self._batch.records:
                await self.start_fsync_process()
            await self._maybe_compact()

    async def _write_and_sync(self, log_file: AppendLog, data: bytes) -> None:
        """Append `data` to `log_file` and make it durable (FSYNC=always)."""
        fsync_process = self._fsync_process
        if fsync_process is None or not fsync_process.ready:
            await self._syncer.run(log_file.write_and_sync, data)
            return
        # A write() into the page cache takes microseconds: the loop makes it.
        log_file.write(data)
        try:
            await fsync_process.sync(log_file)
        except FsyncProcessLost as lost:
            log.error("the fsync process is lost (%s): syncing in a thread from now on", lost)
            self._stats["fsync_process_lost"] += 1
            fsync_process.close()
            self._fsync_process = None
            await self._syncer.run(log_file.sync)

    async def start_fsync_process(self) -> None:
        """Start the child that syncs FSYNC=always commits, unless tried already. Its
        interpreter then starts on its own; commits use it once it is ready."""
        if not self._fsync_process_wanted:
            return
        self._fsync_process_wanted = False
        fsync_process = FsyncProcess()
        try:
            await trio.to_thread.run_sync(fsync_process.start)
        except FsyncProcessLost as error:
            log.error("no fsync process (%s): commits sync in a thread", error)
            return
        if self._closing:
            fsync_process.close()
        else:
            self._fsync_process = fsync_process

    def _syncs_in_process(self) -> bool:
        return self._fsync_process is not None and self._fsync_process.ready

    def _publish(self, batch: _Batch) -> None:
        table = self._table
        records = batch.records
        if batch.purges:
            for record in records:
                if isinstance(record, Purge):
                    table.purge(record)
                else:
                    table.apply(record)
        else:
            table.apply_all(records)
        unsynced = self._unsynced
        for record in records:
            key = record.key
            if unsynced.get(key) is record:
                del unsynced[key]

    def _fail(self, error: BaseException, batch: _Batch) -> None:
        log.critical("storage write failed, refusing further writes: %s", error)
        self._failure = error
        for failed in (batch, self._batch):
            failed.error = error
            failed.finish()
        self._unsynced.clear()

    async def _sync_every_second(self) -> None:
        while True:
            await trio.sleep(1)
            if not await self._sync_dirty_log():
                return

    async def sync_committed(self) -> None:
        """Make every write committed so far durable now (SAVE), whatever the FSYNC
        policy: with FSYNC=always each one was before it was acknowledged."""
        synced = self._fsync is FsyncPolicy.ALWAYS or await self._sync_dirty_log()
        if not (synced and self._failure is None):
            self._check_writable()  # it failed, or it is closing: say which

    async def _sync_dirty_log(self) -> bool:
        """fsync the log if commits wrote to it since the last sync; False when the store
        takes no more writes (closing, or a sync failed: then it has failed)."""
        async with self._sync_lock:
            if self._closing or self._failure is not None:
                return False
            if not self._dirty:
                return True
            self._dirty = False
            try:
                await trio.to_thread.run_sync(self._log.sync)
                self._stats["fsyncs"] += 1
            except OSError as error:
                self._fail(error, self._batch)
                return False
            return True

    # ----- compaction ---------------------------------------------------------------------

    async def _maybe_compact(self) -> None:
        threshold = max(self._compact_min_bytes, 2 * self._table.encoded_bytes)
        if (
            self._compacting
            or self._closing
            or self._log_bytes <= threshold
            or self._nursery is None
        ):
            return
        self._compacting = True
        done = self._compaction_done = trio.Event()
        # Switch logs between batches (the commit loop waits for us): everything
        # before is in the table, everything after goes to the new log, so
        # snapshot G = the table now = all logs older than G.
        generation = self._generation + 1
        old_log = self._log
        try:
            self._log = await trio.to_thread.run_sync(
                self._dir.open_log, generation, self._log_write_ahead
            )
        except OSError as error:
            log.error("cannot start log generation %d: %s", generation, error)
            self._compacting = False
            done.set()
            return
        self._generation = generation
        self._log_bytes = 0
        self._nursery.start_soon(
            self._write_snapshot, generation, old_log, self._table.snapshot(), done
        )

    async def _write_snapshot(
        self, generation: int, old_log: AppendLog, snapshot: Snapshot, done: trio.Event
    ) -> None:
        try:
            async with self._sync_lock:
                try:
                    await trio.to_thread.run_sync(old_log.sync)
                except OSError as error:
                    # Acknowledged writes in the old log may not be on disk (fsyncgate).
                    self._fail(error, self._batch)
                    return
                finally:
                    old_log.close()
            size = await trio.to_thread.run_sync(
                self._dir.write_snapshot, generation, in_turns(snapshot_records(snapshot))
            )
            await trio.to_thread.run_sync(self._dir.remove_before, generation)
            self._stats["compactions"] += 1
            log.info(
                "compacted into snapshot %d: %d records, %d bytes",
                generation,
                len(snapshot[0]),
                size,
            )
        except OSError as error:
            # The old files stay; recovery still works from them and the new log.
            log.error("compaction to generation %d failed: %s", generation, error)
        finally:
            old_log.close()  # already closed unless cancelled before the sync
            self._compacting = False
            done.set()


class _SyncThread:
    """One long-lived thread for the committer's write + fdatasync.

    Per commit this costs one hand-over each way; `trio.to_thread.run_sync`
    adds a thread-cache lookup, a capacity limiter, a context copy and two
    thread renames (prctl) to every call, a cost paid once per commit
    (benchmarks/README.md has the figures).
    Like `to_thread.run_sync` without `abandon_on_cancel`, a call in progress
    is waited for, not abandoned.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="a3redis-commit", daemon=True)
            self._thread.start()
        answer: list[Any] = []  # [value, error] once the thread is done
        task = trio.lowlevel.current_task()
        self._jobs.put((function, args, answer, trio.lowlevel.current_trio_token(), task))
        await trio.lowlevel.wait_task_rescheduled(_cannot_abort)
        value, error = answer
        if error is not None:
            raise error
        result: T = value
        return result

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            function, args, answer, token, task = job
            try:
                answer += [function(*args), None]
            except BaseException as error:  # handed to the waiting task, raised there
                answer += [None, error]
            token.run_sync_soon(trio.lowlevel.reschedule, task)

    def stop(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None


async def _wait_durable(batch: _Batch) -> None:
    """Wait until `batch` is committed (uncancellably); raise if the commit failed."""
    await _wait_uncancellable(batch)
    if batch.error is not None:
        raise StoreFailedError(f"write failed: {batch.error}") from batch.error


async def _wait_uncancellable(batch: _Batch) -> None:
    """Wait until `batch` is finished, ignoring cancellation meanwhile.

    What `with trio.CancelScope(shield=True): await batch.done.wait()` does (a
    cancellation is delivered at the caller's next checkpoint), without a
    cancel scope per write: entering and leaving a shielded scope is not free,
    and this path runs once per write.
    """
    if batch.done.is_set():
        await trio.lowlevel.checkpoint()
        return
    batch.writers.append(trio.lowlevel.current_task())
    await trio.lowlevel.wait_task_rescheduled(_cannot_abort)


def _cannot_abort(_: object) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


def _build_index(snapshot: Snapshot, partitions: int, chunks: int) -> MerkleIndex:
    index = MerkleIndex(partitions, chunks)
    for record in in_turns(snapshot_records(snapshot)):
        index.update(None, record)
    return index


def _popped(records: list[Record]) -> Iterator[Record]:
    """`records` from last to first, each dropped from the list as it is taken."""
    while records:
        yield records.pop()


def _without_gc(function: Callable[..., T], *args: Any) -> T:
    """Run recovery with the cyclic GC paused, then freeze what it loaded.

    Loading a million records allocates millions of objects and no cycles:
    the collector would scan them again and again for nothing (a large share
    of replay time). Frozen, the loaded table is also left out of every later
    collection while the node serves.
    """
    gc.disable()
    try:
        return function(*args)
    finally:
        gc.freeze()
        gc.enable()
