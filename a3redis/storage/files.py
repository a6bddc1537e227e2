"""The files of one DATA_DIR: lock, logs and snapshots (blocking I/O, no trio).

Rules: one process per DATA_DIR, enforced by an exclusive `flock` on `LOCK`
held for the life of the process (the kernel releases it when the process
dies, so a `kill -9` never leaves a stale lock). Files are `log-<gen>.wal`
and `snapshot-<gen>.snap`; snapshot G holds everything written to logs
older than G, so recovery is: newest snapshot G, then logs >= G in order.
A snapshot becomes visible only by an atomic rename after its fsync.
Callers run these functions in a worker thread when the event loop is live.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from a3redis.core.record import Record
from a3redis.storage import codec

_LOG = re.compile(r"^log-(\d{10})\.wal$")
_SNAPSHOT = re.compile(r"^snapshot-(\d{10})\.snap$")


class DataDirError(Exception):
    """DATA_DIR cannot be used: locked, unreadable or corrupt."""


def log_name(generation: int) -> str:
    return f"log-{generation:010d}.wal"


def snapshot_name(generation: int) -> str:
    return f"snapshot-{generation:010d}.snap"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirLock:
    """An exclusive, process-lifetime lock on a data directory."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "LOCK"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirError(
                f"DATA_DIR {self.path.parent} is in use by another a3redis process "
                f"(pid {holder}); each node needs its own DATA_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass(slots=True)
class Recovered:
    records: list[Record]
    # Records from the snapshot are sorted with unique keys; log records follow.
    snapshot_count: int
    # The newest snapshot (0: none); files older than it are obsolete.
    snapshot_generation: int
    # The log to append to: the newest one. Logs between the snapshot and it
    # (a crash between starting a log and renaming its snapshot) still hold
    # data that no snapshot has, so they must stay until the next snapshot.
    generation: int
    log_bytes: int
    torn_bytes_cut: int


class AppendLog:
    """An append-only log file open for writing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = os.fstat(self._fd).st_size

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.size += len(data)

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def write_and_sync(self, data: bytes) -> None:
        self.write(data)
        self.sync()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class DataDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    def prepare(self) -> DirLock:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DataDirError(f"cannot create DATA_DIR {self.path}: {error.strerror}") from None
        if not os.access(self.path, os.W_OK):
            raise DataDirError(f"DATA_DIR {self.path} is not writable")
        lock = DirLock(self.path)
        lock.acquire()
        return lock

    def generations(self, pattern: re.Pattern[str]) -> list[int]:
        found = (pattern.match(entry.name) for entry in self.path.iterdir())
        return sorted(int(match.group(1)) for match in found if match)

    def recover(self) -> Recovered:
        """Read the newest snapshot and the logs after it; cut a torn log tail."""
        for leftover in self.path.glob("*.tmp"):
            leftover.unlink()
        snapshots = self.generations(_SNAPSHOT)
        base = snapshots[-1] if snapshots else 0
        records: list[Record] = []
        if base:
            path = self.path / snapshot_name(base)
            records = self._read(path, allow_torn=False)
            # A snapshot is a dump of the table: keys strictly increase. Anything
            # else is damage the checksums could not see (or a foreign file).
            if not all(a.key < b.key for a, b in itertools.pairwise(records)):
                raise DataDirError(f"{path}: snapshot keys are not in strictly increasing order")
        snapshot_count = len(records)
        logs = [g for g in self.generations(_LOG) if g >= base]
        log_bytes = torn = 0
        for generation in logs:
            path = self.path / log_name(generation)
            before = path.stat().st_size
            records.extend(self._read(path, allow_torn=True))
            after = path.stat().st_size
            torn += before - after
            log_bytes += after
        generation = max([base, *logs, 1])
        return Recovered(records, snapshot_count, base, generation, log_bytes, torn)

    def _read(self, path: Path, *, allow_torn: bool) -> list[Record]:
        data = path.read_bytes()
        try:
            result = codec.decode(data)
        except codec.CorruptLogError as error:
            raise DataDirError(
                f"{path}: {error}. The node will not start rather than drop data: "
                f"restore the file from a replica or backup, or truncate it at offset "
                f"{error.offset} to accept losing what follows"
            ) from None
        if result.valid_length < len(data):
            if not allow_torn:
                raise DataDirError(f"{path}: snapshot is truncated at {result.valid_length}")
            # A torn tail is an append that never completed (never acknowledged).
            with open(path, "r+b") as handle:
                handle.truncate(result.valid_length)
                handle.flush()
                os.fsync(handle.fileno())
        return result.records

    def open_log(self, generation: int) -> AppendLog:
        log = AppendLog(self.path / log_name(generation))
        fsync_dir(self.path)
        return log

    def write_snapshot(self, generation: int, records: Iterable[Record]) -> int:
        """Write snapshot `generation` atomically; return its size in bytes."""
        final = self.path / snapshot_name(generation)
        temporary = final.with_suffix(".tmp")
        size = 0
        with open(temporary, "wb", buffering=1024 * 1024) as handle:
            chunk: list[bytes] = []
            for record in records:
                chunk.append(codec.encode(record))
                if len(chunk) >= 4096:
                    size += handle.write(b"".join(chunk))
                    chunk.clear()
            size += handle.write(b"".join(chunk))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)
        fsync_dir(self.path)
        return size

    def remove_before(self, generation: int) -> None:
        """Delete snapshots and logs made obsolete by snapshot `generation`."""
        for pattern, name in ((_SNAPSHOT, snapshot_name), (_LOG, log_name)):
            for old in self.generations(pattern):
                if old < generation:
                    with contextlib.suppress(FileNotFoundError):
                        (self.path / name(old)).unlink()
        fsync_dir(self.path)
