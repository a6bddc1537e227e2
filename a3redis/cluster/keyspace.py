"""The node's keyspace: it coordinates client requests and serves its own copy.

Rules: the decisions are a3redis.core.coordinator's (placement, versions,
what a replica's answer, failure or timeout does, read repair, scan merge);
this shell validates a request against the limits, asks the core for a
plan, carries it out (its own store directly, peers through batched links,
hints through the hint store), keeps the request's deadline and reports what
the plan decided. Levels a request leaves unset resolve here, once for every
front end, to READ_CONSISTENCY / WRITE_CONSISTENCY. Replica work that
outlives a request (the rest of the replicas, hints, read repair) runs in
the node's background nursery, bounded by the peer timeout. `LOCAL` touches
only this node's store.

A request is carried out without a task of its own: its own copy goes to
the store's group commit, the peers' answers arrive on their links, and each
calls back into the plan; once the plan is decided the request's `done`
callback gets the answer (`*_then`, what the Redis front end's one reactor
task uses). The request timeout is kept by one queue of waiters in deadline
order (every request has the same timeout) and one task that expires them.
The awaitable API (`get`, `batch_write`...) waits for the same callback.
Writes started through `batch_write_then` in one turn of the event loop
(one pass of the Redis front end over its ready connections) are gathered
per consistency level and planned together when the turn ends, by one
task: one placement check, one plan, one stage into the store's commit for
all of them, while each request keeps its own answer (the core's plan
parts). Each request is answered as soon as its own keys are decided.

Nothing another node sends reaches the store or the clock unchecked
(core.validation): a record that fails is answered REJECTED, a read answer
that fails counts as "not there", and both are counted and logged at a
limited rate. A stored record whose version is further ahead of this node's
clock than MAX_CLOCK_SKEW (only an older release let one in) is no version:
reads and repair do not see it, and any write of its key replaces it.

Expiry (core.expiry): a write may ask for one (`Expiry`: a TTL counted from
its version, or an absolute time), checked here. Every read the client API
answers (get, batch_get, the `*_then` forms, scans) is judged by this node's
clock after the newest version is chosen: an expired record comes back as a
tombstone of its version, so every front end reads it as missing.
`expire` and `persist` read the key, let the core decide, and write the
same value again with the new expiry under a new version.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeVar

import trio

from a3redis.cluster.peers import PeerUnavailableError
from a3redis.cluster.topology import Topology
from a3redis.core.consistency import Consistency
from a3redis.core.coordinator import (
    Coordinator,
    Placement,
    ReadPlan,
    WritePlan,
    held_here_alone,
    next_start,
    timed_out,
)
from a3redis.core.errors import (
    RequestError,
    TimedOutError,
    UnavailableError,
    UnsatisfiableError,
    WriteRejectedError,
)
from a3redis.core.expiry import (
    NEVER,
    Condition,
    Decision,
    Expiry,
    decide_expire,
    decide_persist,
    is_live,
    visible,
)
from a3redis.core.hlc import HybridLogicalClock, Version
from a3redis.core.record import ApplyOutcome, Record, outcome
from a3redis.core.rejections import Rejections
from a3redis.core.streaming import StreamPage
from a3redis.core.validation import MAX_RESPONSE_BYTES, InvalidRequestError, Limits, Reason
from a3redis.storage.store import Store

__all__ = [
    "Keyspace",
    "TimedOutError",
    "UnavailableError",
    "UnsatisfiableError",
    "WriteRejectedError",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


class HintSink(Protocol):
    async def store(self, node_id: str, records: Sequence[Record]) -> None: ...


@dataclass
class KeyspaceStats:
    read_repairs: int = 0
    replica_write_failures: int = 0
    replica_read_failures: int = 0
    hinted: int = 0
    expired_reads: int = 0  # keys whose newest record had expired, answered as missing
    # Plans made for writes gathered from several requests (batch_write_then), and for
    # those planned alone after their shared plan could not be made.
    write_plans: int = 0
    # Plans made for reads that ask peers, gathered from several requests (batch_get_then).
    read_plans: int = 0


class _Waiter:
    """A request decided by callbacks instead of a waiting task.

    `set` (its plan decided), `abort` (its own copy failed) or the request
    timeout (Keyspace._expire_waiters) calls `finish` once: with None when
    decided, else the error.
    """

    __slots__ = ("deadline", "finish", "fired", "what")

    def __init__(
        self, finish: Callable[[RequestError | None], None], deadline: float, what: str
    ) -> None:
        self.finish: Callable[[RequestError | None], None] | None = finish
        self.deadline = deadline
        self.what = what  # "read" or "write", for the timeout's message
        self.fired = False

    def set(self) -> None:
        self.abort(None)

    def abort(self, error: RequestError | None) -> None:
        finish = self.finish
        if finish is not None:
            self.finish = None  # what the request holds is freed now, not at its deadline
            self.fired = True
            finish(error)


class _GatheredReads:
    """Reads of several requests at one consistency level, each placed, waiting to be
    planned together."""

    __slots__ = ("answers", "ends", "keys", "placements")

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.placements: list[Placement] = []
        self.ends: list[int] = []  # where each request's keys end
        self.answers: list[Callable[[list[Record | None] | RequestError], None]] = []

    def add(
        self,
        keys: Sequence[bytes],
        placements: Sequence[Placement],
        done: Callable[[list[Record | None] | RequestError], None],
    ) -> None:
        self.keys.extend(keys)
        self.placements.extend(placements)
        self.ends.append(len(self.keys))
        self.answers.append(done)


class _Gathered:
    """Writes of several requests at one consistency level, waiting to be planned."""

    __slots__ = ("answers", "ends", "expiries", "pairs")

    def __init__(self) -> None:
        self.pairs: list[tuple[bytes, bytes | None]] = []
        self.expiries: list[Expiry] | None = None  # None: no write asked for one
        self.ends: list[int] = []  # where each request's pairs end
        self.answers: list[Callable[[list[Version] | RequestError], None]] = []

    def add(
        self,
        writes: Sequence[tuple[bytes, bytes | None]],
        expiries: Sequence[Expiry] | None,
        done: Callable[[list[Version] | RequestError], None],
    ) -> None:
        if expiries is not None and self.expiries is None:
            self.expiries = [NEVER] * len(self.pairs)
        self.pairs.extend(writes)
        if self.expiries is not None:
            self.expiries.extend(expiries if expiries is not None else [NEVER] * len(writes))
        self.ends.append(len(self.pairs))
        self.answers.append(done)

    def requests(
        self,
    ) -> Iterator[
        tuple[
            list[tuple[bytes, bytes | None]],
            list[Expiry] | None,
            Callable[[list[Version] | RequestError], None],
        ]
    ]:
        """Each request's writes, expiries and answer, as it was added."""
        start = 0
        for end, done in zip(self.ends, self.answers, strict=True):
            expiries = None if self.expiries is None else self.expiries[start:end]
            yield self.pairs[start:end], expiries, done
            start = end


