"""The durable store on real files: visibility, group commit, recovery, locking, failure.

Faults are injected by replacing one method of the open store's log or data
directory (a `Gate` holds a worker-thread call, or makes it fail); crashes
are byte copies of a live DATA_DIR. Everything else is real I/O in tmp_path.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from a3redis.core.record import Record
from a3redis.storage import codec
from a3redis.storage.files import log_name, snapshot_name
from a3redis.storage.store import (
    GATHER_DELAY,
    GATHER_MIN_RECORDS,
    GATHER_MIN_WRITERS,
    LOG_WRITE_AHEAD,
    DataDirError,
    FsyncPolicy,
    Store,
    StoreClosedError,
    StoreFailedError,
)
from tests.storage.support import (
    Gate,
    append_bytes,
    copy_data_dir,
    data_files,
    dir_size,
    file_bytes,
    file_salt,
    frames,
    log_files,
    log_frames,
    open_fds_under,
    snapshot_files,
    sync_in_a_thread,
    write_then_sync_gate,
)
from tests.support.busy import always_runnable
from tests.support.records import rec
from tests.support.waiting import wait_for_in_trio

STORE_LOGGER = "a3redis.storage"


def contents(store: Store, keys: list[bytes]) -> dict[bytes, Record | None]:
    return {key: store.get(key) for key in keys}


def frames_size(path: Path) -> int:
    """The bytes of a log's header and frames (not the zeros written ahead of them)."""
    return len(log_frames(path))


def eio() -> OSError:
    return OSError(errno.EIO, "Input/output error")


async def entered(gate: Gate) -> None:
    """Wait (in a worker thread) until the gated call has started."""
    assert await trio.to_thread.run_sync(gate.entered.wait, 10), "the gated call never started"


async def release_later(gate: Gate, seconds: float = 0.1) -> None:
    await trio.sleep(seconds)
    gate.release.set()


def leaf_exceptions(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaf_exceptions(inner)]
    return [error]


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# ----- reads and writes --------------------------------------------------------------------


async def test_put_get_scan_and_tombstones(tmp_path: Path) -> None:
    async with Store.open(tmp_path) as store:
        assert store.get(b"a") is None
        assert await store.apply(rec(b"a", b"1", 1))
        assert await store.apply(rec(b"b", b"", 2))  # an empty value is a value
        assert await store.apply(rec(b"c", b"3", 3))
        assert await store.apply(rec(b"ab", b"4", 4))
        assert store.get(b"a") == rec(b"a", b"1", 1)
        assert store.get(b"b") == rec(b"b", b"", 2)
        assert [r.key for r in store.scan()] == [b"a", b"ab", b"b", b"c"]
        assert [r.key for r in store.scan(prefix=b"a")] == [b"a", b"ab"]
        assert [r.key for r in store.scan(start=b"ab", end=b"c")] == [b"ab", b"b"]
        assert [r.key for r in store.scan(limit=2)] == [b"a", b"ab"]

        assert await store.apply(rec(b"a", None, 5))
        assert store.get(b"a") == rec(b"a", None, 5)  # the tombstone is readable...
        assert [r.key for r in store.scan()] == [b"ab", b"b", b"c"]  # ...but not scanned
        assert store.stats().live_keys == 3
        assert await store.apply(rec(b"a", b"again", 6))  # a newer write revives the key
        assert store.get(b"a") == rec(b"a", b"again", 6)
        stats = store.stats()
        assert (stats.keys, stats.live_keys) == (4, 4)
        assert store.max_version == rec(b"a", b"again", 6).version


async def test_stale_or_tied_write_is_rejected_and_changes_nothing(tmp_path: Path) -> None:
    async with Store.open(tmp_path) as store:
        current = rec(b"k", b"v", 10, 5)
        assert await store.apply(current)
        before = store.stats()
        log_size = frames_size(log_files(tmp_path)[0])
        losers = [
            current,  # the very same record again
            rec(b"k", b"other", 10, 4),  # older logical counter
            rec(b"k", b"other", 9, 99),  # older wall clock
            rec(b"k", b"zzzz", 10, 5, node="a"),  # same time, smaller node id
            rec(b"k", None, 10, 5),  # same version: a tombstone loses to a value
        ]
        for loser in losers:
            assert await store.apply(loser) is False, loser
            assert store.get(b"k") == current
        assert await store.apply_many(losers) == [False] * len(losers)
        after = store.stats()
        assert (after.commits, after.fsyncs, after.log_bytes) == (
            before.commits,
            before.fsyncs,
            before.log_bytes,
        )
        assert frames_size(log_files(tmp_path)[0]) == log_size

        tombstone = rec(b"k", None, 11)
        assert await store.apply(tombstone)
        # A tombstone stays, so an older write cannot resurrect the key.
        assert await store.apply(rec(b"k", b"late", 10, 6)) is False
        assert store.get(b"k") == tombstone
    async with Store.open(tmp_path) as store:
        assert store.get(b"k") == tombstone
        assert await store.apply(rec(b"k", b"late", 10, 6)) is False


async def test_apply_many_reports_each_record_and_commits_once(tmp_path: Path) -> None:
    async with Store.open(tmp_path) as store:
        assert await store.apply(rec(b"x", b"old", 5))
        commits = store.stats().commits
        result = await store.apply_many(
            [
                rec(b"x", b"stale", 4),
                rec(b"y", b"1", 6),
                rec(b"y", b"2", 7),  # supersedes the record just before it
                rec(b"y", b"0", 6, 1),  # loses to the record just before it
                rec(b"z", None, 8),
            ]
        )
        assert result == [False, True, True, False, True]
        assert store.stats().commits == commits + 1
        assert store.get(b"x") == rec(b"x", b"old", 5)
        assert store.get(b"y") == rec(b"y", b"2", 7)
        assert store.get(b"z") == rec(b"z", None, 8)
    async with Store.open(tmp_path) as store:
        assert store.get(b"y") == rec(b"y", b"2", 7)
        assert store.get(b"z") == rec(b"z", None, 8)


