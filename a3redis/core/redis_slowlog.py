"""SLOWLOG: the Redis commands of one node that took longer than a threshold.

Rules:
- As Redis keeps it (`slowlog.c`): at most SLOWLOG_MAX_LEN entries, the
  newest first; each holds a unique id, the Unix time it was logged, the
  command's duration in microseconds, its words (at most
  SLOWLOG_ENTRY_MAX_ARGC: the last kept one then says how many more there
  were; each at most SLOWLOG_ENTRY_MAX_STRING bytes, then how many more), the
  client's address and its name. A command is logged when it took at least
  the threshold (SLOWLOG_LOG_SLOWER_THAN µs by default, as Redis; 0: every
  command; negative: none).
- A command's duration is that of the run of pipelined commands it came in,
  from its start to its replies (what `INFO commandstats` times too): on
  a3redis a command waits for replicas and the disk, and that wait is what
  an operator looking for slow commands needs to see.
- Secrets never enter it: AUTH's username and password, HELLO's AUTH
  arguments and CONFIG SET's values of password settings are logged as
  `(redacted)`, as Redis does.
- Time is passed in; the words are copied, never kept as the client's.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from a3redis.core.resp_values import Reply

SLOWLOG_LOG_SLOWER_THAN = 10_000  # microseconds
SLOWLOG_MAX_LEN = 128
SLOWLOG_ENTRY_MAX_ARGC = 32
SLOWLOG_ENTRY_MAX_STRING = 128
# SLOWLOG GET without a count.
DEFAULT_GET_COUNT = 10


@dataclass(frozen=True, slots=True)
class SlowEntry:
    id: int
    unix_time: int
    microseconds: int
    words: tuple[bytes, ...]
    peer: str
    client_name: bytes

    def reply(self) -> Reply:
        return [
            self.id,
            self.unix_time,
            self.microseconds,
            list(self.words),
            self.peer.encode(),
            self.client_name,
        ]


REDACTED = b"(redacted)"
# Redis's SENSITIVE_CONFIG settings: CONFIG SET's values for them are redacted too.
_SENSITIVE_CONFIGS = (
    b"requirepass",
    b"masterauth",
    b"tls-key-file-pass",
    b"tls-client-key-file-pass",
)


def _redacted(request: Sequence[bytes]) -> list[int]:
    """The indexes of `request`'s words that are secrets (redactClientCommandArgument)."""
    name = request[0].lower()
    if name == b"auth":
        return [index for index in (1, 2) if index < len(request)]
    if name == b"config" and len(request) > 2 and request[1].lower() == b"set":
        return [
            index + 1
            for index in range(2, len(request) - 1, 2)
            if request[index].lower() in _SENSITIVE_CONFIGS
        ]
    if name == b"hello":
        secret = []
        index = 2
        while index < len(request):
            option = request[index].lower()
            if option == b"auth" and index + 2 < len(request):
                secret += [index + 1, index + 2]
                index += 3
            elif option == b"setname" and index + 1 < len(request):
                index += 2
            else:
                index += 1
        return secret
    return []


def redacted_words(request: Sequence[bytes]) -> list[bytes]:
    """`request` with its secrets replaced by `(redacted)` (MONITOR shows them so)."""
    secret = _redacted(request)
    return [REDACTED if index in secret else word for index, word in enumerate(request)]


def logged_words(request: Sequence[bytes]) -> tuple[bytes, ...]:
    """The words of `request` as the slow log keeps them (slowlogCreateEntry)."""
    words = redacted_words(request)
    if len(words) > SLOWLOG_ENTRY_MAX_ARGC:
        more = len(words) - SLOWLOG_ENTRY_MAX_ARGC + 1
        words = [*words[: SLOWLOG_ENTRY_MAX_ARGC - 1], f"... ({more} more arguments)".encode()]
    return tuple(_cut(word) for word in words)


def _cut(word: bytes) -> bytes:
    """`word`, cut after SLOWLOG_ENTRY_MAX_STRING bytes with how many more it had."""
    if len(word) <= SLOWLOG_ENTRY_MAX_STRING:
        return bytes(word)
    more = len(word) - SLOWLOG_ENTRY_MAX_STRING
    return word[:SLOWLOG_ENTRY_MAX_STRING] + f"... ({more} more bytes)".encode()


class SlowLog:
    def __init__(
        self, slower_than_us: int = SLOWLOG_LOG_SLOWER_THAN, max_len: int = SLOWLOG_MAX_LEN
    ) -> None:
        self.slower_than_us = slower_than_us
        self.slower_than_s = math.inf
        self._entries: deque[SlowEntry] = deque(maxlen=max_len)
        self._next_id = 0
        self.configure(slower_than_us=slower_than_us)

    @property
    def max_len(self) -> int:
        return self._entries.maxlen or 0

    def configure(self, slower_than_us: int | None = None, max_len: int | None = None) -> None:
        """CONFIG SET: a new threshold, or a new length (the newest entries are kept)."""
        if slower_than_us is not None:
            self.slower_than_us = slower_than_us
            # A negative threshold logs nothing, as in Redis.
            self.slower_than_s = slower_than_us / 1_000_000 if slower_than_us >= 0 else math.inf
        if max_len is not None:
            self._entries = deque(list(self._entries)[:max_len], maxlen=max_len)

    def note(
        self,
        requests: Sequence[list[bytes]],
        seconds: float,
        unix_time: float,
        peer: str,
        client_name: bytes | None,
    ) -> None:
        """Log each of a run's `requests` if the run took at least the threshold."""
        if seconds < self.slower_than_s:
            return
        microseconds = round(seconds * 1_000_000)
        for request in requests:
            if not request:
                continue
            self._entries.appendleft(
                SlowEntry(
                    self._next_id,
                    int(unix_time),
                    microseconds,
                    logged_words(request),
                    peer,
                    client_name or b"",
                )
            )
            self._next_id += 1

    def get(self, count: int | None) -> Reply:
        """SLOWLOG GET [count]: the newest `count` entries (None: 10; negative: all)."""
        if count is None:
            count = DEFAULT_GET_COUNT
        entries = list(self._entries)
        if count >= 0:
            entries = entries[:count]
        return [entry.reply() for entry in entries]

    def __len__(self) -> int:
        return len(self._entries)

    def reset(self) -> None:
        self._entries.clear()