class Keyspace:
    def __init__(
        self,
        store: Store,
        clock: HybridLogicalClock,
        wall_ms: Callable[[], int],
        limits: Limits,
        cluster: Topology,
        background: trio.Nursery,
        request_timeout: float,
        hints: HintSink | None = None,
        read_consistency: Consistency = Consistency.QUORUM,
        write_consistency: Consistency = Consistency.QUORUM,
    ) -> None:
        self.store = store
        self.clock = clock
        self.limits = limits
        self.cluster = cluster
        # The levels a request that names none gets (READ_/WRITE_CONSISTENCY),
        # resolved here once for every front end.
        self.read_consistency = read_consistency
        self.write_consistency = write_consistency
        self.coordinator = Coordinator(clock, limits, cluster)
        self.stats = KeyspaceStats()
        # This node's wall clock (with the test-only offset), in milliseconds: the
        # function itself, as every request reads it.
        self.wall_ms = wall_ms
        self._background = background
        self._timeout = request_timeout
        self._hints = hints
        self.rejections = Rejections()
        # Requests decided by callbacks, in deadline order (see _expire_waiters).
        self._waiters: deque[_Waiter] = deque()
        self._expiring = False
        # Writes and peer reads gathered this turn, per level, and what wakes their
        # planner task.
        self._gathered: dict[Consistency, _Gathered] = {}
        self._gathered_reads: dict[Consistency, _GatheredReads] = {}
        self._gathering: trio.Event | None = None
        self._reseed_clock()

    @property
    def node_id(self) -> str:
        return self.clock.node_id

    def _reseed_clock(self) -> None:
        """After a restart, never issue a version below one already stored.

        Stored versions beyond the clock-skew bound are left out: the clock
        would otherwise start there (for good, at 2^64-1 ms) and every version
        it issued would be refused by the other replicas.
        """
        wall = self.wall_ms()
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
        self,
        key: bytes,
        value: bytes,
        consistency: Consistency | None,
        after: Version | None = None,
        expiry: Expiry = NEVER,
    ) -> Version:
        """Write `value`; with an `expiry` the key reads as missing once it passes."""
        self.limits.check_key(key)
        self.limits.check_value(value)
        if expiry is NEVER:
            return (await self._write([(key, value)], consistency, after))[0]
        self.limits.check_expiry(expiry, self.wall_ms(), "put")
        return (await self._write([(key, value)], consistency, after, [expiry]))[0]

    async def delete(
        self, key: bytes, consistency: Consistency | None, after: Version | None = None
    ) -> Version:
        self.limits.check_key(key)
        return (await self._write([(key, None)], consistency, after))[0]

    async def batch_put(
        self,
        pairs: Sequence[tuple[bytes, bytes]],
        consistency: Consistency | None,
        after: Version | None = None,
    ) -> list[Version]:
        return await self.batch_write(pairs, consistency, after)

    async def batch_write(
        self,
        writes: Sequence[tuple[bytes, bytes | None]],
        consistency: Consistency | None,
        after: Version | None = None,
        expiries: Sequence[Expiry] | None = None,
    ) -> list[Version]:
        """Puts and deletes (value None) in one batch; a key written twice keeps its last.
        `expiries`, if given, holds one Expiry per write (NEVER for none; deletes take NEVER)."""
        self.limits.check_batch(len(writes))
        self.limits.check_pairs(writes)
        self._check_expiries(writes, expiries)
        return await self._write(list(writes), consistency, after, expiries)

    def _check_expiries(
        self, writes: Sequence[tuple[bytes, bytes | None]], expiries: Sequence[Expiry] | None
    ) -> None:
        if expiries is None:
            return
        if len(expiries) != len(writes):
            raise InvalidRequestError(
                f"{len(expiries)} expiries for {len(writes)} writes; give one per write",
                Reason.EXPIRY,
            )
        wall = self.wall_ms()
        for (_, value), expiry in zip(writes, expiries, strict=True):
            if expiry != NEVER:
                if value is None:
                    raise InvalidRequestError("a delete cannot carry an expiry", Reason.EXPIRY)
                self.limits.check_expiry(expiry, wall)

    async def expire(
        self,
        key: bytes,
        expiry: Expiry,
        condition: Condition = Condition.ALWAYS,
        read_consistency: Consistency | None = None,
        write_consistency: Consistency | None = None,
    ) -> bool:
        """EXPIRE (core.expiry.decide_expire): whether the expiry was set (or the key
        deleted, for an expiry already past)."""
        changed: bool = await _settled(
            partial(self.expire_then, key, expiry, condition, read_consistency, write_consistency)
        )
        return changed

    async def persist(
        self,
        key: bytes,
        read_consistency: Consistency | None = None,
        write_consistency: Consistency | None = None,
    ) -> bool:
        """PERSIST (core.expiry.decide_persist): whether an expiry was removed."""
        changed: bool = await _settled(
            partial(self.persist_then, key, read_consistency, write_consistency)
        )
        return changed

    async def get(self, key: bytes, consistency: Consistency | None) -> Record | None:
        """The newest record for `key`, or None; a tombstone means "deleted"."""
        self.limits.check_key(key)
        return (await self._read([key], consistency))[0]

    async def batch_get(
        self,
        keys: Sequence[bytes],
        consistency: Consistency | None,
        response_limit: int | None = MAX_RESPONSE_BYTES,
    ) -> list[Record | None]:
        """The newest record of each key; `response_limit` bounds the answer's keys and
        values (None: the front end bounds what it sends itself)."""
        results: list[Record | None] = await _settled(
            partial(self.batch_get_then, keys, consistency)
        )
        if response_limit is not None:
            self.limits.check_response(results, "BatchGet", response_limit)
        return results

    # ----- without a task (a front end serving many connections from one task) ----------

    def batch_get_then(
        self,
        keys: Sequence[bytes],
        consistency: Consistency | None,
        done: Callable[[list[Record | None] | RequestError], None],
    ) -> None:
        """`batch_get` (no response limit) answered through `done`: at once when this
        node alone holds every key, else once the replicas decide or the request times
        out; a read that asks peers is planned at the end of this turn of the event
        loop, with the others at its level started in it. A request that fails the
        limits, or cannot be placed, raises here, and `done` is not called."""
        self.limits.check_batch(len(keys))
        self.limits.check_keys(keys)
        # Each distinct key is read once, however often it is asked for.
        distinct = list(dict.fromkeys(keys))
        answer = done
        if len(distinct) != len(keys):

            def answer(records: list[Record | None] | RequestError) -> None:
                if isinstance(records, RequestError):
                    done(records)
                    return
                found = dict(zip(distinct, records, strict=True))
                done([found[key] for key in keys])

        level = consistency or self.read_consistency
        placements = self.coordinator.place(distinct, level)
        if held_here_alone(placements, self.node_id):
            # Nobody else holds a copy to compare or repair.
            answer(self._visible(self.read_local(distinct)))
            return
        gathered = self._gathered_reads.get(level)
        if gathered is None:
            gathered = self._gathered_reads[level] = _GatheredReads()
        gathered.add(distinct, placements, answer)
        self._plan_at_end_of_turn()

    def batch_write_then(
        self,
        writes: Sequence[tuple[bytes, bytes | None]],
        consistency: Consistency | None,
        done: Callable[[list[Version] | RequestError], None],
        expiries: Sequence[Expiry] | None = None,
    ) -> None:
        """`batch_write` answered through `done` once it is decided; planned at the end
        of this turn of the event loop, with the other writes at its level started in
        it. A request that fails the limits raises here, and `done` is not called."""
        self.limits.check_batch(len(writes))
        self.limits.check_pairs(writes)
        if expiries is not None:
            self._check_expiries(writes, expiries)
        level = consistency or self.write_consistency
        gathered = self._gathered.get(level)
        if gathered is None:
            gathered = self._gathered[level] = _Gathered()
        gathered.add(writes, expiries, done)
        self._plan_at_end_of_turn()

    def _plan_at_end_of_turn(self) -> None:
        if self._gathering is None:
            self._gathering = trio.Event()
            self._background.start_soon(self._plan_gathered)
        self._gathering.set()

    async def _plan_gathered(self) -> None:
        """Plan the writes and peer reads gathered in each turn, once the turn is over."""
        assert self._gathering is not None
        while True:
            await self._gathering.wait()
            self._gathering = trio.Event()
            reads, self._gathered_reads = self._gathered_reads, {}
            for read in reads.values():
                self.stats.read_plans += 1
                try:
                    plan = self.coordinator.plan_reads(read.keys, read.placements, read.ends)
                    self._read_plan_then(plan, read.answers)
                except Exception:  # a bug of ours: these requests fail, the node lives
                    log.exception("planning %d gathered reads failed", len(read.keys))
                    _fail_all(read.answers, "internal error planning the read")
            gathered, self._gathered = self._gathered, {}
            for level, writes in gathered.items():
                self.stats.write_plans += 1
                try:
                    self._write_then(
                        writes.pairs, level, None, writes.answers, writes.expiries, writes.ends
                    )
                except RequestError:
                    # Some request's keys cannot be placed at this level (a replica set
                    # too short or down, the node not joined): nothing was written or
                    # answered. Alone, only the requests at fault fail.
                    for pairs, expiries, done in writes.requests():
                        self._write_alone(pairs, level, expiries, done)
                except Exception:  # a bug of ours: these requests fail, the node lives
                    log.exception("planning %d gathered writes failed", len(writes.pairs))
                    _fail_all(writes.answers, "internal error planning the write")

    def _write_alone(
        self,
        pairs: list[tuple[bytes, bytes | None]],
        level: Consistency,
        expiries: list[Expiry] | None,
        done: Callable[[list[Version] | RequestError], None],
    ) -> None:
        self.stats.write_plans += 1
        try:
            self._write_then(pairs, level, None, [done], expiries)
        except RequestError as failure:
            done(failure)
        except Exception:  # a bug of ours: this request fails, the node lives
            log.exception("planning a write of %d keys failed", len(pairs))
            _fail_all([done], "internal error planning the write")

    def expire_then(
        self,
        key: bytes,
        expiry: Expiry,
        condition: Condition,
        read_consistency: Consistency | None,
        write_consistency: Consistency | None,
        done: Callable[[bool | RequestError], None],
    ) -> None:
        """`expire` answered through `done`: read the key at `read_consistency`, decide,
        write at `write_consistency`. A request that fails the limits raises here."""
        self.limits.check_key(key)
        self.limits.check_expiry(expiry, self.wall_ms(), "expire")
        self._read_modify_write(
            key,
            lambda current: decide_expire(current, self.wall_ms(), expiry, condition),
            read_consistency,
            write_consistency,
            done,
        )

    def persist_then(
        self,
        key: bytes,
        read_consistency: Consistency | None,
        write_consistency: Consistency | None,
        done: Callable[[bool | RequestError], None],
    ) -> None:
        """`persist` answered through `done`."""
        self.limits.check_key(key)
        self._read_modify_write(
            key,
            lambda current: decide_persist(current, self.wall_ms()),
            read_consistency,
            write_consistency,
            done,
        )

    def _read_modify_write(
        self,
        key: bytes,
        decide: Callable[[Record | None], Decision],
        read_consistency: Consistency | None,
        write_consistency: Consistency | None,
        done: Callable[[bool | RequestError], None],
    ) -> None:
        """Read `key`, decide on its newest record, write what was decided; a write of
        the key in between is ordered by last-write-wins (the README's EXPIRE race)."""

        def read(records: list[Record | None] | RequestError) -> None:
            if isinstance(records, RequestError):
                done(records)
                return
            try:
                changed, rewrite = decide(records[0])
                if rewrite is None:
                    done(changed)
                    return
                written = (rewrite.key, rewrite.value)
                self._write_then(
                    [written],
                    write_consistency or self.write_consistency,
                    None,
                    [
                        lambda versions: done(
                            versions if isinstance(versions, RequestError) else changed
                        )
                    ],
                    [rewrite.expiry],
                )
            except RequestError as error:
                done(error)

        self._read_then([key], read_consistency, read)

    def _answer_parts(
        self,
        plan: WritePlan | ReadPlan,
        answers: Sequence[Callable[[T | RequestError], None]],
        result: Callable[[int], T],
        what: str,
    ) -> tuple[Callable[[], None], _Waiter]:
        """For a plan that serves requests in parts (one part each): the callback that
        answers each part once its own keys are decided (`result(part)`, or the error it
        raises), to be called whenever the plan progresses, and the waiter that fails
        the parts still waiting when the request times out or is aborted."""

        def answer_decided() -> None:
            for part in plan.take_decided():
                _settle(answers[part], None, result, part)
            if plan.decided:
                waiter.set()

        def failed(failure: RequestError | None) -> None:
            if failure is not None:  # timed out (or a write's own copy failed)
                for part in plan.take_undecided():
                    answers[part](failure)

        waiter = self._waiter(failed, what)
        return answer_decided, waiter

    def _waiter(self, finish: Callable[[RequestError | None], None], what: str) -> _Waiter:
        """A waiter that fails with a timeout once the request timeout has passed."""

        def finish_and_forget(failure: RequestError | None) -> None:
            waiters = self._waiters
            while waiters and waiters[0].fired:
                waiters.popleft()
            finish(failure)

        waiter = _Waiter(finish_and_forget, trio.current_time() + self._timeout, what)
        self._waiters.append(waiter)
        if not self._expiring:
            self._expiring = True
            self._background.start_soon(self._expire_waiters)
        return waiter

    async def _expire_waiters(self) -> None:
        """Time out the waiters whose deadline passed, oldest first, while there are any.

        Every waiter gets the same timeout, so the queue is in deadline order;
        decided waiters leave it from the front as they fire.
        """
        waiters = self._waiters
        try:
            while waiters:
                head = waiters[0]
                if head.fired:
                    waiters.popleft()
                    continue
                await trio.sleep_until(head.deadline)
                now = trio.current_time()
                while waiters and (waiters[0].fired or waiters[0].deadline <= now):
                    expired = waiters.popleft()
                    if not expired.fired:
                        expired.abort(timed_out(expired.what, self._timeout))
        finally:
            self._expiring = False

    async def scan_page(
        self, start: bytes, end: bytes, prefix: bytes, limit: int, consistency: Consistency | None
    ) -> tuple[list[Record], bytes | None]:
        """Up to `limit` live records from `start` on, and where the next page starts.

        LOCAL reads this node's store. Otherwise every live ring member scans
        its own copy (tombstones included) and the pages are merged, newest
        version per key, so a key on any replica is found and a newer delete
        anywhere hides an older value. The merged page is complete only up
        to the smallest last key of the members that had more to give.
        """
        level = consistency or self.read_consistency
        if level is Consistency.LOCAL:
            records, last = self.local_scan(start, end, prefix, limit, include_tombstones=False)
            if self.store.expiring_keys:
                now = self.wall_ms()
                records = [record for record in records if is_live(record, now)]
            return records, (next_start(last) if last is not None else None)
        members = self.coordinator.scan_members(level)
        pages = await self._collect_scans(members, start, end, prefix, limit)
        live, following, refused = self.coordinator.merge_scan(pages, limit, self.wall_ms())
        for member, error in refused:
            self.reject("LocalScan", error, member)
        return live, following

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
            raise timed_out("scan", self._timeout) from None
        except BaseExceptionGroup as group:
            unavailable = group.subgroup(UnavailableError)
            if unavailable is not None:
                raise unavailable.exceptions[0] from None
            raise
        return pages

    # ----- replica side (called by the Replica service) ----------------------------------

    async def apply_replicated(
        self,
        records: Sequence[Record],
        endpoint: str = "Apply",
        source: str = "a peer",
        payloads: Sequence[bytes] | None = None,
    ) -> list[ApplyOutcome]:
        """Apply records another node sent (a write, repair, handoff, a hint), each checked
        (with their log payloads, one each, if they came as such).

        A record that fails the checks is answered REJECTED and neither
        stored nor observed by the clock; the others are applied as usual.
        """
        wall = self.wall_ms()  # once per batch: a batch is applied at one instant
        valid = [self._acceptable(record, wall, endpoint, source) for record in records]
        if all(valid):
            return await self._apply(records, wall, payloads)
        kept = [index for index, ok in enumerate(valid) if ok]
        applied = iter(
            await self._apply(
                [records[i] for i in kept],
                wall,
                None if payloads is None else [payloads[i] for i in kept],
            )
        )
        return [next(applied) if ok else ApplyOutcome.REJECTED for ok in valid]

    async def apply_stream_page(self, page: StreamPage, checked_at: int) -> list[ApplyOutcome]:
        """Apply the records of a Stream page that `check_page` accepted at wall time
        `checked_at` (every record's checks passed there: they are not made again).

        The clock passes the page's greatest version only: passing a version is
        taking the greater of two, so that is where passing each one in turn ends.
        """
        records = page.records
        if not records:
            return []
        self.clock.observe(max(record.version for record in records), checked_at)
        return await self._apply_own(records, checked_at, page.payloads)

    def _acceptable(self, record: Record, wall: int, endpoint: str, source: str) -> bool:
        try:
            self.limits.check_record(record, wall)
        except InvalidRequestError as error:
            self.reject(endpoint, error, source)
            return False
        return True

    async def _apply(
        self, records: Sequence[Record], wall: int, payloads: Sequence[bytes] | None = None
    ) -> list[ApplyOutcome]:
        """Apply records that passed the checks; the clock passes each first."""
        for record in records:
            self.clock.observe(record.version, wall)
        return await self._apply_own(records, wall, payloads)

    def read_local(self, keys: Sequence[bytes]) -> list[Record | None]:
        """This node's own records of `keys`; one beyond the clock-skew bound is not there."""
        bound = self.limits.clock_bound(self.wall_ms())
        get = self.store.get
        return [
            None if (record := get(key)) is None or record.version.wall_ms > bound else record
            for key in keys
        ]

    def read_local_packed(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """`read_local`, each record as a Stream page carries it (codec.pack_entries)."""
        return self.store.packed(keys, self.limits.clock_bound(self.wall_ms()))

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
        bound = self.limits.clock_bound(self.wall_ms())
        return [r for r in records[:fits] if r.version.wall_ms <= bound], last

    # ----- writes -------------------------------------------------------------------------

    async def _write(
        self,
        pairs: list[tuple[bytes, bytes | None]],
        consistency: Consistency | None,
        after: Version | None,
        expiries: Sequence[Expiry] | None = None,
    ) -> list[Version]:
        versions: list[Version] = await _settled(
            lambda done: self._write_then(
                pairs, consistency or self.write_consistency, after, [done], expiries
            )
        )
        return versions

    def _write_then(
        self,
        pairs: list[tuple[bytes, bytes | None]],
        level: Consistency,
        after: Version | None,
        answers: list[Callable[[list[Version] | RequestError], None]],
        expiries: Sequence[Expiry] | None = None,
        ends: list[int] | None = None,
    ) -> None:
        """Write `pairs` (with `expiries`, checked), the writes of one request or of
        several (`ends`: where each one's pairs end; `answers`: one callback each).
        Each request's callback gets its versions once W replicas acknowledged each
        of its keys (durable here alone when this node is the only replica), or the
        error, or the timeout. A plan that cannot be made raises (nothing is called)."""
        wall = self.wall_ms()
        plan = self.coordinator.plan_write(pairs, level, after, wall, expiries, ends)
        bound = self.limits.clock_bound(wall)
        if plan.only_here:
            # No quorum to count: the store's answer is the write's.
            staged = self.store.stage_many(plan.records, bound)

            def stored(failure: RequestError | None) -> None:
                result = partial(plan.stored_here, staged.accepted)
                for part, done in enumerate(answers):
                    _settle(done, failure, result, part)

            staged.when_durable(stored)
            return

        answer_decided, waiter = self._answer_parts(plan, answers, plan.result, "write")
        for replica, records in plan.unreachable.items():
            self._hint(replica, records)
        for replica, indexes in plan.peers.items():
            self._replicate_to_peer(replica, indexes, plan, answer_decided)
        if plan.local is not None:
            # Our own copy goes to the store's next commit while the peers' calls are out.
            local = plan.local
            own = plan.records_of(local)
            try:
                staged_own = self.store.stage_many(own, bound)
            except RequestError as error:
                answer_decided()  # parts the peers already decided keep their answer
                waiter.abort(error)
                return

            def durable(failure: RequestError | None) -> None:
                if failure is not None:
                    answer_decided()
                    waiter.abort(failure)
                    return
                plan.acknowledged(self.node_id, local, self._outcomes(own, staged_own.accepted))
                answer_decided()

            staged_own.when_durable(durable)
        else:
            answer_decided()

    async def _apply_own(
        self, records: Sequence[Record], wall: int, payloads: Sequence[bytes] | None = None
    ) -> list[ApplyOutcome]:
        """Apply records whose versions this node's clock has already passed (with their
        log payloads, if they came as such: Store.stage_many)."""
        stored = await self.store.apply_many(records, self.limits.clock_bound(wall), payloads)
        return self._outcomes(records, stored)

    def _outcomes(self, records: Sequence[Record], stored: Sequence[bool]) -> list[ApplyOutcome]:
        """What applying `records` did, given which of them the store kept."""
        latest = self.store.latest
        return [
            ApplyOutcome.STORED if was_stored else outcome(record, False, latest(record.key))
            for record, was_stored in zip(records, stored, strict=True)
        ]

    def _replicate_to_peer(
        self,
        replica: str,
        indexes: list[int],
        plan: WritePlan,
        progress: Callable[[], None] | None,
    ) -> None:
        """Queue a peer's records on its link; the link's answer settles the plan.

        No task per replica and write: the link calls `settle` when the batch
        that carried these records was answered or failed. A replica that
        does not answer gets the records as hints (a task, but only then).
        """

        def settle(outcomes: list[ApplyOutcome] | None, error: Exception | None) -> None:
            if outcomes is None:
                if error is not None:
                    self.stats.replica_write_failures += 1
                    log.debug("replica write to %s failed: %s", replica, error)
                self._hint(replica, plan.failed(replica, indexes))
            else:
                plan.acknowledged(replica, indexes, outcomes)
            if progress is not None:
                progress()

        link = self.cluster.link(replica)
        if link is None:
            settle(None, None)
        else:
            link.submit_apply(plan.records_of(indexes), settle)

    def _hint(self, replica: str, records: list[Record]) -> None:
        if self._hints is not None:
            self._background.start_soon(self._store_hints, replica, records)

    async def _store_hints(self, replica: str, records: list[Record]) -> None:
        assert self._hints is not None
        await self._hints.store(replica, records)
        self.stats.hinted += len(records)

    # ----- reads --------------------------------------------------------------------------

    async def _read(
        self, keys: list[bytes], consistency: Consistency | None
    ) -> list[Record | None]:
        records: list[Record | None] = await _settled(partial(self._read_then, keys, consistency))
        return records

    def _read_then(
        self,
        keys: list[bytes],
        consistency: Consistency | None,
        done: Callable[[list[Record | None] | RequestError], None],
    ) -> None:
        """Read `keys` (distinct); `done` gets the newest records once the replicas
        decide (at once when only this node holds them), or the error, or the timeout."""
        plan = self.coordinator.plan_read(keys, consistency or self.read_consistency)
        if plan.only_here:
            # Nobody else holds a copy to compare or repair.
            done(self._visible(self.read_local(keys)))
            return
        self._read_plan_then(plan, [done])

    def _read_plan_then(
        self, plan: ReadPlan, answers: list[Callable[[list[Record | None] | RequestError], None]]
    ) -> None:
        """Carry out a plan that asks peers; each part's callback gets its newest
        records once its own keys are decided, or the error, or the timeout."""

        def result(part: int) -> list[Record | None]:
            wall = self.wall_ms()
            return self._visible(plan.result(wall, part), wall)

        answer_decided, _ = self._answer_parts(plan, answers, result, "read")
        asks = plan.asks
        local = asks.pop(self.node_id, None)
        for replica, indexes in asks.items():
            self._ask(replica, indexes, plan, answer_decided)
        if local is not None:
            self._ask(self.node_id, local, plan, answer_decided)

    def _ask(
        self, replica: str, indexes: list[int], plan: ReadPlan, progress: Callable[[], None]
    ) -> None:
        """Ask one replica for the keys of `indexes`; its answer (now, for our own
        copy, or when its link settles) goes to the plan, then `progress` is called.
        No task per replica."""
        keys = plan.keys
        wanted = [keys[i] for i in indexes]
        if replica == self.node_id:
            self._answered(replica, indexes, plan, progress, self.read_local(wanted), None)
            return
        link = self.cluster.link(replica)
        if link is None:
            self._answered(replica, indexes, plan, progress, None, None)
            return

        def settle(answers: list[Record | None] | None, error: Exception | None) -> None:
            self._answered(replica, indexes, plan, progress, answers, error)

        link.submit_read(wanted, settle)

    def _answered(
        self,
        replica: str,
        indexes: list[int],
        plan: ReadPlan,
        progress: Callable[[], None],
        answers: list[Record | None] | None,
        error: Exception | None,
    ) -> None:
        if answers is None:
            if error is not None:
                self.stats.replica_read_failures += 1
                log.debug("replica read from %s failed: %s", replica, error)
            for spare, spare_indexes in plan.failed(replica, indexes).items():
                self._ask(spare, spare_indexes, plan, progress)
        else:
            wall = self.wall_ms() if replica != self.node_id else 0
            for refused in plan.answered(replica, indexes, answers, wall):
                self.reject("Read", refused, replica)
        progress()
        repairs = plan.take_repairs()
        if repairs:
            self._background.start_soon(self._read_repair, repairs)

    def _visible(self, records: list[Record | None], wall: int = 0) -> list[Record | None]:
        """The newest records as reads answer them (core.expiry.visible): an expired
        one as a tombstone of its version, counted."""
        now = wall or self.wall_ms()
        answers = records
        for index, record in enumerate(records):
            if record is not None and record.expires_at_ms:
                shown = visible(record, now)
                if shown is not record:
                    if answers is records:
                        answers = list(records)
                    answers[index] = shown
                    self.stats.expired_reads += 1
        return answers

    async def _read_repair(self, fixes: dict[str, list[Record]]) -> None:
        """Send the newest record to every replica that answered with an older one."""
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


def _fail_all(answers: Sequence[Callable[[T | RequestError], None]], what: str) -> None:
    """Answer each request `what` failed, after a bug of ours; one of them may have been
    answered already (the bug struck midway), so an answer that fails is only logged."""
    failure = RequestError(f"{what}; its outcome is unknown")
    for done in answers:
        try:
            done(failure)
        except Exception:
            log.exception("could not answer a request after a failure")


def _settle(
    done: Callable[[T | RequestError], None],
    failure: RequestError | None,
    result: Callable[[int], T],
    part: int,
) -> None:
    """Answer a decided request, part `part` of its plan: `failure`, else
    `result(part)` (or the error it raises)."""
    if failure is None:
        try:
            answer = result(part)
        except RequestError as error:
            failure = error
        else:
            done(answer)
            return
    done(failure)


async def _settled(start: Callable[[Callable[[T | RequestError], None]], None]) -> T:
    """Start a request that answers through a callback, and wait for its answer."""
    answers: list[T | RequestError] = []
    answered = trio.Event()

    def done(answer: T | RequestError) -> None:
        answers.append(answer)
        answered.set()

    start(done)
    if not answers:
        await answered.wait()
    answer = answers[0]
    if isinstance(answer, RequestError):
        raise answer
    return answer
