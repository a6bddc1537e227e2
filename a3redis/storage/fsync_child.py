"""The fsync process's own program: fdatasync a file whenever its parent asks.

Rules: run by `a3redis.storage.fsync_process` as `python -I -S <this file> <fd>`,
so it imports nothing but the standard library and starts in milliseconds.
`fd` is its end of a SOCK_SEQPACKET socket pair. It first says `R` (ready:
its parent syncs in a thread until then, so nothing waits for it to start).
Then every message is one byte:
- `F` with one file descriptor attached (SCM_RIGHTS): the file to sync from
  now on (the one it had is closed); no answer;
- `S`: fdatasync the current file; the answer is `K`, or `E` and the errno as
  a little-endian u32 when the call failed.
It exits when the socket reaches its end (the parent closed it, or died:
the kernel closes a dead process's sockets) and on anything it does not
understand, so it never outlives the node that started it. It ignores
SIGINT and SIGTERM: a Ctrl-C in a terminal (or a signal to the process
group) reaches the node and this child alike, and the node still commits
what is pending as it stops, which needs the child until the node ends it.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys


def serve(channel: socket.socket) -> None:
    current = -1
    try:
        while True:
            message, fds, _, _ = socket.recv_fds(channel, 1, 1)
            if message == b"F" and len(fds) == 1:
                if current >= 0:
                    os.close(current)
                current = fds[0]
            elif message == b"S" and not fds and current >= 0:
                try:
                    os.fdatasync(current)
                except OSError as error:
                    channel.send(b"E" + (error.errno or errno.EIO).to_bytes(4, "little"))
                else:
                    channel.send(b"K")
            else:
                for fd in fds:
                    os.close(fd)
                return  # the end of the socket (b""), or a message we do not know
    except OSError:
        return  # the parent is gone: nobody is left to answer


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    channel = socket.socket(fileno=int(sys.argv[1]))
    with channel:
        try:
            channel.send(b"R")
        except OSError:
            return 0  # the parent is gone already
        serve(channel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
