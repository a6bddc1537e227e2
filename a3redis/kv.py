"""The key-value operations of a node: validation, versions and quorum replication.

Rules: this is the only place that turns a client request into records. It
validates against the limits before anything is stored, stamps versions from
the node's hybrid logical clock, and sends each record to the replicas of its
key (its own store directly, peers through batched links). A write is
reported only after W replicas durably applied it; a read answers with the
newest record among the first R replies and repairs stale replicas in the
background. Replica work that outlives a request (the rest of the replicas,
hints, read repair) runs in the node's background nursery, bounded by the
peer timeout. `LOCAL` touches only this node's store.

Nothing another node sends reaches the store or the clock unchecked
(core.validation): a record that fails is answered REJECTED, a read answer
that fails counts as "not there", and both are counted and logged at a
limited rate. A stored record whose version is further ahead of this node's
clock than MAX_CLOCK_SKEW (only an older release let one in) is no version:
reads and repair do not see it, and any write of its key replaces it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trio

from a3redis.cluster import Cluster
from a3redis.core.consistency import Consistency
from a3redis.core.hlc import HybridLogicalClock, Version
from a3redis.core.quorum import ReadQuorum, WriteQuorum
from a3redis.core.record import ApplyOutcome, Record, outcome, supersedes
from a3redis.core.rejections import Rejections
from a3redis.core.validation import InvalidRequestError, Limits, Reason
from a3redis.peers import PeerUnavailableError
from a3redis.storage.store import Store

log = logging.getLogger(__name__)


class WriteRejectedError(Exception):
    """A newer version of the key already exists; the write was not stored."""


class UnavailableError(Exception):
    """Too few replicas are reachable for the requested consistency."""


class TimedOutError(Exception):
    """Replicas did not answer within the request deadline; outcome unknown."""


class UnsatisfiableError(Exception):
    """The consistency level can never be met by this cluster (e.g. ALL > nodes)."""


class HintSink(Protocol):
    async def store(self, node_id: str, records: Sequence[Record]) -> None: ...


@dataclass
class KeyValueStats:
    read_repairs: int = 0
    replica_write_failures: int = 0
    replica_read_failures: int = 0
    hinted: int = 0


@dataclass
class _Pending:
    """The quorums of one request and the event that fires once all are decided."""

    quorums: list[WriteQuorum] | list[ReadQuorum]
    decided: trio.Event = field(default_factory=trio.Event)

    def check(self) -> None:
        if all(q.succeeded or q.impossible for q in self.quorums):
            self.decided.set()


def _count_write_outcomes(
    replica: str, indexes: list[int], pending: _Pending, outcomes: list[ApplyOutcome] | None
) -> None:
    """Count one replica's answer (None: it failed) in the quorums of `indexes`."""
    quorums: list[WriteQuorum] = pending.quorums  # type: ignore[assignment]
    for position, i in enumerate(indexes):
        if outcomes is None:
            quorums[i].fail(replica)
        elif outcomes[position] is ApplyOutcome.SUPERSEDED:
            quorums[i].supersede(replica)
        elif outcomes[position] is ApplyOutcome.REJECTED:
            quorums[i].fail(replica)
        else:
            quorums[i].ack(replica)
    pending.check()