async def test_records_given_with_their_payloads_are_logged_as_those_bytes(
    tmp_path: Path,
) -> None:
    """A Stream page's payloads go to the log as they came: the store does not encode
    its records again (the caller's payloads are those records' encodings, which a
    record that loses, like the stale one here, never reaches)."""
    records = [rec(b"x", b"1", 5), rec(b"y", None, 6), rec(b"x", b"stale", 4)]
    payloads = [codec.encode_payload(record) for record in records]
    # Told apart only to show which of the two is written: "X" where "1" was.
    payloads[0] = codec.encode_payload(rec(b"x", b"X", 5))
    async with Store.open(tmp_path) as store:
        assert await store.apply_many(records, None, payloads) == [True, True, False]
        assert store.get(b"x") == records[0]  # the table holds the record given
    async with Store.open(tmp_path) as store:
        assert store.get(b"x") == rec(b"x", b"X", 5)  # the log holds the payload given
        assert store.get(b"y") == records[1]


async def test_apply_many_queues_nothing_when_a_record_cannot_be_encoded(tmp_path: Path) -> None:
    async with Store.open(tmp_path) as store:
        good = rec(b"good", b"1", 1)
        unencodable = rec(b"bad", b"1", 2**64)  # wall_ms does not fit its u64 field
        with pytest.raises(Exception):  # noqa: B017 - any error, as long as nothing is stored
            await store.apply_many([good, unencodable])
        # A later, unrelated write must not carry the half-applied call along with it.
        assert await store.apply(rec(b"other", b"2", 3))
        assert store.get(b"good") is None
        assert await store.apply(rec(b"good", b"newer", 0)) is True  # nothing pending either
    async with Store.open(tmp_path) as store:
        assert store.get(b"good") == rec(b"good", b"newer", 0)
        assert store.get(b"other") == rec(b"other", b"2", 3)


async def test_a_record_beyond_the_void_bound_is_replaced_by_any_write_durably(
    tmp_path: Path,
) -> None:
    poisoned = rec(b"k", b"from-the-far-future", 2**64 - 1, 2**32 - 1, node="node-9")
    async with Store.open(tmp_path) as store:
        assert await store.apply_many([poisoned, rec(b"ok", b"1", 5_000)])
        # Without a bound, last-write-wins keeps the poisoned record, as before.
        assert await store.apply(rec(b"k", b"now", 1_000)) is False
        commits = store.stats().commits
        result = await store.apply_many(
            [rec(b"k", b"now", 1_000), rec(b"ok", b"stale", 4_000)], void_above_wall_ms=10_000
        )
        assert result == [True, False]
        assert store.stats().commits == commits + 1  # the purge shares the write's commit
        assert store.get(b"k") == rec(b"k", b"now", 1_000)
        # A record within the bound is a version as always: an older write loses to it.
        assert await store.apply_many([rec(b"k", b"older", 999)], void_above_wall_ms=10_000) == [
            False
        ]
        assert await store.apply_many([rec(b"ok", b"stale", 4_000)], 5_000) == [False]
    async with Store.open(tmp_path) as store:
        assert store.get(b"k") == rec(b"k", b"now", 1_000)
        assert store.get(b"ok") == rec(b"ok", b"1", 5_000)
        assert store.max_version == rec(b"ok", b"1", 5_000).version


async def test_last_write_wins_below_and_above_every_version_held(tmp_path: Path) -> None:
    # A record above every version held or queued replaces its key's record unseen;
    # one below is compared with what its key holds, whatever the batch.
    async with Store.open(tmp_path) as store:
        assert await store.apply_many([rec(b"a", b"1", 10), rec(b"b", b"1", 20)]) == [True, True]
        assert await store.apply_many(
            [rec(b"c", b"old", 5), rec(b"a", b"older", 9), rec(b"a", b"new", 30)]
        ) == [True, False, True]
        assert await store.apply_many(
            [rec(b"d", b"new", 40), rec(b"d", b"older", 35), rec(b"b", b"1", 20)]
        ) == [True, False, False]
        assert await store.apply(rec(b"b", b"2", 20, node="a")) is False  # lower node id
        assert await store.apply(rec(b"b", b"2", 20, node="z")) is True  # higher node id
    async with Store.open(tmp_path) as store:
        assert [store.get(key) for key in (b"a", b"b", b"c", b"d")] == [
            rec(b"a", b"new", 30),
            rec(b"b", b"2", 20, node="z"),
            rec(b"c", b"old", 5),
            rec(b"d", b"new", 40),
        ]


async def test_reads_never_see_an_unacknowledged_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Store.open(tmp_path) as store:
        sync_in_a_thread(store)
        old = rec(b"k", b"old", 1)
        assert await store.apply(old)
        new, brand_new = rec(b"k", b"new", 2), rec(b"fresh", b"x", 3)
        done: list[list[bool]] = []

        async def write() -> None:
            done.append(await store.apply_many([new, brand_new]))

        log_path = log_files(tmp_path)[0]
        synced = log_frames(log_path)
        async with trio.open_nursery() as nursery:
            with write_then_sync_gate(store._log) as gate:
                monkeypatch.setattr(store._log, "write_and_sync", gate)
                nursery.start_soon(write)
                await entered(gate)
                # The bytes are in the log file, but not synced: nobody may see them.
                batch = frames([new, brand_new], file_salt(log_path), len(synced))
                assert log_frames(log_path) == synced + batch
                assert store.get(b"k") == old
                assert store.get(b"fresh") is None
                assert store.scan() == [old]
                assert store.max_version == old.version
                assert store.stats().keys == 1
                # A concurrent write is judged against the pending one, not the table...
                assert await store.apply(rec(b"k", b"between", 1, 5)) is False
                assert not done
                gate.release.set()
        assert done == [[True, True]]
        assert store.get(b"k") == new
        assert store.get(b"fresh") == brand_new


