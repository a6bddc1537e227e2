"""MONITOR: the lines a monitoring connection receives for each command a node runs.

Rules, as Redis 7.2 writes them (`replicationFeedMonitors`, `sdscatrepr`):
- One simple-string line per command, in either protocol:
  `+<seconds>.<microseconds> [0 <ip:port>] "word" "word"...`, the time when
  the command's run was answered and the address of the client that sent it.
- A word is quoted; `\\`, `"`, newline, carriage return, tab, bell and
  backspace are escaped with a backslash, other bytes outside printable
  ASCII as `\\xHH`: a line can never be split or forged by what a client sent.
- Not shown: commands the node does not know, those refused for their
  number of words, and administrative ones (Redis's `admin` flag: CONFIG,
  CLIENT KILL, SLOWLOG, SAVE, MONITOR itself...); AUTH's and HELLO AUTH's
  passwords are `(redacted)` (a3redis.core.redis_slowlog).
"""

from __future__ import annotations

from collections.abc import Sequence

from a3redis.core.redis_commands import resolve
from a3redis.core.redis_slowlog import redacted_words

_ESCAPES = {
    ord("\\"): b"\\\\",
    ord('"'): b'\\"',
    ord("\n"): b"\\n",
    ord("\r"): b"\\r",
    ord("\t"): b"\\t",
    ord("\a"): b"\\a",
    ord("\b"): b"\\b",
}
_QUOTED: list[bytes] = [
    _ESCAPES.get(byte, bytes([byte]) if 0x20 <= byte < 0x7F else b"\\x%02x" % byte)
    for byte in range(256)
]


def quoted(word: bytes) -> bytes:
    """`word` as Redis's sdscatrepr writes it."""
    return b'"' + b"".join(_QUOTED[byte] for byte in word) + b'"'


def shown_to_monitors(request: Sequence[bytes]) -> bool:
    """Whether MONITOR shows `request`: a known command, with a fitting number of
    words, that is not administrative."""
    if not request:
        return False
    spec, failure = resolve(request)
    return spec is not None and failure is None and "admin" not in spec.flags


def monitor_line(request: Sequence[bytes], unix_time: float, peer: str) -> bytes:
    """The line monitors receive for `request`, run for the client at `peer`."""
    seconds = int(unix_time)
    microseconds = min(999_999, round((unix_time - seconds) * 1_000_000))
    words = b" ".join(quoted(word) for word in redacted_words(request))
    return b"+%d.%06d [0 %s] %s\r\n" % (seconds, microseconds, peer.encode(), words)
