"""Consistency levels: how many replicas must answer a request.

Rules: levels are parsed from their names (case-insensitive, with or without
a `CONSISTENCY_` prefix); an unknown name or number is an error, never a
silent fallback. `LOCAL` means the receiving node's own copy only.
"""

from __future__ import annotations

import enum

from a3redis.core.validation import InvalidRequestError


class Consistency(enum.Enum):
    ONE = 1
    QUORUM = 2
    ALL = 3
    LOCAL = 4

    # Members are singletons that compare by identity: the identity hash is as
    # good, and unlike Enum's (a Python call hashing the name) costs nothing on
    # the dict lookups every request makes by its level.
    __hash__ = object.__hash__

    @classmethod
    def parse(cls, text: str) -> Consistency:
        name = text.strip().upper().removeprefix("CONSISTENCY_")
        try:
            return cls[name]
        except KeyError:
            choices = ", ".join(level.name.lower() for level in cls)
            raise InvalidRequestError(
                f"unknown consistency level {text!r}; expected one of {choices}"
            ) from None

    def required(self, replicas: int) -> int:
        """Acknowledgements needed out of `replicas` copies."""
        if self is Consistency.ONE or self is Consistency.LOCAL:
            return 1
        if self is Consistency.QUORUM:
            return replicas // 2 + 1
        return replicas