async def test_concurrent_writes_share_one_fsync_per_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Store.open(tmp_path) as store:
        sync_in_a_thread(store)
        real = store._log.write_and_sync
        batches: list[int] = []

        def slow_write_and_sync(data: bytes) -> None:
            batches.append(len(data))
            real(data)
            time.sleep(0.02)  # a slow disk: the next batch gathers meanwhile

        monkeypatch.setattr(store._log, "write_and_sync", slow_write_and_sync)
        writes = 300
        results: list[bool] = []

        async def writer(i: int) -> None:
            results.append(await store.apply(rec(b"key-%d" % i, b"v%d" % i, 100 + i)))

        async with trio.open_nursery() as nursery:
            for i in range(writes):
                nursery.start_soon(writer, i)
        stats = store.stats()
        assert results == [True] * writes
        assert len(batches) == stats.fsyncs == stats.commits
        assert stats.fsyncs <= writes // 20, stats
        assert sum(batches) == stats.log_bytes
        assert codec.HEADER_SIZE + stats.log_bytes == frames_size(log_files(tmp_path)[0])
        for i in range(writes):
            assert store.get(b"key-%d" % i) == rec(b"key-%d" % i, b"v%d" % i, 100 + i)


async def test_a_batch_gathers_only_after_a_shared_commit_and_only_while_work_remains(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # On the autojump clock virtual time moves only when every task sleeps, so
    # the elapsed time tells whether the committer waited for anything.
    async with Store.open(tmp_path) as store:
        sync_in_a_thread(store)
        started = trio.current_time()
        for i in range(3):  # one writer at a time: never a wait
            assert await store.apply(rec(b"lone-%d" % i, b"v", 100 + i))
        many = [rec(b"batch-%d" % i, b"v", 200) for i in range(2 * GATHER_MIN_RECORDS)]
        for _ in range(2):  # nor for one writer of many records (a BatchPut at a time)
            assert all(await store.apply_many(many))
            many = [rec(r.key, b"w", 300) for r in many]
        assert trio.current_time() == started
        assert store.stats().commits == 5

        async def busy_then_write(key: bytes) -> None:
            for _ in range(50):  # runnable all along, like a request still being decoded
                await trio.lowlevel.checkpoint()
            await store.apply(rec(key, b"v", 2000))

        async def asleep_then_write(key: bytes) -> None:
            await trio.sleep(GATHER_DELAY / 2)  # nothing to run meanwhile
            await store.apply(rec(key, b"v", 3000))

        async def round_of_writers(
            round_number: int, straggler: Callable[..., Any] | None = None
        ) -> None:
            async with trio.open_nursery() as nursery:
                for i in range(GATHER_MIN_RECORDS):
                    key = b"r%d-%d" % (round_number, i)
                    nursery.start_soon(store.apply, rec(key, b"v", 1000 + i))
                if straggler is not None:
                    nursery.start_soon(straggler, b"straggler-%d" % round_number)

        # The previous commit served one writer: no gathering, so the busy
        # writer comes too late for this batch and is committed on its own.
        commits = store.stats().commits
        await round_of_writers(0, busy_then_write)
        assert store.stats().commits == commits + 2
        assert GATHER_MIN_RECORDS >= GATHER_MIN_WRITERS
        # After a commit that served enough writers and records, the next
        # batch waits while other work remains, and the busy writer joins it.
        await round_of_writers(1)
        commits = store.stats().commits
        await round_of_writers(2, busy_then_write)
        assert store.stats().commits == commits + 1
        assert trio.current_time() == started  # and nobody slept
        # But a batch does not wait for a writer that is not running yet:
        # with nothing else to do, it is committed at once.
        await round_of_writers(3)
        commits = store.stats().commits
        await round_of_writers(4, asleep_then_write)
        assert store.stats().commits == commits + 2
        assert trio.current_time() - started == pytest.approx(GATHER_DELAY / 2)
        for round_number in (0, 2, 4):
            assert store.get(b"straggler-%d" % round_number) is not None
        for round_number in range(5):
            for i in range(GATHER_MIN_RECORDS):
                assert store.get(b"r%d-%d" % (round_number, i)) is not None


async def test_a_gathering_batch_waits_no_longer_than_gather_delay_on_a_busy_node(
    tmp_path: Path,
) -> None:
    async with Store.open(tmp_path) as store:
        async with trio.open_nursery() as nursery:  # a shared commit: the next batch gathers
            for i in range(GATHER_MIN_RECORDS):
                nursery.start_soon(store.apply, rec(b"first-%d" % i, b"v", 100 + i))
        # The write is committed while the node still has work: the batch
        # stops gathering after GATHER_DELAY instead of waiting for idleness.
        async with always_runnable():
            assert await store.apply(rec(b"during", b"v", 500))
        assert store.get(b"during") is not None


# ----- restart and recovery ----------------------------------------------------------------


async def test_reopen_after_clean_close_keeps_everything(tmp_path: Path) -> None:
    written = [rec(b"k%d" % (i % 7), b"v%d" % i if i % 5 else None, i + 1) for i in range(40)]
    async with Store.open(tmp_path) as store:
        for record in written:
            assert await store.apply(record)
        expected = contents(store, [b"k%d" % i for i in range(7)])
        expected_scan = store.scan()
    assert open_fds_under(tmp_path) == []  # the log and the lock are closed
    for _ in range(2):
        async with Store.open(tmp_path) as store:
            assert contents(store, list(expected)) == expected
            assert store.scan() == expected_scan
            assert store.max_version == written[-1].version
            assert store.stats().torn_bytes_cut == 0


async def test_crash_copy_keeps_every_acknowledged_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live, crashed = tmp_path / "live", tmp_path / "crashed"
    acked = [rec(b"k%d" % i, b"v" * i, i + 1) for i in range(20)]
    unacked = rec(b"k0", b"in flight", 1000)
    async with Store.open(live) as store:
        sync_in_a_thread(store)
        for record in acked:
            assert await store.apply(record)
        async with trio.open_nursery() as nursery:
            with write_then_sync_gate(store._log) as gate:
                monkeypatch.setattr(store._log, "write_and_sync", gate)
                nursery.start_soon(store.apply, unacked)
                await entered(gate)
                copy_data_dir(live, crashed)  # the process "dies" here, mid-commit
                gate.release.set()
    async with Store.open(crashed) as store:
        for record in acked[1:]:
            assert store.get(record.key) == record
        # The write in flight may or may not survive; nothing else may appear.
        assert store.get(b"k0") in (acked[0], unacked)
        assert len(store.scan()) == len(acked)


@pytest.mark.parametrize(
    "tail",
    [
        "partial-frame",
        "header-only",
        "zeros",
        "garbage-header",
        "value-holding-a-copy-of-the-log",
        "stale-blocks-of-another-log",
    ],
)
async def test_torn_tail_is_cut_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, tail: str
) -> None:
    acked = [rec(b"a", b"1", 1), rec(b"b", b"2", 2), rec(b"a", None, 3)]
    async with Store.open(tmp_path) as store:
        for record in acked:
            assert await store.apply(record)
    log_path = log_files(tmp_path)[0]
    good_size = frames_size(log_path)
    salt = file_salt(log_path)
    frame = codec.encode(rec(b"c", b"torn write", 4), salt, good_size)
    # Its value holds every frame of the log (each valid where it was, not in here).
    backup = codec.encode(rec(b"c", log_path.read_bytes() * 2, 4), salt, good_size)
    # A deleted log with the same first records: its later frames sit at the very
    # offsets where this log's next frames would, checksummed with its own salt.
    stale = file_bytes([*acked, *(rec(b"s%d" % i, b"stale", 9) for i in range(20))], salt=salt ^ 1)
    appended = {
        "partial-frame": frame[:-1],
        "header-only": frame[:8],
        "zeros": bytes(300),
        "garbage-header": b"\xff" * 11,
        "value-holding-a-copy-of-the-log": backup[:-3],
        "stale-blocks-of-another-log": frame[:5] + stale[good_size + 5 :],
    }[tail]
    append_bytes(log_path, appended)
    # Zeros at the very end are space written ahead (files.AppendLog), not a write.
    torn = len(appended.rstrip(b"\0"))
    with caplog.at_level(logging.INFO, logger=STORE_LOGGER):
        async with Store.open(tmp_path) as store:
            assert store.stats().torn_bytes_cut == torn
            assert frames_size(log_path) == good_size
            assert store.get(b"a") == acked[2]
            assert store.get(b"b") == acked[1]
            assert store.get(b"c") is None
            # Later appends land right after the last whole frame, not after the junk.
            assert await store.apply(rec(b"d", b"after", 5))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    # Which file, where, and why, for an operator who suspects a damaged final record.
    detail = f"{log_path}: cutting {len(appended)} bytes at offset {good_size}: "
    if torn:
        assert any(f"torn log tail of {torn} bytes" in m for m in warnings)
        assert [m for m in warnings if m.startswith(detail)], warnings
    else:
        assert not warnings
        assert [m for m in caplog.messages if m.startswith(detail)], caplog.messages
    async with Store.open(tmp_path) as store:
        assert store.stats().torn_bytes_cut == 0
        assert store.get(b"d") == rec(b"d", b"after", 5)
        assert store.get(b"a") == acked[2]


