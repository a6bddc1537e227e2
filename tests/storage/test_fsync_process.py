"""The fsync process: FSYNC=always commits synced by a child, and every way it can end.

Rules: real children, real files, real signals. What the store promises does
not depend on where it syncs (tests/storage/test_store.py, mostly through
the thread); these tests check the promises on the child's path and that the
child never fails silently, never outlives its parent and never loses a write.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from a3redis.storage import fsync_process as fsync_process_module
from a3redis.storage.files import AppendLog, log_name
from a3redis.storage.fsync_process import FsyncProcess, FsyncProcessLost
from a3redis.storage.store import Store, StoreFailedError
from tests.storage.support import file_salt, frames, log_files, log_frames, syncing_in_a_child
from tests.support.records import rec
from tests.support.waiting import wait_for, wait_for_in_trio


async def ready(fsync_process: FsyncProcess) -> None:
    await wait_for_in_trio(lambda: fsync_process.ready, timeout=10)


def gone(pid: int) -> bool:
    """Whether process `pid` has ended (a zombie waiting for its reaper counts)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


class _Pipe:
    """A descriptor fdatasync refuses (EINVAL): a pipe's read end."""

    def __init__(self) -> None:
        self.read, self.write = os.pipe()

    def fileno(self) -> int:
        return self.read

    def close(self) -> None:
        os.close(self.read)
        os.close(self.write)


async def test_the_child_syncs_the_file_it_is_given_and_reports_a_failed_fdatasync(
    tmp_path: Path,
) -> None:
    fsync_process = FsyncProcess()
    fsync_process.start()
    pipe = _Pipe()
    log_file = AppendLog(tmp_path / log_name(1))
    try:
        await ready(fsync_process)
        log_file.write(b"x" * 100)
        await fsync_process.sync(log_file)
        await fsync_process.sync(log_file)
        assert fsync_process.syncs == 2
        with pytest.raises(OSError) as refused:
            await fsync_process.sync(pipe)
        assert refused.value.errno == errno.EINVAL
        await fsync_process.sync(log_file)  # a failed call leaves the child serving
        assert fsync_process.syncs == 3
    finally:
        fsync_process.close()
        log_file.close()
        pipe.close()


async def test_the_child_ignores_the_signals_a_terminal_sends_its_process_group(
    tmp_path: Path,
) -> None:
    # Ctrl-C reaches the node and its child alike; the node commits what is pending
    # as it stops, through the child.
    fsync_process = FsyncProcess()
    fsync_process.start()
    log_file = AppendLog(tmp_path / log_name(1))
    try:
        await ready(fsync_process)
        assert fsync_process.pid is not None
        os.kill(fsync_process.pid, signal.SIGINT)
        os.kill(fsync_process.pid, signal.SIGTERM)
        await trio.sleep(0.2)
        log_file.write(b"x" * 100)
        await fsync_process.sync(log_file)
        assert fsync_process.syncs == 1
    finally:
        fsync_process.close()
        log_file.close()


async def test_a_killed_child_is_reported_lost() -> None:
    fsync_process = FsyncProcess()
    fsync_process.start()
    pipe = _Pipe()
    try:
        await ready(fsync_process)
        assert fsync_process.pid is not None
        os.kill(fsync_process.pid, signal.SIGKILL)
        with pytest.raises(FsyncProcessLost):
            await fsync_process.sync(pipe)
    finally:
        fsync_process.close()
        pipe.close()


async def test_concurrent_writes_start_the_child_and_their_commits_go_through_it(
    tmp_path: Path,
) -> None:
    async with Store.open(tmp_path) as store:
        assert await store.apply(rec(b"alone", b"v", 1))
        assert store._fsync_process is None  # one writer: nothing to overlap with
        wall = 10

        async def writer(i: int) -> None:
            # Writers a little out of step: some arrive while a commit syncs.
            nonlocal wall
            while store._fsync_process is None:
                wall += 1
                assert await store.apply(rec(b"k%d" % i, b"v", wall))
                await trio.sleep(0.0001 * i)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(writer, i)
        assert store._fsync_process is not None
        await wait_for_in_trio(store._syncs_in_process, timeout=10)
        assert store.stats().syncs_in_process
        fsync_process = store._fsync_process
        assert fsync_process.pid is not None and not gone(fsync_process.pid)
        commits_before = store.stats().commits
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(store.apply, rec(b"k%d" % i, b"last", 1000))
        commits = store.stats().commits - commits_before
        assert commits >= 1
        assert fsync_process.syncs >= commits
        pid = fsync_process.pid
    assert gone(pid)  # the child ends with the store
    async with Store.open(tmp_path) as store:
        assert store.get(b"alone") == rec(b"alone", b"v", 1)
        for i in range(20):
            assert store.get(b"k%d" % i) == rec(b"k%d" % i, b"last", 1000)


