"""Request limits and the checks that enforce them, for everything a node is sent.

Rules: every check runs before anything is stored or observed, so a rejected
request or record changes nothing, not even the clock; each error names the
field and the limit that was broken (never a Python repr) and carries a short
`reason` for metrics. One set of checks serves every trust boundary: the
client API (keys, values, `after`), the replica API (Apply, Read, Entries,
repair transfers, hints, read answers) and any later front end.

A version is valid when its node id is a node id (`NODE_ID_FORM`, the form
NODE_ID itself must have), its logical counter fits the wire's uint32, its
wall time the wire's uint64, and its wall time is at most `max_clock_skew_ms`
ahead of the checking node's wall clock (CockroachDB's max-offset rule): no
clock in a healthy cluster can have issued a version further ahead, and the
hybrid logical clocks that observe versions must never be dragged there.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from a3redis.core import names
from a3redis.core.errors import ErrorKind, RequestError
from a3redis.core.expiry import MAX_EXPIRES_AT_MS, Expiry
from a3redis.core.hlc import MAX_LOGICAL, Version
from a3redis.core.names import MAX_NAME_CHARS, NODE_ID_RULE
from a3redis.core.record import Record

# The largest wall time the wire (uint64) and the log format can carry.
MAX_WALL_MS = 2**64 - 1
# The form of a node id is a3redis.core.names' rule, the one gossip and NODE_ID use.
NODE_ID_FORM = NODE_ID_RULE


# Versions name a handful of nodes, millions of times: a cached answer is
# cheaper than the regular expression (and a long text never gets this far).
@functools.lru_cache(maxsize=1024)
def _is_node_id_cached(text: str) -> bool:
    return names.is_node_id(text)


def is_node_id(text: str) -> bool:
    """Whether `text` has the form of a node id (and of a cluster name)."""
    return len(text) <= MAX_NAME_CHARS and _is_node_id_cached(text)


class Reason(enum.StrEnum):
    """Why something was refused: the `reason` label of the rejection metric."""

    KEY = "key"
    VALUE = "value"
    BATCH = "batch"
    NODE_ID = "node_id"
    LOGICAL = "logical"
    WALL_MS = "wall_ms"
    CLOCK_SKEW = "clock_skew"
    WRONG_KEY = "wrong_key"
    MALFORMED = "malformed"
    EXPIRY = "expiry"
    RESPONSE_SIZE = "response_size"
    OTHER = "other"


class InvalidRequestError(RequestError, ValueError):
    """A client or peer sent something the server will not store or answer."""

    kind = ErrorKind.INVALID
    reason: Reason

    def __init__(
        self,
        message: str,
        reason: Reason = Reason.OTHER,
        *,
        metadata: Mapping[str, str] | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message, metadata=metadata, detail=detail)
        self.reason = reason


class ResponseTooLargeError(RequestError):
    """The answer to a request would exceed the response limit; ask for less per call."""

    kind = ErrorKind.TOO_LARGE
    reason = "RESPONSE_TOO_LARGE"


# The largest answer a node builds for a client's call: half of purerpc's
# 32 MiB message limit, so an answer that passes here can always be sent.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
# A replica's answer to a peer carries the reads of many client requests
# batched together (a3redis.cluster.peers): it may use the message limit, less room
# for the framing of every record.
MAX_PEER_RESPONSE_BYTES = 30 * 1024 * 1024


def record_bytes(record: Record) -> int:
    """What a record adds to a message's size limit (an answer's, an Apply's): its key and value."""
    return len(record.key) + (len(record.value) if record.value else 0)


