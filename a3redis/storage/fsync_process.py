"""fdatasync in a child process, so that a commit's sync never waits for the interpreter lock.

Rules: the store's committer writes a batch into the page cache itself and
asks this child to make it durable (FSYNC=always). Why not a thread: a thread
must take the interpreter lock back when fdatasync returns, and while the
event loop is busy serving the next clients it rarely gets it before the
switch interval forces a hand-over, so every sync that overlapped work took
up to ~1 ms instead of ~0.3 (benchmarks/README.md has the figures). The
child has an interpreter of its own; its answer arrives on a socket the loop
polls like any other. It syncs the very file the store writes: the store
hands it the log's descriptor (SCM_RIGHTS), again whenever the log changes.

The child (`a3redis.storage.fsync_child`, standard library only) is started
by the store the first time writes arrive while a commit syncs, and is used
once it says it is ready: until then (its interpreter takes ~10 ms to start)
the store syncs in its thread, so no commit waits for it. It ends when
`close` kills it.
It also ends when the node dies, so it never outlives it. A sync cannot be
cancelled once asked, like one in a thread. A failed fdatasync raises
OSError with the child's errno. A child that cannot start or is lost (killed)
raises FsyncProcessLost, and the caller syncs in a thread instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Protocol

import trio

CHILD_PROGRAM = Path(__file__).with_name("fsync_child.py")


class Syncable(Protocol):
    """A file to sync: the store's `AppendLog`."""

    def fileno(self) -> int: ...


class FsyncProcessLost(Exception):
    """The child could not be started or is gone: it synced nothing for this call."""


class FsyncProcess:
    """One child that fdatasyncs the store's log on request."""

    def __init__(self) -> None:
        self._channel: socket.socket | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._file: Syncable | None = None  # the file whose descriptor the child holds
        self._ready = False
        self.syncs = 0  # fdatasyncs the child has done

    @property
    def pid(self) -> int | None:
        return None if self._child is None else self._child.pid

    @property
    def ready(self) -> bool:
        """Whether the child has started up and can be asked to sync (never blocks)."""
        if not self._ready and self._channel is not None:
            try:
                self._ready = self._channel.recv(1) == b"R"
            except BlockingIOError:
                pass
            except OSError:
                pass  # lost before it started: `sync` finds out
        return self._ready

    async def sync(self, log_file: Syncable) -> None:
        """fdatasync `log_file` in the child; return once it is durable."""
        channel = self._channel
        if channel is None:
            raise FsyncProcessLost("it is not running")
        with trio.CancelScope(shield=True):
            try:
                if log_file is not self._file:
                    socket.send_fds(channel, [b"F"], [log_file.fileno()])
                    self._file = log_file
                channel.send(b"S")
                while True:
                    try:
                        answer = channel.recv(8)
                    except BlockingIOError:
                        await trio.lowlevel.wait_readable(channel)
                    else:
                        break
            except OSError as error:
                raise FsyncProcessLost(f"its socket failed: {error}") from None
        if answer == b"K":
            self.syncs += 1
            return
        if len(answer) == 5 and answer[:1] == b"E":
            code = int.from_bytes(answer[1:], "little")
            raise OSError(code, os.strerror(code))
        raise FsyncProcessLost("it ended" if not answer else f"it answered {answer!r}")

    def start(self) -> None:
        """Start the child (blocking for the fork and exec only: it starts up on its own)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            child = subprocess.Popen(
                [sys.executable, "-I", "-S", str(CHILD_PROGRAM), str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except OSError as error:
            ours.close()
            raise FsyncProcessLost(f"it could not be started: {error}") from None
        finally:
            theirs.close()
        ours.setblocking(False)
        self._channel, self._child = ours, child

    def close(self) -> None:
        """End the child and reap it. Call it with no sync in flight: the child holds
        nothing but a descriptor, so it is killed rather than waited for (one that is
        still starting up would take milliseconds to notice its socket closed)."""
        channel, child = self._channel, self._child
        self._channel = self._child = self._file = None
        if channel is not None:
            channel.close()
        if child is not None:
            child.kill()
            child.wait()