@pytest.mark.parametrize("fsync", [FsyncPolicy.ALWAYS, FsyncPolicy.EVERYSEC, FsyncPolicy.NO])
async def test_only_a_log_synced_at_every_commit_writes_zeros_ahead(
    tmp_path: Path, fsync: FsyncPolicy
) -> None:
    """With FSYNC=always, commits overwrite zeros written ahead (cheaper syncs);
    other policies may leave several batches unsynced, so they append."""
    async with Store.open(tmp_path, fsync=fsync) as store:
        for wall in range(1, 4):
            assert await store.apply(rec(b"k%d" % wall, b"v", wall))
        log_path = log_files(tmp_path)[0]
        frames_end = len(log_frames(log_path))
        ahead = log_path.stat().st_size - frames_end
        if fsync is FsyncPolicy.ALWAYS:
            # Written with the header, then overwritten by the three commits.
            assert ahead == LOG_WRITE_AHEAD - (frames_end - codec.HEADER_SIZE)
        else:
            assert ahead == 0
    # Closing cuts the zeros: the file ends with its last frame.
    assert log_path.stat().st_size == frames_end
    async with Store.open(tmp_path, fsync=fsync) as store:
        assert store.stats().torn_bytes_cut == 0
        assert [store.get(b"k%d" % wall) for wall in range(1, 4)] == [
            rec(b"k%d" % wall, b"v", wall) for wall in range(1, 4)
        ]


async def test_corrupt_middle_record_stops_the_open(tmp_path: Path) -> None:
    written = [rec(b"a", b"1", 1), rec(b"b", b"2", 2), rec(b"c", b"3", 3)]
    async with Store.open(tmp_path) as store:
        for record in written:
            assert await store.apply(record)
    log_path = log_files(tmp_path)[0]
    original = log_path.read_bytes()
    offset = codec.HEADER_SIZE + len(codec.encode(written[0]))
    damaged = bytearray(original)
    damaged[offset + 12] ^= 0x40  # inside the second frame's payload
    log_path.write_bytes(bytes(damaged))
    with pytest.raises(DataDirError) as caught:
        async with Store.open(tmp_path):
            pytest.fail("a corrupt log must not open")
    message = str(caught.value)
    assert log_name(1) in message
    assert f"offset {offset}" in message
    # Nothing was cut: the operator still has every byte to repair from.
    assert log_path.read_bytes() == bytes(damaged)
    # And the lock was released: once repaired, the directory opens.
    log_path.write_bytes(original)
    async with Store.open(tmp_path) as store:
        assert [store.get(r.key) for r in written] == written


