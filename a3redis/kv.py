"""The key-value operations of one node, in core types.

Rules: this is the only place that turns a client request into records: it
stamps versions from the node's hybrid logical clock, validates against the
limits before anything is stored, and never reports a write that the store
did not take. On a single node every consistency level reads and writes the
local store; the replication layer gives them their cluster meaning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from a3redis.core.consistency import Consistency
from a3redis.core.hlc import HybridLogicalClock, Version
from a3redis.core.record import Record
from a3redis.core.validation import InvalidRequestError, Limits
from a3redis.storage.store import Store


class WriteRejectedError(Exception):
    """A newer version of the key already exists; the write was not stored."""


class LocalKeyValue:
    def __init__(
        self,
        store: Store,
        clock: HybridLogicalClock,
        wall_ms: Callable[[], int],
        limits: Limits,
    ) -> None:
        self.store = store
        self.clock = clock
        self.limits = limits
        self._wall_ms = wall_ms
        if store.max_version is not None:
            # After a restart, never issue a version below one already stored.
            clock.observe(store.max_version, wall_ms())

    async def put(self, key: bytes, value: bytes, consistency: Consistency) -> Version:
        self.limits.check_key(key)
        self.limits.check_value(value)
        return await self._write(Record(key, value, self.clock.now(self._wall_ms())))

    async def delete(self, key: bytes, consistency: Consistency) -> Version:
        self.limits.check_key(key)
        return await self._write(Record(key, None, self.clock.now(self._wall_ms())))

    async def get(self, key: bytes, consistency: Consistency) -> Record | None:
        """The newest record for `key`, or None; a tombstone means "deleted"."""
        self.limits.check_key(key)
        return self.store.get(key)

    async def batch_put(
        self, pairs: Sequence[tuple[bytes, bytes]], consistency: Consistency
    ) -> list[Version]:
        self.limits.check_batch(len(pairs))
        self.limits.check_pairs(pairs)
        wall = self._wall_ms()
        # One version per pair; the last pair wins when a key repeats, as if
        # the pairs had been written one after another.
        records = [Record(key, value, self.clock.now(wall)) for key, value in pairs]
        stored = await self.store.apply_many(records)
        if not all(stored):
            raise WriteRejectedError("a newer version of a key in the batch already exists")
        return [record.version for record in records]

    async def batch_get(
        self, keys: Sequence[bytes], consistency: Consistency
    ) -> list[Record | None]:
        self.limits.check_batch(len(keys))
        for index, key in enumerate(keys):
            try:
                self.limits.check_key(key)
            except InvalidRequestError as error:
                raise InvalidRequestError(f"key {index}: {error}") from None
        return [self.store.get(key) for key in keys]

    def scan_page(self, start: bytes, end: bytes, prefix: bytes, limit: int) -> list[Record]:
        """Up to `limit` live records from `start` on; callers page with the last key."""
        return self.store.scan(start, end, prefix, limit)

    async def _write(self, record: Record) -> Version:
        if not await self.store.apply(record):
            # Cannot happen while the clock observes every stored version, and
            # must never be reported as success if it does.
            raise WriteRejectedError(f"a version newer than {record.version} already exists")
        return record.version