@dataclass(frozen=True, slots=True)
class Limits:
    max_key_bytes: int = 1024
    max_value_bytes: int = 1024 * 1024
    max_batch_keys: int = 10_000
    max_clock_skew_ms: int = 60_000

    def check_key(self, key: bytes) -> None:
        if not key:
            raise InvalidRequestError("key must not be empty", Reason.KEY)
        if len(key) > self.max_key_bytes:
            raise InvalidRequestError(
                f"key is {len(key)} bytes; the limit is MAX_KEY_BYTES={self.max_key_bytes}",
                Reason.KEY,
                metadata={"bytes": str(len(key)), "limit": str(self.max_key_bytes)},
                detail="KEY_TOO_LARGE",
            )

    def check_value(self, value: bytes) -> None:
        if len(value) > self.max_value_bytes:
            raise InvalidRequestError(
                f"value is {len(value)} bytes; the limit is MAX_VALUE_BYTES={self.max_value_bytes}",
                Reason.VALUE,
                metadata={"bytes": str(len(value)), "limit": str(self.max_value_bytes)},
                detail="VALUE_TOO_LARGE",
            )

    def check_response(
        self, records: Iterable[Record | None], what: str, limit: int = MAX_RESPONSE_BYTES
    ) -> None:
        """Refuse to answer `records` in one message if their keys and values exceed `limit`.

        Counted over every record as it will be sent (a key asked for twice
        is answered twice), before any of it is copied into a message.
        """
        total = 0
        for record in records:
            if record is not None:
                total += record_bytes(record)
                if total > limit:
                    raise ResponseTooLargeError(
                        f"the answer to this {what} would exceed {limit} bytes "
                        "of keys and values; ask for fewer keys per call"
                    )

    @staticmethod
    def records_that_fit(records: Sequence[Record], limit: int = MAX_RESPONSE_BYTES) -> int:
        """How many of `records`, from the first, fit in `limit` bytes of keys and values.

        At least one (a single record is within the limits of a key and a
        value): a page of a scan ends early rather than exceed the limit.
        """
        total = 0
        for count, record in enumerate(records):
            total += record_bytes(record)
            if total > limit:
                return max(count, 1)
        return len(records)

    def check_batch(self, count: int) -> None:
        if count > self.max_batch_keys:
            raise InvalidRequestError(
                f"batch has {count} keys; the limit is {self.max_batch_keys} per call",
                Reason.BATCH,
            )

    def fits(self, key: bytes, value: bytes | None) -> bool:
        """Whether `key` (and `value`, unless None) would pass `check_key` (and
        `check_value`): one call where most keys and values do, the checks for
        the words of the error where one does not."""
        return (
            bool(key)
            and len(key) <= self.max_key_bytes
            and (value is None or len(value) <= self.max_value_bytes)
        )

    def check_pairs(self, pairs: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Each (key, value) of a batched write; a value of None is a delete."""
        fits = self.fits
        for index, (key, value) in enumerate(pairs):
            if fits(key, value):
                continue
            try:
                self.check_key(key)
                if value is not None:
                    self.check_value(value)
            except InvalidRequestError as error:
                raise InvalidRequestError(
                    f"pair {index}: {error}",
                    error.reason,
                    metadata={**error.metadata, "index": str(index)},
                    detail=error.detail,
                ) from None

    def check_keys(self, keys: Iterable[bytes]) -> None:
        """Each key of a multi-key request; the error names the first bad one by index."""
        for index, key in enumerate(keys):
            try:
                self.check_key(key)
            except InvalidRequestError as error:
                raise InvalidRequestError(
                    f"key {index}: {error}",
                    error.reason,
                    metadata={**error.metadata, "index": str(index)},
                    detail=error.detail,
                ) from None

    # ----- versions -----------------------------------------------------------------------

    def clock_bound(self, wall_ms: int) -> int:
        """The greatest wall time a version may have, on a node whose clock reads `wall_ms`."""
        return wall_ms + self.max_clock_skew_ms

    def check_version(self, version: Version, wall_ms: int, field: str = "version") -> None:
        """A version received from outside, checked against this node's wall clock `wall_ms`."""
        if self.version_fits(version, wall_ms):
            return  # the usual case: it runs for every record a peer sends
        self._explain_version(version, wall_ms, field)

    def version_fits(self, version: Version, wall_ms: int) -> bool:
        """Whether `version` would pass `check_version` at wall time `wall_ms`."""
        wall, logical, node_id = version
        return (
            0 <= wall <= wall_ms + self.max_clock_skew_ms
            and wall <= MAX_WALL_MS
            and 0 <= logical <= MAX_LOGICAL
            and is_node_id(node_id)
        )

    def _explain_version(self, version: Version, wall_ms: int, field: str) -> None:
        """Raise the error that names the first thing wrong with `version`."""
        node_id = version.node_id
        if not is_node_id(node_id):
            shown = f"{len(node_id)} characters long" if len(node_id) > 16 else repr(node_id)
            raise InvalidRequestError(
                f"{field}.node_id is {shown}; a node id is {NODE_ID_FORM}", Reason.NODE_ID
            )
        if not 0 <= version.logical <= MAX_LOGICAL:
            raise InvalidRequestError(
                f"{field}.logical is {version.logical}; it must be from 0 to {MAX_LOGICAL}",
                Reason.LOGICAL,
            )
        if not 0 <= version.wall_ms <= MAX_WALL_MS:
            raise InvalidRequestError(
                f"{field}.wall_ms is {version.wall_ms}; it must be from 0 to {MAX_WALL_MS}",
                Reason.WALL_MS,
            )
        if version.wall_ms > wall_ms + self.max_clock_skew_ms:
            raise InvalidRequestError(
                f"{field}.wall_ms is {version.wall_ms - wall_ms} ms ahead of this node's clock; "
                f"the limit is MAX_CLOCK_SKEW={self.max_clock_skew_ms / 1000:g}s",
                Reason.CLOCK_SKEW,
                metadata={
                    "ahead_ms": str(version.wall_ms - wall_ms),
                    "limit_ms": str(self.max_clock_skew_ms),
                },
            )
        raise AssertionError(f"{version} passes every check")  # unreachable: the fast path

    def first_refused_record(self, records: Sequence[Record], wall_ms: int) -> int:
        """The position of the first of `records` that `check_record` refuses; -1 if none
        (one call for a Stream page of thousands; `check_record` of the record found
        words the error)."""
        record_fits = self.record_fits
        for position, record in enumerate(records):
            if not record_fits(record, wall_ms):
                return position
        return -1

    def record_fits(self, record: Record, wall_ms: int) -> bool:
        """Whether `record` would pass `check_record` at wall time `wall_ms`."""
        key, value, version, expires_at_ms = record
        return (
            self.fits(key, value)
            and self.version_fits(version, wall_ms)
            and 0 <= expires_at_ms <= MAX_EXPIRES_AT_MS
        )

    def check_record(self, record: Record, wall_ms: int) -> None:
        """A record received from another node: its key, value and version."""
        if self.record_fits(record, wall_ms):
            return  # the usual case: the checks below word what is wrong
        self.check_key(record.key)
        if record.value is not None:
            self.check_value(record.value)
        self.check_version(record.version, wall_ms, "record.version")
        if not 0 <= record.expires_at_ms <= MAX_EXPIRES_AT_MS:
            raise InvalidRequestError(
                f"record.expires_at_ms is {_shown(record.expires_at_ms)}; it must be 0 (never) "
                f"or from 1 to {MAX_EXPIRES_AT_MS}",
                Reason.EXPIRY,
            )

    # ----- expiries -----------------------------------------------------------------------

    def check_expiry(self, expiry: Expiry, wall_ms: int, command: str = "write") -> None:
        """The expiry a client asks a write for: a TTL of at least 1 ms, or an absolute
        expiry after the epoch, either within MAX_EXPIRES_AT_MS even from a version
        stamped at the far end of the clock-skew bound."""
        ttl_ms, at_ms = expiry
        if ttl_ms and at_ms:
            raise InvalidRequestError(
                f"{command}: give ttl_ms or expires_at_ms, not both", Reason.EXPIRY
            )
        if ttl_ms:
            latest = MAX_EXPIRES_AT_MS - self.clock_bound(wall_ms)
            if not 1 <= ttl_ms <= latest:
                raise InvalidRequestError(
                    f"{command}: invalid expire time: ttl_ms is {_shown(ttl_ms)}; it must be "
                    f"from 1 to {latest}",
                    Reason.EXPIRY,
                )
        elif at_ms and not 1 <= at_ms <= MAX_EXPIRES_AT_MS:
            raise InvalidRequestError(
                f"{command}: invalid expire time: expires_at_ms is {_shown(at_ms)}; it must be "
                f"from 1 to {MAX_EXPIRES_AT_MS}",
                Reason.EXPIRY,
            )


def _shown(number: int) -> str:
    """A number from outside, in an error message: never thousands of digits."""
    text = (
        str(number)
        if -(10**30) < number < 10**30
        else ("a huge negative number" if number < 0 else "a huge number")
    )
    return text