@pytest.mark.parametrize("torn", [b"", b"A3RE", bytes(codec.HEADER_SIZE - 1)])
async def test_a_log_cut_short_while_being_created_is_empty_and_gets_a_header(
    tmp_path: Path, torn: bytes
) -> None:
    """A crash right after a new log was created (log 2 here, after a log switch)."""
    first = [rec(b"a", b"1", 1), rec(b"b", b"2", 2)]
    (tmp_path / log_name(1)).write_bytes(file_bytes(first))
    (tmp_path / log_name(2)).write_bytes(torn)
    async with Store.open(tmp_path) as store:
        assert store.stats().torn_bytes_cut == len(torn.rstrip(b"\0"))
        assert store.stats().generation == 2
        assert [store.get(r.key) for r in first] == first
        assert await store.apply(rec(b"c", b"3", 3))
    data = (tmp_path / log_name(2)).read_bytes()
    assert codec.decode_file(data, codec.FileKind.LOG).records == [rec(b"c", b"3", 3)]
    async with Store.open(tmp_path) as store:
        assert store.stats().torn_bytes_cut == 0
        assert store.get(b"c") == rec(b"c", b"3", 3)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("garbled", "header checksum mismatch"),
        ("newer-version", "file format version 4, but this a3redis reads versions 1, 2, 3"),
        ("snapshot-kind", "a snapshot file where a log file belongs"),
        ("no-header", "written before file format v1"),
    ],
)
async def test_a_log_with_a_bad_header_and_data_after_it_stops_the_open(
    tmp_path: Path, header: str, reason: str
) -> None:
    async with Store.open(tmp_path) as store:
        assert await store.apply(rec(b"a", b"1", 1))
    log_path = log_files(tmp_path)[0]
    data = bytearray(log_path.read_bytes())
    if header == "garbled":
        data[15] ^= 0x01  # in the salt: every frame after it would be misread
    elif header == "newer-version":
        data[8] = 4
    elif header == "snapshot-kind":
        salt = file_salt(log_path)
        data[: codec.HEADER_SIZE] = codec.encode_header(codec.FileKind.SNAPSHOT, salt)
    else:  # the frames of a log written before format v1 had no header before them
        data = data[codec.HEADER_SIZE :]
    log_path.write_bytes(bytes(data))
    with pytest.raises(DataDirError) as caught:
        async with Store.open(tmp_path):
            pytest.fail("a log with a bad header must not open")
    message = str(caught.value)
    assert message.startswith(f"{log_path}: bad file header: ")
    assert reason in message
    assert log_path.read_bytes() == bytes(data)  # nothing was cut or rewritten


async def test_a_corrupt_record_before_a_long_torn_looking_tail_stops_the_open(
    tmp_path: Path,
) -> None:
    """Damage is told from a torn tail by any valid frame after it, however far."""
    async with Store.open(tmp_path) as store:
        assert await store.apply(rec(b"a", b"1", 1))
        assert await store.apply(rec(b"b", b"x" * (1 << 20), 2))
        assert await store.apply(rec(b"c", b"3", 3))
    log_path = log_files(tmp_path)[0]
    damaged = bytearray(log_path.read_bytes())
    offset = codec.HEADER_SIZE + len(codec.encode(rec(b"a", b"1", 1)))
    damaged[offset + 100] ^= 0x01
    log_path.write_bytes(bytes(damaged))
    with pytest.raises(DataDirError) as caught:
        async with Store.open(tmp_path):
            pytest.fail("a corrupt log must not open")
    assert f"{log_path}: corrupt record at byte offset {offset}" in str(caught.value)
    assert log_path.read_bytes() == bytes(damaged)


@pytest.mark.parametrize(
    "damage",
    ["truncated", "flipped-last", "flipped-first", "flipped-header", "header-only-torn", "empty"],
)
async def test_damaged_snapshot_stops_the_open(tmp_path: Path, damage: str) -> None:
    snapshot = [rec(b"a", b"1", 1), rec(b"b", b"2", 2), rec(b"c", b"3", 3)]
    data = bytearray(file_bytes(snapshot, codec.FileKind.SNAPSHOT))
    if damage == "truncated":
        data = data[:-4]
    elif damage == "flipped-last":
        data[-1] ^= 1
    elif damage == "flipped-first":
        data[codec.HEADER_SIZE + 10] ^= 1
    elif damage == "flipped-header":
        data[14] ^= 1
    elif damage == "header-only-torn":
        data = data[: codec.HEADER_SIZE - 1]
    else:
        data = bytearray()
    (tmp_path / snapshot_name(2)).write_bytes(bytes(data))
    (tmp_path / log_name(2)).write_bytes(b"")
    # A snapshot is renamed into place only after its fsync: it is never torn,
    # so even a bad final record must not be silently dropped.
    with pytest.raises(DataDirError, match=snapshot_name(2)):
        async with Store.open(tmp_path):
            pytest.fail("a damaged snapshot must not open")
    assert (tmp_path / snapshot_name(2)).read_bytes() == bytes(data)


@pytest.mark.parametrize(
    "keys", [[b"a", b"b", b"b"], [b"b", b"a"]], ids=["duplicate-key", "out-of-order"]
)
async def test_snapshot_that_is_no_table_dump_stops_the_open(
    tmp_path: Path, keys: list[bytes]
) -> None:
    snapshot = [rec(key, b"v%d" % i, i + 1) for i, key in enumerate(keys)]
    (tmp_path / snapshot_name(2)).write_bytes(file_bytes(snapshot, codec.FileKind.SNAPSHOT))
    with pytest.raises(DataDirError, match=snapshot_name(2)):
        async with Store.open(tmp_path):
            pytest.fail("a snapshot with keys out of order must not open")


# ----- locking -----------------------------------------------------------------------------

OPEN_SCRIPT = """
import sys, trio
from pathlib import Path
from a3redis.storage.store import DataDirError, Store

async def main():
    try:
        async with Store.open(Path(sys.argv[1])) as store:
            record = store.get(b"k")
            print("OPENED", None if record is None else record.value, flush=True)
            if len(sys.argv) > 2:
                await trio.sleep(60)
    except DataDirError as error:
        print("LOCKED", error, flush=True)
        sys.exit(3)

trio.run(main)
"""


