"""The files of one DATA_DIR: lock, logs and snapshots (blocking I/O, no trio).

Rules: one process per DATA_DIR, enforced by an exclusive `flock` on `LOCK`
held for the life of the process (the kernel releases it when the process
dies, so a `kill -9` never leaves a stale lock). Files are `log-<gen>.wal`
and `snapshot-<gen>.snap`; snapshot G holds everything written to logs
older than G, so recovery is: newest snapshot G, then logs >= G in order.
A snapshot becomes visible only by an atomic rename after its fsync.
Every file starts with a header (codec.py) that is synced before any
record is appended, so a log too short to hold one was cut short while
being created and holds nothing; a bad header with bytes after it is never
guessed at. Callers run these functions in a worker thread when the event
loop is live.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from a3redis.core.record import Record
from a3redis.storage import codec

log = logging.getLogger(__name__)

_LOG = re.compile(r"^log-(\d{10})\.wal$")
_SNAPSHOT = re.compile(r"^snapshot-(\d{10})\.snap$")


class DataDirError(Exception):
    """DATA_DIR cannot be used: locked, unreadable or corrupt."""


def log_name(generation: int) -> str:
    return f"log-{generation:010d}.wal"


def snapshot_name(generation: int) -> str:
    return f"snapshot-{generation:010d}.snap"


def new_salt() -> int:
    return int.from_bytes(os.urandom(8), "little")


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
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise DataDirError(f"cannot open the lock file {self.path}: {error.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirError(
                f"DATA_DIR {self.path.parent} is in use by another a3redis process "
                f"(pid {holder}); each node needs its own DATA_DIR"
            ) from None
        except OSError as error:
            os.close(fd)
            raise DataDirError(f"cannot lock {self.path}: {error.strerror}") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as error:
            os.close(fd)
            raise DataDirError(
                f"cannot write the lock file {self.path}: {error.strerror}"
            ) from None
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
    # Bytes of unacknowledged writes cut from the end of a log.
    torn_bytes_cut: int


class AppendLog:
    """A file of frames (a log, or hints) open for writing at its end.

    A new file (or one too short to hold a header: a crash while creating
    it) gets a fresh header, synced before any record can follow it. An
    existing file must have a good header of `kind` (DataDirError if not);
    its end is the end of its last frame (recovery has cut anything after).

    With `write_ahead` > 0, each write that runs past the space already
    written also writes that many zero bytes after its frames, and the next
    writes overwrite them. Syncing an overwrite flushes only data, while an
    append must also commit the file's new size to the journal, which costs
    more (benchmarks/README.md). Overwrites give up the file system's order
    between data and size that appends have, so this is only for a file
    whose every write is synced before the next one is made: the torn-tail
    rule (codec) then finds the final batch torn wherever its pages were
    lost. Closing the file cuts the zeros again.
    """

    def __init__(
        self, path: Path, kind: codec.FileKind = codec.FileKind.LOG, write_ahead: int = 0
    ) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self._write_ahead = write_ahead
        # `size`: where the frames end (the next write goes there); `_written`:
        # the bytes the file holds, its frames and then any zeros written ahead.
        self.size = self._written = 0
        try:
            self.size = self._written = os.fstat(self._fd).st_size
            if self.size < codec.HEADER_SIZE:
                salt = new_salt()
                os.ftruncate(self._fd, 0)
                self.size = self._written = 0
                self.write_and_sync(codec.encode_header(kind, salt))
                self.format = codec.FORMAT_VERSION
            else:
                header = os.pread(self._fd, codec.HEADER_SIZE, 0)
                try:
                    salt = codec.decode_header(header, kind)
                except codec.HeaderError as error:
                    raise DataDirError(f"{path}: {error}") from None
                # An older format is read, never appended to (the caller starts a new file).
                self.format = codec.header_format(header)
        except BaseException:
            self.close()
            raise
        self._seed = codec.salt_seed(salt)

    def frames(self, payloads: Iterable[bytes]) -> bytes:
        """Frame record payloads (codec.encode_payload) as one batch, to be written
        next (by one `write`), at the end."""
        return codec.frame_all(payloads, self._seed, self.size)

    def write(self, data: bytes | bytearray) -> None:
        end = self.size + len(data)
        if end > self._written:
            if self._write_ahead:
                data = data + bytes(self._write_ahead)
            self._written = self.size + len(data)
        view = memoryview(data)
        offset = self.size
        while view:
            written = os.pwrite(self._fd, view, offset)
            view = view[written:]
            offset += written
        self.size = end

    def fileno(self) -> int:
        return self._fd

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def write_and_sync(self, data: bytes) -> None:
        self.write(data)
        self.sync()

    def close(self) -> None:
        if self._fd >= 0:
            if self._written > self.size:
                # Unsynced: after a crash the zeros may still be there, which
                # recovery cuts as it cuts any tail of zeros.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self.size)
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
            records, _ = self._read(path, codec.FileKind.SNAPSHOT)
            # A snapshot is a dump of the table: keys strictly increase. Anything
            # else is damage the checksums could not see (or a foreign file).
            if not all(a.key < b.key for a, b in itertools.pairwise(records)):
                raise DataDirError(f"{path}: snapshot keys are not in strictly increasing order")
        snapshot_count = len(records)
        logs = [g for g in self.generations(_LOG) if g >= base]
        log_bytes = torn = 0
        for generation in logs:
            path = self.path / log_name(generation)
            log_records, torn_bytes = self._read(path, codec.FileKind.LOG)
            records.extend(log_records)
            torn += torn_bytes
            log_bytes += path.stat().st_size
        generation = max([base, *logs, 1])
        return Recovered(records, snapshot_count, base, generation, log_bytes, torn)

    def _read(self, path: Path, kind: codec.FileKind) -> tuple[list[Record], int]:
        """Decode a log (cutting a torn tail) or a snapshot (never torn: any damage
        stops); return the records and how many bytes of an unacknowledged write
        were cut (zeros after the last of them are space written ahead, not counted)."""
        try:
            data = path.read_bytes()
        except OSError as error:
            raise DataDirError(f"cannot read {path}: {error.strerror}") from None
        try:
            if kind is codec.FileKind.SNAPSHOT:
                # Renamed into place only after its fsync: even a bad header is damage.
                codec.decode_header(data, kind)
            result = codec.decode_file(data, kind)
        except codec.HeaderError as error:
            raise DataDirError(
                f"{path}: {error}. The node will not start rather than guess at its "
                f"contents: restore the file from a replica or backup, or use the "
                f"a3redis version that wrote it"
            ) from None
        except codec.CorruptLogError as error:
            raise DataDirError(
                f"{path}: {error}. The node will not start rather than drop data: "
                f"restore the file from a replica or backup, or truncate it at offset "
                f"{error.offset} to accept losing what follows"
            ) from None
        if result.valid_length < len(data):
            if kind is codec.FileKind.SNAPSHOT:
                raise DataDirError(
                    f"{path}: snapshot is truncated at {result.valid_length} ({result.tail_reason})"
                )
            # A torn tail is a batch that never completed (never acknowledged).
            torn = len(data[result.valid_length :].rstrip(b"\0"))
            log.log(
                logging.WARNING if torn else logging.INFO,
                "%s: cutting %d bytes at offset %d: %s",
                path,
                len(data) - result.valid_length,
                result.valid_length,
                result.tail_reason if torn else "zeros written ahead of the records",
            )
            truncate_file(path, result.valid_length)
            return result.records, torn
        return result.records, 0

    def open_log(self, generation: int, write_ahead: int = 0) -> AppendLog:
        append_log = AppendLog(self.path / log_name(generation), write_ahead=write_ahead)
        fsync_dir(self.path)
        return append_log

    def write_snapshot(self, generation: int, records: Iterable[Record]) -> int:
        """Write snapshot `generation` atomically; return its size in bytes."""
        return write_file(self.path / snapshot_name(generation), codec.FileKind.SNAPSHOT, records)

    def remove_before(self, generation: int) -> None:
        """Delete snapshots and logs made obsolete by snapshot `generation`."""
        for pattern, name in ((_SNAPSHOT, snapshot_name), (_LOG, log_name)):
            for old in self.generations(pattern):
                if old < generation:
                    with contextlib.suppress(FileNotFoundError):
                        (self.path / name(old)).unlink()
        fsync_dir(self.path)


def truncate_file(path: Path, size: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(size)
        handle.flush()
        os.fsync(handle.fileno())


def write_file(final: Path, kind: codec.FileKind, records: Iterable[Record]) -> int:
    """Write a file of `records` atomically (temporary file, fsync, rename); return its size."""
    temporary = final.with_suffix(".tmp")
    salt = new_salt()
    seed = codec.salt_seed(salt)
    size = 0
    with open(temporary, "wb", buffering=1024 * 1024) as handle:
        size += handle.write(codec.encode_header(kind, salt))
        payloads = (codec.encode_payload(record) for record in records)
        while chunk := list(itertools.islice(payloads, 4096)):
            size += handle.write(codec.frame_all(chunk, seed, size))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, final)
    fsync_dir(final.parent)
    return size