class KeyValue:
    def __init__(
        self,
        store: Store,
        clock: HybridLogicalClock,
        wall_ms: Callable[[], int],
        limits: Limits,
        cluster: Cluster,
        background: trio.Nursery,
        request_timeout: float,
        hints: HintSink | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.limits = limits
        self.cluster = cluster
        self.stats = KeyValueStats()
        self._wall_ms = wall_ms
        self._background = background
        self._timeout = request_timeout
        self._hints = hints
        self._rng = random.Random()
        self.rejections = Rejections()
        self._reseed_clock()

    @property
    def node_id(self) -> str:
        return self.clock.node_id

    def wall_ms(self) -> int:
        """This node's wall clock (with the test-only offset), in milliseconds."""
        return self._wall_ms()

    def _reseed_clock(self) -> None:
        """After a restart, never issue a version below one already stored.

        Stored versions beyond the clock-skew bound are left out: the clock
        would otherwise start there (for good, at 2^64-1 ms) and every version
        it issued would be refused by the other replicas.
        """
        wall = self._wall_ms()
        newest = self.store.greatest_version(self.limits.clock_bound(wall))
        if newest is not None:
            self.clock.observe(newest, wall)
        highest = self.store.max_version
        if highest is not None and highest != newest:
            log.warning(
                "stored version %s is more than MAX_CLOCK_SKEW=%gs ahead of this node's clock; "
                "the clock starts from %s instead, and writes replace such records",
                highest,
                self.limits.max_clock_skew_ms / 1000,
                newest,
            )

    def reject(self, endpoint: str, error: InvalidRequestError, source: str) -> None:
        """Count a record or entry refused from another node; log it at a limited rate."""
        unlogged = self.rejections.count(endpoint, error.reason, trio.current_time())
        if unlogged is not None:
            more = f" (and {unlogged} more since the last such line)" if unlogged else ""
            log.warning("refused a record from %s (%s): %s%s", source, endpoint, error, more)

    # ----- the client API -----------------------------------------------------------------

    async def put(
        self, key: bytes, value: bytes, consistency: Consistency, after: Version | None = None
    ) -> Version:
        self.limits.check_key(key)
        self.limits.check_value(value)
        return (await self._write([(key, value)], consistency, after))[0]

    async def delete(
        self, key: bytes, consistency: Consistency, after: Version | None = None
    ) -> Version:
        self.limits.check_key(key)
        return (await self._write([(key, None)], consistency, after))[0]

    async def batch_put(
        self,
        pairs: Sequence[tuple[bytes, bytes]],
        consistency: Consistency,
        after: Version | None = None,
    ) -> list[Version]:
        self.limits.check_batch(len(pairs))
        self.limits.check_pairs(pairs)
        return await self._write(list(pairs), consistency, after)

    async def get(self, key: bytes, consistency: Consistency) -> Record | None:
        """The newest record for `key`, or None; a tombstone means "deleted"."""
        self.limits.check_key(key)
        return (await self._read([key], consistency))[0]

    async def batch_get(
        self, keys: Sequence[bytes], consistency: Consistency
    ) -> list[Record | None]:
        self.limits.check_batch(len(keys))
        self.limits.check_keys(keys)
        # Each distinct key is read once, however often it is asked for.
        distinct = list(dict.fromkeys(keys))
        found = dict(zip(distinct, await self._read(distinct, consistency), strict=True))
        results = [found[key] for key in keys]
        self.limits.check_response(results, "BatchGet")
        return results

    async def scan_page(
        self, start: bytes, end: bytes, prefix: bytes, limit: int, consistency: Consistency
    ) -> tuple[list[Record], bytes | None]:
        """Up to `limit` live records from `start` on, and where the next page starts.

        LOCAL reads this node's store. Otherwise every live ring member scans
        its own copy (tombstones included) and the pages are merged, newest
        version per key, so a key on any replica is found and a newer delete
        anywhere hides an older value. The merged page is complete only up
        to the smallest last key of the members that had more to give.
        """
        if consistency is Consistency.LOCAL:
            records, last = self.local_scan(start, end, prefix, limit, include_tombstones=False)
            return records, (last + b"\x00" if last is not None else None)
        members = self._scan_members(consistency)
        pages = await self._collect_scans(members, start, end, prefix, limit)
        cutoff: bytes | None = None
        for _, _, last in pages:
            if last is not None and (cutoff is None or last < cutoff):
                cutoff = last
        newest: dict[bytes, Record] = {}
        wall = self._wall_ms()
        for member, records, _ in pages:
            for record in records:
                if cutoff is not None and record.key > cutoff:
                    break
                if member != self.node_id and not self._acceptable(
                    record, wall, "LocalScan", member
                ):
                    continue
                current = newest.get(record.key)
                if current is None or supersedes(record, current):
                    newest[record.key] = record
        ordered = [newest[key] for key in sorted(newest)]
        live = [record for record in ordered if record.value is not None][:limit]
        if len(live) == limit:
            return live, live[-1].key + b"\x00"
        return live, (cutoff + b"\x00" if cutoff is not None else None)

    def _scan_members(self, consistency: Consistency) -> list[str]:
        self._check_joined()
        ring = self.cluster.ring
        required = consistency.required(self.cluster.replication_factor)
        up = {m for m in ring.members if m == self.node_id or not self.cluster.is_down(m)}
        for partition in range(ring.partitions):
            owners = ring.partition_owners(partition)
            if len(owners) < required:
                raise UnsatisfiableError(
                    f"{consistency.name} needs {required} replicas but the ring has "
                    f"{len(owners)} node(s)"
                )
            if sum(owner in up for owner in owners) < required:
                raise UnavailableError(
                    f"{consistency.name} scan needs {required} live replicas of every "
                    f"partition; partition {partition} has fewer"
                )
        return sorted(up)

    async def _collect_scans(
        self, members: list[str], start: bytes, end: bytes, prefix: bytes, limit: int
    ) -> list[tuple[str, list[Record], bytes | None]]:
        """Each member's page: (member, records, the last key it scanned if it has more)."""
        pages: list[tuple[str, list[Record], bytes | None]] = []

        async def scan_one(member: str) -> None:
            if member == self.node_id:
                records, last = self.local_scan(start, end, prefix, limit)
                pages.append((member, records, last))
                return
            link = self.cluster.link(member)
            if link is None:
                raise UnavailableError(f"no address for {member}")
            try:
                records, more = await link.local_scan(start, end, prefix, limit)
            except PeerUnavailableError as error:
                raise UnavailableError(f"scan: {error}") from None
            pages.append((member, records, records[-1].key if more and records else None))

        try:
            with trio.fail_after(self._timeout):
                async with trio.open_nursery() as nursery:
                    for member in members:
                        nursery.start_soon(scan_one, member)
        except trio.TooSlowError:
            raise TimedOutError(f"replicas did not answer a scan within {self._timeout}s") from None
        except BaseExceptionGroup as group:
            unavailable = group.subgroup(UnavailableError)
            if unavailable is not None:
                raise unavailable.exceptions[0] from None
            raise
        return pages

    # ----- replica side (called by the Replica service) ----------------------------------

    async def apply_replicated(
        self, records: Sequence[Record], endpoint: str = "Apply", source: str = "a peer"
    ) -> list[ApplyOutcome]:
        """Apply records another node sent (a write, repair, handoff, a hint), each checked.

        A record that fails the checks is answered REJECTED and neither
        stored nor observed by the clock; the others are applied as usual.
        """
        wall = self._wall_ms()  # once per batch: a batch is applied at one instant
        valid = [self._acceptable(record, wall, endpoint, source) for record in records]
        if all(valid):
            return await self._apply(records, wall)
        applied = iter(
            await self._apply([r for r, ok in zip(records, valid, strict=True) if ok], wall)
        )
        return [next(applied) if ok else ApplyOutcome.REJECTED for ok in valid]

    def _acceptable(self, record: Record, wall: int, endpoint: str, source: str) -> bool:
        try:
            self.limits.check_record(record, wall)
        except InvalidRequestError as error:
            self.reject(endpoint, error, source)
            return False
        return True

    async def _apply(self, records: Sequence[Record], wall: int) -> list[ApplyOutcome]:
        """Apply records that passed the checks (or that this node made)."""
        for record in records:
            self.clock.observe(record.version, wall)
        stored = await self.store.apply_many(records, self.limits.clock_bound(wall))
        return [
            outcome(record, was_stored, None if was_stored else self.store.latest(record.key))
            for record, was_stored in zip(records, stored, strict=True)
        ]

    def read_local(self, keys: Sequence[bytes]) -> list[Record | None]:
        """This node's own records of `keys`; one beyond the clock-skew bound is not there."""
        bound = self.limits.clock_bound(self._wall_ms())
        get = self.store.get
        return [
            None if (record := get(key)) is None or record.version.wall_ms > bound else record
            for key in keys
        ]

    def local_scan(
        self, start: bytes, end: bytes, prefix: bytes, limit: int, include_tombstones: bool = True
    ) -> tuple[list[Record], bytes | None]:
        """Up to `limit` of this node's records from `start` on (none beyond the
        clock-skew bound, and no more than fit in MAX_RESPONSE_BYTES), and the
        last key scanned if there may be more."""
        records = self.store.scan(
            start, end, prefix, limit + 1, include_tombstones=include_tombstones
        )
        # A page also ends once its keys and values would exceed the response limit.
        fits = min(limit, self.limits.records_that_fit(records))
        last = records[fits - 1].key if len(records) > fits else None
        bound = self.limits.clock_bound(self._wall_ms())
        return [r for r in records[:fits] if r.version.wall_ms <= bound], last

    # ----- writes -------------------------------------------------------------------------

    async def _write(
        self,
        pairs: list[tuple[bytes, bytes | None]],
        consistency: Consistency,
        after: Version | None,
    ) -> list[Version]:
        wall = self._wall_ms()
        if after is not None:
            # A version far ahead would drag the clock there and every later version
            # with it, past what the other replicas accept.
            self.limits.check_version(after, wall, "after")
            # The client saw `after`: its next write must be later, whatever our wall clock says.
            self.clock.observe(after, wall)
        if consistency is Consistency.LOCAL:
            return await self._write_local(pairs, wall)

        placements = self._placements([key for key, _ in pairs], consistency)
        if self._sole_replica_of_all(placements):
            # A quorum of one that is this node is the local store: no replica
            # task, quorum bookkeeping or timeout to pay for on every request.
            return await self._write_local(pairs, wall)
        # Versions come last, after every check that could still refuse the request.
        records = [Record(key, value, self.clock.now(wall)) for key, value in pairs]
        quorums = [WriteQuorum(replicas, required) for replicas, required in placements]
        pending = _Pending(quorums)
        by_replica: dict[str, list[int]] = {}
        for index, quorum in enumerate(quorums):
            for replica in quorum.replicas:
                by_replica.setdefault(replica, []).append(index)
        local = by_replica.pop(self.node_id, None)
        for replica, indexes in by_replica.items():
            self._replicate_to_peer(replica, indexes, records, pending)
        if local is not None:
            # Our own copy is written in the request's task while the peers' calls
            # are out: no task and no hand-over for it.
            outcomes = await self._apply([records[i] for i in local], wall)
            _count_write_outcomes(self.node_id, local, pending, outcomes)
        await self._await(pending, "write")
        failed = [q for q in quorums if not q.succeeded]
        lost = [q for q in failed if q.superseded]
        if lost:
            raise WriteRejectedError(
                f"{len(lost[0].superseded)} replica(s) hold a newer version of the key: this "
                "write lost last-write-wins (a concurrent write?); a replica that stored it "
                "may show it until the newer version reaches it"
            )
        if failed:
            quorum = failed[0]
            raise UnavailableError(
                f"needed {quorum.required} replica acknowledgements, got {len(quorum.acked)} "
                f"(failed: {', '.join(sorted(quorum.failed))}); the write may have been applied "
                "on some replicas"
            )
        return [record.version for record in records]

    async def _write_local(
        self, pairs: list[tuple[bytes, bytes | None]], wall: int
    ) -> list[Version]:
        """Write to this node's store only (LOCAL, or a ring where we hold every key)."""
        records = [Record(key, value, self.clock.now(wall)) for key, value in pairs]
        stored = await self.store.apply_many(records, self.limits.clock_bound(wall))
        if not all(stored):
            raise WriteRejectedError("a newer version of a key already exists here")
        return [record.version for record in records]

    def _replicate_to_peer(
        self, replica: str, indexes: list[int], records: list[Record], pending: _Pending
    ) -> None:
        """Queue a peer's records on its link; the link's answer settles the quorums.

        No task per replica and write: the link calls `settle` when the batch
        that carried these records was answered or failed. A replica that is
        down, or does not answer, gets the records as hints (a task, but only then).
        """
        batch = [records[i] for i in indexes]

        def settle(outcomes: list[ApplyOutcome] | None, error: Exception | None) -> None:
            _count_write_outcomes(replica, indexes, pending, outcomes)
            if outcomes is None:
                if error is not None:
                    self.stats.replica_write_failures += 1
                    log.debug("replica write to %s failed: %s", replica, error)
                if self._hints is not None:
                    self._background.start_soon(self._hint, replica, batch)

        link = None if self.cluster.is_down(replica) else self.cluster.link(replica)
        if link is None:
            settle(None, None)
        else:
            link.submit_apply(batch, settle)

    async def _hint(self, replica: str, records: list[Record]) -> None:
        assert self._hints is not None
        await self._hints.store(replica, records)
        self.stats.hinted += len(records)

    # ----- reads --------------------------------------------------------------------------

    async def _read(self, keys: list[bytes], consistency: Consistency) -> list[Record | None]:
        if consistency is Consistency.LOCAL:
            return self.read_local(keys)
        placements = self._placements(keys, consistency)
        if self._sole_replica_of_all(placements):
            return self.read_local(keys)  # nobody else holds a copy to compare or repair
        quorums = [ReadQuorum(*placement) for placement in placements]
        pending = _Pending(quorums)
        # Ask R replicas (our own copy first), not all N: the rest are asked only if
        # one of those fails. Replicas left out are kept in step by anti-entropy.
        spares: list[list[str]] = []
        by_replica: dict[str, list[int]] = {}
        for index, quorum in enumerate(quorums):
            candidates = self._read_order(quorum.replicas)
            for replica in candidates[: quorum.required]:
                by_replica.setdefault(replica, []).append(index)
            spares.append(candidates[quorum.required :])
        read = _Read(keys, pending, spares)
        read.finished = _Countdown(
            len(by_replica), lambda: self._read_repair(keys, quorums), self._background
        )
        local = by_replica.pop(self.node_id, None)
        for replica, indexes in by_replica.items():
            self._ask(replica, indexes, read)
        if local is not None:
            self._ask(self.node_id, local, read)
        await self._await(pending, "read")
        wall = self._wall_ms()
        for quorum in quorums:
            if quorum.result is not None:
                # A coordinator that read a version stamps later writes above it.
                self.clock.observe(quorum.result.version, wall)
        failed = [q for q in quorums if not q.succeeded]
        if failed:
            quorum = failed[0]
            raise UnavailableError(
                f"needed {quorum.required} replica answers, got {len(quorum.answers)} "
                f"(failed: {', '.join(sorted(quorum.failed))})"
            )
        return [quorum.result for quorum in quorums]

    def _read_order(self, replicas: tuple[str, ...]) -> list[str]:
        """Replicas to read from, best first: ourselves, then live peers in random order."""
        peers = [r for r in replicas if r != self.node_id and not self.cluster.is_down(r)]
        self._rng.shuffle(peers)
        return [self.node_id, *peers] if self.node_id in replicas else peers

    def _ask(self, replica: str, indexes: list[int], read: _Read) -> None:
        """Ask one replica for the keys of `indexes`; its answer (now, for our own
        copy, or when its link settles) is counted by `_answered`. No task per replica."""
        wanted = [read.keys[i] for i in indexes]
        if replica == self.node_id:
            self._answered(replica, indexes, read, self.read_local(wanted), None)
            return
        link = None if self.cluster.is_down(replica) else self.cluster.link(replica)
        if link is None:
            self._answered(replica, indexes, read, None, None)
            return

        def settle(answers: list[Record | None] | None, error: Exception | None) -> None:
            self._answered(replica, indexes, read, answers, error)

        link.submit_read(wanted, settle)

    def _answered(
        self,
        replica: str,
        indexes: list[int],
        read: _Read,
        answers: list[Record | None] | None,
        error: Exception | None,
    ) -> None:
        if error is not None:
            self.stats.replica_read_failures += 1
            log.debug("replica read from %s failed: %s", replica, error)
        quorums: list[ReadQuorum] = read.pending.quorums  # type: ignore[assignment]
        retry: dict[str, list[int]] = {}
        wall = self._wall_ms() if answers is not None and replica != self.node_id else 0
        for position, i in enumerate(indexes):
            if answers is None:
                quorums[i].fail(replica)
                if read.spares[i]:
                    retry.setdefault(read.spares[i].pop(0), []).append(i)
            else:
                record = answers[position]
                if record is not None and replica != self.node_id:
                    # A peer's answer is checked like anything it sends: one that fails
                    # counts as "not there", so it is neither returned, observed by the
                    # clock nor spread by read repair (which sends that replica the
                    # newest valid copy instead).
                    record = self._valid_answer(record, read.keys[i], wall, replica)
                quorums[i].answer(replica, record)
        # A failed replica is replaced by a spare one, so R answers can still come.
        assert read.finished is not None
        read.finished.add(len(retry))
        for spare, spare_indexes in retry.items():
            self._ask(spare, spare_indexes, read)
        read.pending.check()
        read.finished.one_done()

    def _valid_answer(self, record: Record, key: bytes, wall: int, replica: str) -> Record | None:
        try:
            if record.key != key:
                raise InvalidRequestError(
                    "a Read answer carries a record of another key", Reason.WRONG_KEY
                )
            self.limits.check_version(record.version, wall, "record.version")
        except InvalidRequestError as error:
            self.reject("Read", error, replica)
            return None
        return record

    async def _read_repair(self, keys: list[bytes], quorums: list[ReadQuorum]) -> None:
        """Send the newest record to every replica that answered with an older one."""
        fixes: dict[str, list[Record]] = {}
        for quorum in quorums:
            for replica, record in quorum.stale().items():
                fixes.setdefault(replica, []).append(record)
        for replica, records in fixes.items():
            self.stats.read_repairs += len(records)
            try:
                if replica == self.node_id:
                    await self.apply_replicated(records, "read repair", "a replica's answer")
                else:
                    link = self.cluster.link(replica)
                    if link is not None:
                        await link.apply(records)
            except PeerUnavailableError:
                pass  # anti-entropy will catch up

    # ----- shared -------------------------------------------------------------------------

    def _sole_replica_of_all(self, placements: list[tuple[tuple[str, ...], int]]) -> bool:
        """Whether this node is the only replica of every key (a one-node ring, RF=1)."""
        here = (self.node_id,)
        return all(replicas == here for replicas, _ in placements)

    def _check_joined(self) -> None:
        if self.cluster.joining:
            raise UnavailableError(
                f"{self.node_id} has not joined its cluster yet (no peer has answered; "
                "retrying): it does not know where keys belong; nothing was written"
            )

    def _placements(
        self, keys: Sequence[bytes], consistency: Consistency
    ) -> list[tuple[tuple[str, ...], int]]:
        """Each key's replicas and how many must answer, or an error if that cannot be.

        The ring (rebuilt-or-not by Cluster.ring, which sorts the member set) is
        fetched once per request, and each distinct replica list is checked
        once: a BatchPut of 100 keys used to pay both per key.
        """
        if not keys:
            return []
        self._check_joined()
        ring = self.cluster.ring
        factor = self.cluster.replication_factor
        required = consistency.required(factor)
        checked: set[tuple[str, ...]] = set()
        placements = []
        for key in keys:
            replicas = ring.preference_list(key)
            if replicas not in checked:
                self._check_placement(replicas, consistency, factor, required)
                checked.add(replicas)
            placements.append((replicas, required))
        return placements

    def _check_placement(
        self, replicas: tuple[str, ...], consistency: Consistency, factor: int, required: int
    ) -> None:
        if len(replicas) < required:
            raise UnsatisfiableError(
                f"{consistency.name} needs {required} of {factor} replicas but the ring has "
                f"{len(replicas)} node(s); add nodes or lower REPLICATION_FACTOR"
            )
        reachable = [r for r in replicas if r == self.node_id or not self.cluster.is_down(r)]
        if len(reachable) < required:
            down = sorted(set(replicas) - set(reachable))
            raise UnavailableError(
                f"{consistency.name} needs {required} replicas, {len(reachable)} reachable "
                f"({', '.join(down)} down); nothing was written"
            )

    async def _await(self, pending: _Pending, what: str) -> None:
        pending.check()
        try:
            with trio.fail_after(self._timeout):
                await pending.decided.wait()
        except trio.TooSlowError:
            raise TimedOutError(
                f"replicas did not answer the {what} within {self._timeout}s; "
                "it may or may not have been applied"
            ) from None


@dataclass
class _Read:
    """One read in progress: its keys, quorums, spare replicas per key, and completion."""

    keys: list[bytes]
    pending: _Pending
    spares: list[list[str]]
    finished: _Countdown | None = None


class _Countdown:
    """Starts `then` in `nursery` once `one_done` has been called `count` times."""

    def __init__(
        self, count: int, then: Callable[[], Awaitable[None]], nursery: trio.Nursery
    ) -> None:
        self._left = count
        self._then = then
        self._nursery = nursery

    def add(self, count: int) -> None:
        self._left += count

    def one_done(self) -> None:
        self._left -= 1
        if self._left == 0:
            self._nursery.start_soon(self._then)