async def run_opener(path: Path) -> tuple[int, str]:
    with trio.fail_after(30):
        done = await trio.run_process(
            [sys.executable, "-c", OPEN_SCRIPT, str(path)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return done.returncode, done.stdout.decode() + done.stderr.decode()


async def test_an_unusable_lock_file_is_a_data_dir_error(tmp_path: Path) -> None:
    (tmp_path / "LOCK").mkdir()  # open(O_RDWR) fails (EISDIR), even for root
    with pytest.raises(DataDirError) as caught:
        async with Store.open(tmp_path):
            pytest.fail("opened without a lock")
    assert f"cannot open the lock file {tmp_path / 'LOCK'}: Is a directory" in str(caught.value)


async def test_second_open_in_the_same_process_fails_at_once(tmp_path: Path) -> None:
    async with Store.open(tmp_path) as store:
        assert await store.apply(rec(b"k", b"v", 1))
        with trio.fail_after(2), pytest.raises(DataDirError) as caught:
            async with Store.open(tmp_path):
                pytest.fail("opened a locked DATA_DIR")
        assert str(tmp_path) in str(caught.value)
        assert f"pid {os.getpid()}" in str(caught.value)
        # The failed opener must not have disturbed the owner.
        assert await store.apply(rec(b"k", b"w", 2))
        assert store.get(b"k") == rec(b"k", b"w", 2)
    async with Store.open(tmp_path) as store:
        assert store.get(b"k") == rec(b"k", b"w", 2)


async def test_lock_holds_across_processes(tmp_path: Path) -> None:
    async with Store.open(tmp_path) as store:
        assert await store.apply(rec(b"k", b"v", 1))
        code, output = await run_opener(tmp_path)
        assert code == 3, output
        assert "LOCKED" in output
        assert f"pid {os.getpid()}" in output
    code, output = await run_opener(tmp_path)
    assert code == 0, output
    assert "OPENED b'v'" in output


async def test_a_killed_process_leaves_no_stale_lock(tmp_path: Path) -> None:
    holder = await trio.lowlevel.open_process(
        [sys.executable, "-c", OPEN_SCRIPT, str(tmp_path), "hold"], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        seen = b""
        with trio.fail_after(30):
            while b"OPENED" not in seen:
                chunk = await holder.stdout.receive_some()
                assert chunk, "the holder exited early"
                seen += chunk
        with pytest.raises(DataDirError, match=f"pid {holder.pid}"):
            async with Store.open(tmp_path):
                pytest.fail("opened a DATA_DIR held by another process")
    finally:
        holder.kill()  # SIGKILL: no cleanup code runs in the holder
        with trio.fail_after(10):
            await holder.wait()
        if holder.stdout is not None:
            await holder.stdout.aclose()
    async with Store.open(tmp_path) as store:
        assert store.get(b"k") is None


# ----- compaction --------------------------------------------------------------------------


def compacted(path: Path, generation: int) -> bool:
    return data_files(path) == [log_name(generation), snapshot_name(generation)]


async def test_compaction_replaces_old_logs_with_a_snapshot(tmp_path: Path) -> None:
    keys = [b"key-%d" % i for i in range(10)]
    written_bytes = 0
    async with Store.open(tmp_path, compact_min_bytes=2048) as store:
        for round_ in range(40):
            for i, key in enumerate(keys):
                value = None if (round_ + i) % 9 == 0 else b"%d-%d" % (round_, i) * 8
                record = rec(key, value, round_ * 100 + i + 1)
                written_bytes += len(codec.encode(record))
                assert await store.apply(record)
        expected = contents(store, keys)
        await wait_for_in_trio(lambda: compacted(tmp_path, store.stats().generation))
        stats = store.stats()
        assert stats.compactions >= 2
        assert stats.generation > 1
        assert contents(store, keys) == expected
    assert dir_size(tmp_path) < written_bytes // 4
    for _ in range(2):
        async with Store.open(tmp_path, compact_min_bytes=2048) as store:
            assert contents(store, keys) == expected
            assert store.stats().generation == stats.generation


async def test_crash_between_log_switch_and_snapshot_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live, crashed = tmp_path / "live", tmp_path / "crashed"
    async with Store.open(live, compact_min_bytes=1) as store:
        with Gate(store._dir.write_snapshot) as gate:
            monkeypatch.setattr(store._dir, "write_snapshot", gate)
            # Three versions of one key: the log outgrows twice the live bytes.
            for wall in (1, 2, 3):
                assert await store.apply(rec(b"k", b"v%d" % wall, wall))
            await entered(gate)  # new log open, snapshot not yet written
            assert await store.apply(rec(b"j", b"in new log", 4))
            copy_data_dir(live, crashed)
            gate.release.set()
    # Leave a half-written snapshot behind, as a crash during its write would.
    (crashed / "snapshot-0000000002.tmp").write_bytes(
        file_bytes([rec(b"k", b"v3", 3)], codec.FileKind.SNAPSHOT)[:-2]
    )
    assert data_files(crashed) == [log_name(1), log_name(2), "snapshot-0000000002.tmp"]
    for attempt in range(3):
        async with Store.open(crashed, compact_min_bytes=1 << 20) as store:
            assert store.get(b"k") == rec(b"k", b"v3", 3), attempt
            assert store.get(b"j") == rec(b"j", b"in new log", 4), attempt
            assert not [n for n in data_files(crashed) if n.endswith(".tmp")]
            if attempt == 0:
                assert await store.apply(rec(b"later", b"x", 5))
            assert store.get(b"later") == rec(b"later", b"x", 5)


@pytest.mark.parametrize("base", [0, 2], ids=["no-snapshot", "older-snapshot"])
async def test_recovery_keeps_logs_newer_than_the_snapshot(tmp_path: Path, base: int) -> None:
    """Crash after `log-<G>` was started but before `snapshot-<G>` existed."""
    if base:
        snapshot = file_bytes([rec(b"s", b"snap", 1)], codec.FileKind.SNAPSHOT)
        (tmp_path / snapshot_name(base)).write_bytes(snapshot)
    first_log = base or 1
    (tmp_path / log_name(first_log)).write_bytes(
        file_bytes([rec(b"a", b"1", 1), rec(b"b", b"2", 2)])
    )
    (tmp_path / log_name(first_log + 1)).write_bytes(file_bytes([rec(b"a", b"3", 3)]))
    (tmp_path / snapshot_name(first_log + 1).replace(".snap", ".tmp")).write_bytes(b"\x01" * 30)
    expected = {b"a": rec(b"a", b"3", 3), b"b": rec(b"b", b"2", 2)}
    if base:
        expected[b"s"] = rec(b"s", b"snap", 1)
    for _ in range(3):
        async with Store.open(tmp_path) as store:
            assert contents(store, list(expected)) == expected
            assert store.stats().generation == first_log + 1
        assert not [n for n in data_files(tmp_path) if n.endswith(".tmp")]


async def test_recovery_ignores_and_removes_files_older_than_the_newest_snapshot(
    tmp_path: Path,
) -> None:
    async with Store.open(tmp_path, compact_min_bytes=1) as store:
        for wall in (1, 2, 3):
            assert await store.apply(rec(b"k", b"v%d" % wall, wall))
        await wait_for_in_trio(lambda: compacted(tmp_path, store.stats().generation))
        generation = store.stats().generation
    assert generation >= 2
    # Leftovers a crash during remove_before could leave: if recovery read them,
    # the newer record would appear, or the garbage snapshot would stop the open.
    (tmp_path / log_name(generation - 1)).write_bytes(file_bytes([rec(b"k", b"resurrected", 99)]))
    (tmp_path / snapshot_name(generation - 1)).write_bytes(b"not a snapshot at all" * 3)
    async with Store.open(tmp_path) as store:
        assert store.get(b"k") == rec(b"k", b"v3", 3)
        assert compacted(tmp_path, generation)


# ----- fsync policies ----------------------------------------------------------------------


async def test_fsync_no_acknowledges_without_fsync(tmp_path: Path) -> None:
    live, copy = tmp_path / "live", tmp_path / "copy"
    async with Store.open(live, fsync=FsyncPolicy.NO) as store:
        for i in range(20):
            assert await store.apply(rec(b"k%d" % i, b"v", i + 1))
            assert store.get(b"k%d" % i) == rec(b"k%d" % i, b"v", i + 1)
        stats = store.stats()
        assert (stats.commits, stats.fsyncs) == (20, 0)
        copy_data_dir(live, copy)  # a process crash (not a power cut) loses nothing
    for path in (live, copy):
        async with Store.open(path) as store:
            assert len(store.scan()) == 20


async def test_fsync_everysec_syncs_in_the_background(tmp_path: Path) -> None:
    async with Store.open(tmp_path, fsync=FsyncPolicy.EVERYSEC) as store:
        for i in range(20):
            assert await store.apply(rec(b"k%d" % i, b"v", i + 1))
        stats = store.stats()
        assert stats.commits == 20
        assert stats.fsyncs < 5  # not one per write
        await wait_for_in_trio(lambda: store.stats().fsyncs >= 1, timeout=3)
        assert await store.apply(rec(b"late", b"v", 100))
    async with Store.open(tmp_path) as store:
        assert len(store.scan()) == 21


# ----- failures ----------------------------------------------------------------------------


async def test_a_failed_write_fails_this_and_every_later_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = rec(b"a", b"1", 1)
    async with Store.open(tmp_path) as store:
        sync_in_a_thread(store)
        assert await store.apply(first)
        real = store._log.write_and_sync

        def disk_full(data: bytes) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(store._log, "write_and_sync", disk_full)
        with pytest.raises(StoreFailedError, match="No space left"):
            await store.apply(rec(b"b", b"2", 2))
        assert store.get(b"b") is None
        # The fault is gone, but the store still refuses: it must restart to recover.
        monkeypatch.setattr(store._log, "write_and_sync", real)
        with pytest.raises(StoreFailedError):
            await store.apply(rec(b"c", b"3", 3))
        with pytest.raises(StoreFailedError):
            await store.apply_many([rec(b"a", b"stale", 0)])
        assert store.get(b"c") is None
        assert store.get(b"a") == first
        assert store.scan() == [first]
        log_size = frames_size(log_files(tmp_path)[0])
    assert frames_size(log_files(tmp_path)[0]) == log_size
    async with Store.open(tmp_path) as store:
        assert store.scan() == [first]
        assert await store.apply(rec(b"c", b"3", 3))


async def test_a_failed_sync_fails_every_waiting_writer_and_shows_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes: dict[int, object] = {}
    async with Store.open(tmp_path) as store:
        sync_in_a_thread(store)

        async def writer(i: int) -> None:
            try:
                outcomes[i] = await store.apply(rec(b"k%d" % i, b"v", i + 1))
            except StoreFailedError as error:
                outcomes[i] = error

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                # The bytes reach the file, then fdatasync fails.
                with write_then_sync_gate(store._log, fail=eio()) as gate:
                    monkeypatch.setattr(store._log, "write_and_sync", gate)
                    nursery.start_soon(writer, 0)
                    await entered(gate)
                    for i in range(1, 10):  # queued behind the failing batch
                        nursery.start_soon(writer, i)
                    await trio.testing.wait_all_tasks_blocked()
                    gate.release.set()
        assert sorted(outcomes) == list(range(10))
        assert all(isinstance(outcome, StoreFailedError) for outcome in outcomes.values())
        assert store.scan() == []
        assert store.max_version is None
        assert store.stats().commits == 0


async def test_a_failed_background_fsync_refuses_writes_queued_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FSYNC=everysec: once a sync failed, nothing more is written or shown."""
    outcome: list[object] = []
    async with Store.open(tmp_path, fsync=FsyncPolicy.EVERYSEC, compact_min_bytes=1) as store:

        async def queued_writer() -> None:
            try:
                outcome.append(await store.apply(rec(b"queued", b"x", 10)))
            except StoreFailedError as error:
                outcome.append(error)

        def broken_sync() -> None:
            raise eio()

        monkeypatch.setattr(store._log, "sync", broken_sync)
        # Hold the commit loop inside a compaction so a batch can queue up behind it.
        with Gate(store._dir.open_log) as switch:
            monkeypatch.setattr(store._dir, "open_log", switch)
            for wall in (1, 2, 3):
                assert await store.apply(rec(b"k", b"v%d" % wall, wall))
            await entered(switch)
            log_size = frames_size(log_files(tmp_path)[0])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(queued_writer)
                await wait_for_in_trio(lambda: bool(outcome), timeout=5)  # the failed sync fails it
            switch.release.set()
        assert isinstance(outcome[0], StoreFailedError)
        await trio.sleep(0.3)  # the commit loop is free again: let it run on, if it would
        assert store.get(b"queued") is None
        assert frames_size(log_files(tmp_path)[0]) == log_size
        with pytest.raises(StoreFailedError):
            await store.apply(rec(b"after", b"y", 11))
    async with Store.open(tmp_path) as store:
        assert store.get(b"queued") is None
        assert store.get(b"k") == rec(b"k", b"v3", 3)


async def test_a_failed_sync_of_the_old_log_during_compaction_fails_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FSYNC=everysec: acknowledged writes in the old log may be lost; take no more."""
    async with Store.open(tmp_path, fsync=FsyncPolicy.EVERYSEC, compact_min_bytes=1) as store:

        def broken_sync() -> None:
            raise eio()

        monkeypatch.setattr(store._log, "sync", broken_sync)
        for wall in (1, 2, 3):  # the third write starts a compaction, away from this log
            assert await store.apply(rec(b"k", b"v%d" % wall, wall))

        async def refused(wall: int) -> bool:
            try:
                await store.apply(rec(b"probe", b"x", wall))
            except StoreFailedError:
                return True
            return False

        with trio.fail_after(5):
            wall = 100
            while not await refused(wall):
                wall += 1
                await trio.sleep(0.05)
        assert not snapshot_files(tmp_path)
    async with Store.open(tmp_path) as store:
        assert store.get(b"k") == rec(b"k", b"v3", 3)


@pytest.mark.timeout(30)  # without the fix this hangs in a shielded wait, out of trio's reach
async def test_an_unexpected_committer_error_releases_its_writers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def buggy(data: bytes) -> None:
        raise RuntimeError("a bug in the committer")

    with pytest.raises(BaseException) as caught:
        async with Store.open(tmp_path) as store:
            sync_in_a_thread(store)
            monkeypatch.setattr(store._log, "write_and_sync", buggy)
            await store.apply(rec(b"k", b"v", 1))
    leaves = leaf_exceptions(caught.value)
    assert any(isinstance(e, RuntimeError) for e in leaves), leaves
    assert any(isinstance(e, StoreFailedError) for e in leaves), leaves
    with pytest.raises((StoreClosedError, StoreFailedError)):
        await store.apply(rec(b"later", b"v", 2))
    assert open_fds_under(tmp_path) == []
    async with Store.open(tmp_path) as store:
        assert store.get(b"k") is None


# ----- closing -----------------------------------------------------------------------------


async def test_closing_commits_pending_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes: dict[int, object] = {}

    async def writer(store: Store, i: int) -> None:
        try:
            outcomes[i] = await store.apply(rec(b"k%d" % i, b"v%d" % i, i + 1))
        except (StoreClosedError, StoreFailedError) as error:
            outcomes[i] = error

    with trio.fail_after(10):
        async with trio.open_nursery() as outer:
            async with Store.open(tmp_path) as store:
                sync_in_a_thread(store)
                with write_then_sync_gate(store._log) as gate:
                    monkeypatch.setattr(store._log, "write_and_sync", gate)
                    outer.start_soon(writer, store, 0)
                    await entered(gate)  # batch 1 in flight
                    for i in range(1, 8):
                        outer.start_soon(writer, store, i)  # batch 2 pending
                    await trio.testing.wait_all_tasks_blocked()
                    assert not outcomes
                    # Still closed as the store starts closing: the close must wait.
                    outer.start_soon(release_later, gate)
            # Writes started after the close are refused, not lost or left hanging.
            outer.start_soon(writer, store, 99)
    assert isinstance(outcomes.pop(99), StoreClosedError)
    assert outcomes == dict.fromkeys(range(8), True)
    assert open_fds_under(tmp_path) == []
    async with Store.open(tmp_path) as store:
        for i in range(8):
            assert store.get(b"k%d" % i) == rec(b"k%d" % i, b"v%d" % i, i + 1)


async def test_closing_while_the_pending_write_fails_releases_every_waiter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes: dict[int, object] = {}
    with trio.fail_after(10):
        async with trio.open_nursery() as outer, Store.open(tmp_path) as store:
            sync_in_a_thread(store)

            async def writer(i: int) -> None:
                try:
                    outcomes[i] = await store.apply(rec(b"k%d" % i, b"v", i + 1))
                except StoreFailedError as error:
                    outcomes[i] = error

            with Gate(store._log.write_and_sync, fail=eio()) as gate:
                monkeypatch.setattr(store._log, "write_and_sync", gate)
                for i in range(5):
                    outer.start_soon(writer, i)
                await entered(gate)
                await trio.testing.wait_all_tasks_blocked()
                outer.start_soon(release_later, gate)
    assert sorted(outcomes) == list(range(5))
    assert all(isinstance(outcome, StoreFailedError) for outcome in outcomes.values())
    async with Store.open(tmp_path) as store:
        assert store.scan() == []


async def test_closing_during_a_compaction_leaves_nothing_open_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(10), caplog.at_level(logging.ERROR, logger=STORE_LOGGER):
        async with trio.open_nursery() as outer, Store.open(tmp_path, compact_min_bytes=1) as store:
            with Gate(store._dir.open_log) as switch:
                monkeypatch.setattr(store._dir, "open_log", switch)
                for wall in (1, 2, 3):
                    assert await store.apply(rec(b"k", b"v%d" % wall, wall))
                await entered(switch)  # the compaction is switching logs
                outer.start_soon(release_later, switch)
    assert open_fds_under(tmp_path) == []
    assert errors_logged(caplog) == []
    expected = rec(b"k", b"v3", 3)
    for wall in (10, 11, 12):
        async with Store.open(tmp_path) as store:
            assert store.get(b"k") == expected
            expected = rec(b"k", b"v%d" % wall, wall)
            assert await store.apply(expected)


async def test_everysec_close_while_a_background_sync_runs_is_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(10), caplog.at_level(logging.ERROR, logger=STORE_LOGGER):
        async with (
            trio.open_nursery() as outer,
            Store.open(tmp_path, fsync=FsyncPolicy.EVERYSEC) as store,
        ):
            with Gate(store._log.sync) as background:
                monkeypatch.setattr(store._log, "sync", background)
                assert await store.apply(rec(b"k", b"v", 1))
                await entered(background)  # the once-a-second sync started
                outer.start_soon(release_later, background)
    assert errors_logged(caplog) == []
    assert open_fds_under(tmp_path) == []
    async with Store.open(tmp_path) as store:
        assert store.get(b"k") == rec(b"k", b"v", 1)
