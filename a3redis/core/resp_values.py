"""The values a Redis-protocol reply is made of, independent of RESP2 or RESP3.

Rules:
- A command's answer is built once, as a `Reply`, and the codec
  (`a3redis.core.resp`) writes it in the protocol the connection speaks.
  Nothing above the codec knows whether a map becomes a RESP3 map or a flat
  RESP2 array.
- Plain Python values stand for the common types: `bytes` is a bulk string
  (binary-safe), `int` an integer, `None` a null, `list` an array, `dict` a
  map, `frozenset` a set, `float` a double, `bool` a boolean. Text that is a
  status (`+OK`) or an error (`-ERR ...`) is wrapped, so it can never be
  confused with a bulk string a user stored.
- An error's text starts with its code, as Redis writes it (`ERR ...`,
  `WRONGTYPE ...`, `NOAUTH ...`); `error()` adds `ERR ` when there is none.
  Error and status texts are single lines: the codec refuses CR or LF.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Status:
    """A simple string: `+OK`, `+PONG`, `+QUEUED`."""

    text: str


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """An error: `-ERR unknown command 'FOO'...`; `text` starts with its code."""

    text: str

    @property
    def code(self) -> str:
        return self.text.split(" ", 1)[0]


@dataclass(frozen=True, slots=True)
class Verbatim:
    """RESP3 verbatim text (`=`, e.g. INFO as `txt`); a bulk string in RESP2."""

    text: bytes
    format: str = "txt"


@dataclass(frozen=True, slots=True)
class Push:
    """RESP3 out-of-band data (`>`); an array in RESP2."""

    items: list[Reply]


Reply = (
    bytes
    | int
    | float
    | bool
    | None
    | Status
    | ErrorReply
    | Verbatim
    | Push
    | list["Reply"]
    | dict["Reply", "Reply"]
    | frozenset["Reply"]
)

OK = Status("OK")
PONG = Status("PONG")


def quoted_argument(argument: bytes) -> str:
    """A client's argument quoted in an error as Redis does: at most 128 bytes, on one
    line."""
    text = argument[:128].decode("utf-8", "replace")
    return text.replace("\r", " ").replace("\n", " ")


def error(text: str) -> ErrorReply:
    """An error reply; `ERR ` is prefixed unless `text` starts with an upper-case code."""
    code = text.split(" ", 1)[0]
    if code and code.isupper() and code.isalpha():
        return ErrorReply(text)
    return ErrorReply(f"ERR {text}")
