"""Helpers for storage tests: data-directory files, crash copies (records: tests.support.records).

Rules: helpers use real files only; a "crash" is a byte-for-byte copy of a
live DATA_DIR, which is what a killed process leaves behind (the page cache,
synced or not; a power cut would lose what was never synced). Faults are
injected by wrapping one method of the open store (`Gate`), never by
mocking the file system.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from a3redis.core.record import Record
from a3redis.storage import codec
from a3redis.storage.files import AppendLog
from a3redis.storage.fsync_process import FsyncProcess
from a3redis.storage.store import Store
from tests.support.waiting import wait_for_in_trio

# The salt of files the tests write themselves (the store draws a random one).
SALT = 0x0123_4567_89AB_CDEF


def file_bytes(
    records: list[Record], kind: codec.FileKind = codec.FileKind.LOG, salt: int = SALT
) -> bytes:
    """A whole file (header and frames), as the store writes it."""
    return codec.encode_file(kind, salt, records)


def frames(records: list[Record], salt: int = SALT, offset: int = codec.HEADER_SIZE) -> bytes:
    """Frames for `records`, appended at `offset` of a file with `salt`."""
    payloads = [codec.encode_payload(record) for record in records]
    return codec.frame_all(payloads, codec.salt_seed(salt), offset)


def log_frames(path: Path) -> bytes:
    """A live log's header and frames: its bytes up to the end of its last
    frame, after checking that only zeros written ahead follow them."""
    data = path.read_bytes()
    end = codec.decode_file(data, codec.FileKind.LOG).valid_length
    assert not data[end:].strip(b"\0"), "only zeros may follow a live log's frames"
    return data[:end]


def file_salt(path: Path, kind: codec.FileKind = codec.FileKind.LOG) -> int:
    with open(path, "rb") as handle:
        return codec.decode_header(handle.read(codec.HEADER_SIZE), kind)


def log_files(path: Path) -> list[Path]:
    return sorted(path.glob("log-*.wal"))


def snapshot_files(path: Path) -> list[Path]:
    return sorted(path.glob("snapshot-*.snap"))


def data_files(path: Path) -> list[str]:
    """Names of everything in DATA_DIR except the lock file."""
    return sorted(entry.name for entry in path.iterdir() if entry.name != "LOCK")


def copy_data_dir(source: Path, target: Path) -> None:
    """Copy the files of a (possibly live) DATA_DIR, as a crash would leave them."""
    target.mkdir(parents=True)
    for entry in sorted(source.iterdir()):
        if entry.name == "LOCK":
            continue
        try:
            shutil.copyfile(entry, target / entry.name)
        except FileNotFoundError:  # removed while we listed: a crash would not see it either
            continue


def open_fds_under(path: Path) -> list[str]:
    """Paths under `path` that this process holds open (Linux /proc)."""
    root = str(path.resolve())
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(root + os.sep):
            found.append(target)
    return found


class Gate:
    """Wraps a blocking call made in a worker thread: signal entry, wait for release.

    `before` runs ahead of the wait (e.g. the write of write_and_sync, so the
    bytes are in the file but not yet synced); `fail` is raised instead of
    calling through, to inject an I/O error.
    """

    def __init__(
        self,
        through: Callable[..., object],
        *,
        before: Callable[..., object] | None = None,
        fail: BaseException | None = None,
    ) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self._through = through
        self._before = before
        self._fail = fail

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        # If the test failed while the gate was closed, open it: a worker thread
        # left blocked would keep the nursery that waits for it from ever failing.
        if exc_type is not None:
            self.release.set()

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        if self._before is not None:
            self._before(*args)
        self.entered.set()
        if not self.release.wait(timeout=10):
            raise TimeoutError("gate never released")
        if self._fail is not None:
            raise self._fail
        return self._through(*args)


async def syncing_in_a_child(store: Store) -> FsyncProcess:
    """Start the store's fsync process, as writes that overlap a sync would, and wait
    until commits go through it."""
    await store.start_fsync_process()
    await wait_for_in_trio(store._syncs_in_process, timeout=10)
    assert store._fsync_process is not None
    return store._fsync_process


def sync_in_a_thread(store: Store) -> None:
    """Make `store` write and sync each commit in its thread (`AppendLog.write_and_sync`),
    as it does without its fsync process: the tests that gate or fail that call need the
    commit to go through it. The fsync process's own tests cover the other path."""
    store._fsync_process_wanted = False  # nor may concurrent writes start it later
    if store._fsync_process is not None:
        store._fsync_process.close()
        store._fsync_process = None


def write_then_sync_gate(log: AppendLog, *, fail: BaseException | None = None) -> Gate:
    """A gate for AppendLog.write_and_sync: the bytes reach the file, the sync waits."""
    return Gate(lambda _data: log.sync(), before=log.write, fail=fail)


def append_bytes(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(size)


def dir_size(path: Path) -> int:
    """Bytes in a directory, which a live node may be compacting: a file listed and then
    removed before its size is read counts as empty."""
    total = 0
    for entry in path.iterdir():
        with contextlib.suppress(FileNotFoundError):
            total += entry.stat().st_size
    return total
