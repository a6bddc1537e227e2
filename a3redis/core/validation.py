"""Request limits and the checks that enforce them.

Rules: every check runs before anything is stored, so a rejected request
changes nothing; each error message names the limit that was broken.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class InvalidRequestError(ValueError):
    """A client sent something the server will not store or answer."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_key_bytes: int = 1024
    max_value_bytes: int = 1024 * 1024
    max_batch_keys: int = 10_000

    def check_key(self, key: bytes) -> None:
        if not key:
            raise InvalidRequestError("key must not be empty")
        if len(key) > self.max_key_bytes:
            raise InvalidRequestError(
                f"key is {len(key)} bytes; the limit is MAX_KEY_BYTES={self.max_key_bytes}"
            )

    def check_value(self, value: bytes) -> None:
        if len(value) > self.max_value_bytes:
            raise InvalidRequestError(
                f"value is {len(value)} bytes; the limit is MAX_VALUE_BYTES={self.max_value_bytes}"
            )

    def check_batch(self, count: int) -> None:
        if count > self.max_batch_keys:
            raise InvalidRequestError(
                f"batch has {count} keys; the limit is {self.max_batch_keys} per call"
            )

    def check_pairs(self, pairs: Iterable[tuple[bytes, bytes]]) -> None:
        for index, (key, value) in enumerate(pairs):
            try:
                self.check_key(key)
                self.check_value(value)
            except InvalidRequestError as error:
                raise InvalidRequestError(f"pair {index}: {error}") from None