async def test_writes_stay_invisible_until_the_child_has_synced_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Store.open(tmp_path) as store:
        old = rec(b"k", b"old", 1)
        assert await store.apply(old)
        fsync_process = await syncing_in_a_child(store)
        real_sync = fsync_process.sync
        syncing, release = trio.Event(), trio.Event()

        async def held_sync(log_file: AppendLog) -> None:
            syncing.set()
            await release.wait()
            await real_sync(log_file)

        monkeypatch.setattr(fsync_process, "sync", held_sync)
        log_path = log_files(tmp_path)[0]
        synced = log_frames(log_path)
        new, brand_new = rec(b"k", b"new", 2), rec(b"fresh", b"x", 3)
        done: list[list[bool]] = []

        async def write() -> None:
            done.append(await store.apply_many([new, brand_new]))

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(write)
                await syncing.wait()
                # The loop wrote the batch into the file; only the child's sync is missing.
                batch = frames([new, brand_new], file_salt(log_path), len(synced))
                assert log_frames(log_path) == synced + batch
                assert store.get(b"k") == old
                assert store.get(b"fresh") is None
                assert store.scan() == [old]
                assert not done
                release.set()
        assert done == [[True, True]]
        assert store.get(b"k") == new
        assert fsync_process.syncs >= 1


async def test_a_failed_fdatasync_in_the_child_fails_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = rec(b"a", b"1", 1)
    pipe = _Pipe()
    try:
        async with Store.open(tmp_path) as store:
            assert await store.apply(first)
            await syncing_in_a_child(store)
            # The child is handed a descriptor its fdatasync refuses (EINVAL).
            monkeypatch.setattr(store._log, "fileno", pipe.fileno)
            with pytest.raises(StoreFailedError, match="Invalid argument"):
                await store.apply(rec(b"b", b"2", 2))
            assert store.get(b"b") is None
            with pytest.raises(StoreFailedError):
                await store.apply(rec(b"c", b"3", 3))
    finally:
        pipe.close()
    async with Store.open(tmp_path) as store:
        assert store.get(b"a") == first
        assert store.get(b"c") is None


async def test_a_lost_child_leaves_the_commits_to_the_thread_and_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with Store.open(tmp_path) as store:
        fsync_process = await syncing_in_a_child(store)
        assert await store.apply(rec(b"before", b"v", 1))
        assert fsync_process.syncs == 1
        assert fsync_process.pid is not None
        os.kill(fsync_process.pid, signal.SIGKILL)
        with caplog.at_level(logging.ERROR, logger="a3redis.storage"):
            assert await store.apply(rec(b"after", b"v", 2))
        assert "the fsync process is lost" in caplog.text
        assert store._fsync_process is None
        stats = store.stats()
        assert not stats.syncs_in_process and stats.fsync_process_lost == 1
        assert await store.apply(rec(b"later", b"v", 3))
    async with Store.open(tmp_path) as store:
        for key, wall in ((b"before", 1), (b"after", 2), (b"later", 3)):
            assert store.get(key) == rec(key, b"v", wall)


_PARENT = """
import os, signal, sys, time
from a3redis.storage.fsync_process import FsyncProcess
fsync_process = FsyncProcess()
fsync_process.start()
deadline = time.monotonic() + 10
while not fsync_process.ready and time.monotonic() < deadline:
    time.sleep(0.01)
print(fsync_process.pid, fsync_process.ready, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_child_ends_when_its_parent_is_killed() -> None:
    parent = subprocess.run(
        [sys.executable, "-c", _PARENT], capture_output=True, text=True, timeout=30
    )
    assert parent.returncode == -signal.SIGKILL, parent.stderr
    pid, was_ready = parent.stdout.split()
    assert was_ready == "True"
    wait_for(lambda: gone(int(pid)), timeout=10, what=f"the orphaned fsync child {pid} to end")


async def test_a_child_that_cannot_start_leaves_the_commits_to_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    async with Store.open(tmp_path / "data") as store:
        with caplog.at_level(logging.ERROR, logger="a3redis.storage"):
            await store.start_fsync_process()
        assert "no fsync process" in caplog.text
        assert store._fsync_process is None and not store._fsync_process_wanted
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(store.apply, rec(b"k%d" % i, b"v", i + 1))
        assert store.stats().fsyncs >= 1 and not store.stats().syncs_in_process
    async with Store.open(tmp_path / "data") as store:
        assert [store.get(b"k%d" % i) for i in range(20)] == [
            rec(b"k%d" % i, b"v", i + 1) for i in range(20)
        ]


async def test_a_child_that_dies_starting_up_is_never_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fsync_process_module, "CHILD_PROGRAM", tmp_path / "missing.py")
    async with Store.open(tmp_path / "data") as store:
        await store.start_fsync_process()
        fsync_process = store._fsync_process
        assert fsync_process is not None and fsync_process.pid is not None
        pid = fsync_process.pid
        await wait_for_in_trio(lambda: gone(pid), timeout=10)
        for i in range(5):
            assert await store.apply(rec(b"k%d" % i, b"v", i + 1))
        assert not fsync_process.ready and fsync_process.syncs == 0
        assert store.stats().fsyncs == 5
