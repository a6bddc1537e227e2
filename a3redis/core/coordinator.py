"""The rules of a quorum request, as the coordinating node follows them (no I/O).

Any node coordinates any request. A shell (the node's trio code, or the
simulator) asks this module for a plan, sends what the plan says to whom,
feeds every answer, failure and timeout back, and reports what the plan
decides. The plan never waits and never sends.

1. Placement. A node that has not heard from its cluster refuses: it does
   not know where keys belong. Each key lives on the replicas of its ring
   preference list; the consistency level says how many of them must
   answer. A level the ring can never meet is unsatisfiable; one its live
   replicas cannot meet now is unavailable; either way nothing is sent.
   LOCAL places every key on this node alone. While the ring changes
   (a3redis.core.transition) reads are placed on the ring of the moment and
   writes on the replicas of both configurations, with W needed in each.
2. Versions come last: they are stamped only after every check that could
   still refuse the request. A write asked to expire gets its expiry from
   its own version (core.expiry.Expiry.resolve). A client that saw a
   version (`after`) makes the clock pass it first, so its next write is
   later whatever our wall clock says; a version too far ahead is refused
   rather than observed.
3. A write goes to every replica of each key: our own copy is written by the
   shell while the peers' calls are out. A replica's answer counts as an
   acknowledgement (it stored the record, or already held that very
   version), a loss (it holds a newer version), or a failure (it refused
   the record, failed, or is known to be down). The write is decided once
   every key's quorum has W acknowledgements or can no longer get them; it
   succeeded only if every key got W. A replica that failed gets its
   records later as hints. Several clients' writes may share one plan (the
   shell gathers those started together): each keeps its own records (a
   `part`), is decided as soon as its own keys are, and succeeds or fails
   on its own keys alone, as if it had been planned by itself. A shared
   plan that cannot be placed is refused whole, nothing stamped; the shell
   then plans each request alone, so only those at fault are refused.
4. A read asks R replicas of each key, our own copy first, then live peers
   in this node's fixed order, those whose link lags last (`read_order`);
   the others are spares, asked only when an asked replica fails, so R
   answers can still come. A peer's answer that fails the checks (another
   key, a version beyond the clock-skew bound) counts as "not there". Each
   key's result is the newest record among its first R answers; the
   coordinator's clock then passes every version it read. Several clients'
   reads may share one plan, each placed on its own first (so a request that
   cannot be placed is refused alone): each is a part, decided and answered
   as soon as its own keys are, as if it had been planned by itself.
5. Read repair: once every asked replica has answered or failed, each one
   that answered with an older copy, or none, is sent the newest.
6. A request not decided when the shell's deadline passes timed out: its
   outcome is unknown (a write may have been applied on some replicas).
7. A scan is answered by every live ring member, each from its own copy
   with tombstones; pages merge newest-version-per-key, so a newer delete
   anywhere hides an older value, and the newest record of a key is left out
   if it has expired by the coordinator's clock (core.expiry). The merged
   page is complete only up to the smallest last key of the members that had
   more to give.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Protocol

from a3redis.core.consistency import Consistency
from a3redis.core.errors import (
    NotJoinedError,
    TimedOutError,
    UnavailableError,
    UnsatisfiableError,
    WriteRejectedError,
    replica_counts,
)
from a3redis.core.expiry import MAX_EXPIRES_AT_MS, Expiry, is_live
from a3redis.core.hlc import HybridLogicalClock, Version
from a3redis.core.quorum import JointWriteQuorum, ReadQuorum, WriteQuorum
from a3redis.core.record import ApplyOutcome, Record, supersedes
from a3redis.core.ring import Ring
from a3redis.core.validation import InvalidRequestError, Limits, Reason

Placement = tuple[tuple[str, ...], int]
"""A key's replicas, and how many of them must answer."""

WritePlacement = tuple[tuple[str, ...], int, "tuple[str, ...] | None"]
"""A key's replicas, how many must acknowledge, and while the ring changes the
replicas of the other configuration (as many of them must acknowledge too)."""


class ClusterView(Protocol):
    """What a coordinator needs to know of its cluster, as its node sees it now."""

    @property
    def joining(self) -> bool: ...

    @property
    def ring(self) -> Ring:
        """The ring reads use."""
        ...

    @property
    def other_ring(self) -> Ring | None:
        """While the ring changes, the other configuration (writes need W in both)."""
        ...

    @property
    def replication_factor(self) -> int: ...

    def is_down(self, member: str) -> bool: ...

    def is_lagging(self, member: str) -> bool:
        """Whether our link to `member` has had a call out too long (core.batcher)."""
        ...


class Coordinator:
    """One node's coordinator: it places requests and makes their plans."""

    def __init__(
        self,
        clock: HybridLogicalClock,
        limits: Limits,
        topology: ClusterView,
    ) -> None:
        self.clock = clock
        self.limits = limits
        self.topology = topology

    @property
    def node_id(self) -> str:
        return self.clock.node_id

    # ----- 1. placement -------------------------------------------------------------------

    def check_joined(self) -> None:
        if self.topology.joining:
            raise NotJoinedError(
                f"{self.node_id} has not joined its cluster yet (it waits to hear from its peers; "
                "retrying): it does not know where keys belong; nothing was written"
            )

    def place(self, keys: Sequence[bytes], consistency: Consistency) -> list[Placement]:
        """Each key's replicas and how many must answer, or an error if that cannot be.

        The ring is read once per request, and each distinct replica list is
        checked once, however many keys share it.
        """
        if consistency is Consistency.LOCAL:
            here: Placement = ((self.node_id,), 1)
            return [here] * len(keys)
        if not keys:
            return []
        self.check_joined()
        topology = self.topology
        ring = topology.ring
        factor = topology.replication_factor
        required = consistency.required(factor)
        sole = ring.sole_owners
        if sole is not None:  # one member: every key has the same replicas
            self._check_placement(sole, consistency, factor, required)
            return [(sole, required)] * len(keys)
        checked: set[tuple[str, ...]] = set()
        placements: list[Placement] = []
        for key in keys:
            replicas = ring.preference_list(key)
            if replicas not in checked:
                self._check_placement(replicas, consistency, factor, required)
                checked.add(replicas)
            placements.append((replicas, required))
        return placements

    def place_write(self, keys: Sequence[bytes], consistency: Consistency) -> list[WritePlacement]:
        """`place` for a write: while the ring changes, on both configurations."""
        other = None if consistency is Consistency.LOCAL or not keys else self.topology.other_ring
        if other is None:
            return [
                (replicas, required, None) for replicas, required in self.place(keys, consistency)
            ]
        placements = self.place(keys, consistency)
        factor = self.topology.replication_factor
        checked: set[tuple[str, ...]] = set()
        joint: list[WritePlacement] = []
        for key, (replicas, required) in zip(keys, placements, strict=True):
            others = other.preference_list(key)
            if others == replicas:
                joint.append((replicas, required, None))
                continue
            if others not in checked:
                self._check_placement(others, consistency, factor, required)
                checked.add(others)
            joint.append((replicas, required, others))
        return joint

    def _check_placement(
        self, replicas: tuple[str, ...], consistency: Consistency, factor: int, required: int
    ) -> None:
        if len(replicas) < required:
            raise UnsatisfiableError(
                f"{consistency.name} needs {required} of {factor} replicas but the ring has "
                f"{len(replicas)} node(s); add nodes or lower REPLICATION_FACTOR"
            )
        reachable = [r for r in replicas if r == self.node_id or not self.topology.is_down(r)]
        if len(reachable) < required:
            down = sorted(set(replicas) - set(reachable))
            raise UnavailableError(
                f"{consistency.name} needs {required} replicas, {len(reachable)} reachable "
                f"({', '.join(down)} down); nothing was written",
                metadata=replica_counts(required, len(reachable)),
            )

    # ----- 2-3. writes --------------------------------------------------------------------

    def plan_write(
        self,
        pairs: Sequence[tuple[bytes, bytes | None]],
        consistency: Consistency,
        after: Version | None,
        wall: int,
        expiries: Sequence[Expiry] | None = None,
        part_ends: Sequence[int] | None = None,
    ) -> WritePlan:
        """The plan of writing `pairs` (a None value deletes) at `consistency`;
        `expiries`, if given, holds each pair's (checked) expiry. `part_ends`
        splits `pairs` into the writes of several requests (where each ends;
        None: one request), each decided on its own (rule 3)."""
        if after is not None:
            # A version far ahead would drag the clock there and every later version
            # with it, past what the other replicas accept.
            self.limits.check_version(after, wall, "after")
            self.clock.observe(after, wall)
        placements = self.place_write([key for key, _ in pairs], consistency)
        now = self.clock.now
        if expiries is None:
            records = [Record(key, value, now(wall)) for key, value in pairs]
        else:
            records = []
            for (key, value), expiry in zip(pairs, expiries, strict=True):
                version = now(wall)
                records.append(Record(key, value, version, expiry.resolve(version.wall_ms)))
        return WritePlan(self.node_id, records, placements, self.topology.is_down, part_ends)

    # ----- 4-5. reads ---------------------------------------------------------------------

    def plan_read(self, keys: Sequence[bytes], consistency: Consistency) -> ReadPlan:
        """The plan of reading `keys` (distinct) at `consistency`."""
        return ReadPlan(self, keys, self.place(keys, consistency))

    def plan_reads(
        self, keys: Sequence[bytes], placements: Sequence[Placement], part_ends: Sequence[int]
    ) -> ReadPlan:
        """One plan for several requests' reads (rule 4), each request's keys (distinct)
        placed by `place` and ending at its entry of `part_ends`."""
        return ReadPlan(self, keys, placements, part_ends)

    def read_order(self, replicas: tuple[str, ...]) -> list[str]:
        """Replicas to read from, best first: ourselves, then the live peers, those
        whose link lags last, the others in this node's own fixed order.

        The fixed order (the peers after us by name first, wrapping around) sends a
        coordinator's reads of a replica set to one peer, so its calls carry larger
        batches and cost less per key (a call's cost is mostly per call); each node
        prefers another peer, so nodes that coordinate alike load peers alike. A
        peer that lags (a call out for HOLD_BACK) loses its turn until it answers.
        """
        topology = self.topology
        is_down = topology.is_down
        me = self.node_id
        peers = [r for r in replicas if r != me and not is_down(r)]
        if len(peers) > 1:
            is_lagging = topology.is_lagging
            peers.sort(key=lambda peer: (is_lagging(peer), peer < me, peer))
        return [me, *peers] if me in replicas else peers

    # ----- 7. scans -----------------------------------------------------------------------

    def scan_members(self, consistency: Consistency) -> list[str]:
        """The members whose pages make a scan at `consistency`: every live ring member,
        provided every partition keeps enough live owners."""
        self.check_joined()
        topology = self.topology
        ring = topology.ring
        required = consistency.required(topology.replication_factor)
        up = {m for m in ring.members if m == self.node_id or not topology.is_down(m)}
        for partition in range(ring.partitions):
            owners = ring.partition_owners(partition)
            if len(owners) < required:
                raise UnsatisfiableError(
                    f"{consistency.name} needs {required} replicas but the ring has "
                    f"{len(owners)} node(s)"
                )
            alive = sum(owner in up for owner in owners)
            if alive < required:
                raise UnavailableError(
                    f"{consistency.name} scan needs {required} live replicas of every "
                    f"partition; partition {partition} has fewer",
                    metadata=replica_counts(required, alive),
                )
        return sorted(up)

    def merge_scan(
        self,
        pages: Sequence[tuple[str, Sequence[Record], bytes | None]],
        limit: int,
        wall: int,
    ) -> tuple[list[Record], bytes | None, list[tuple[str, InvalidRequestError]]]:
        """Merge the members' pages (member, records with tombstones, the last key
        it scanned if it had more): up to `limit` live records, where the next
        page starts (None: the scan is over), and the peers' records refused."""
        cutoff: bytes | None = None
        for _, _, last in pages:
            if last is not None and (cutoff is None or last < cutoff):
                cutoff = last
        newest: dict[bytes, Record] = {}
        refused: list[tuple[str, InvalidRequestError]] = []
        for member, records, _ in pages:
            for record in records:
                if cutoff is not None and record.key > cutoff:
                    break
                if member != self.node_id:
                    try:
                        self.limits.check_record(record, wall)
                    except InvalidRequestError as error:
                        refused.append((member, error))
                        continue
                current = newest.get(record.key)
                if current is None or supersedes(record, current):
                    newest[record.key] = record
        ordered = [newest[key] for key in sorted(newest)]
        live = [record for record in ordered if is_live(record, wall)][:limit]
        if len(live) == limit:
            return live, next_start(live[-1].key), refused
        return live, (next_start(cutoff) if cutoff is not None else None), refused


def next_start(last: bytes) -> bytes:
    """Where the page after one that ended at `last` starts: the next key in byte order."""
    return last + b"\x00"


def timed_out(what: str, seconds: float) -> TimedOutError:
    """Rule 6: what a request not decided within its deadline answers."""
    return TimedOutError(
        f"replicas did not answer the {what} within {seconds:g}s; "
        "it may or may not have been applied"
        if what != "scan"
        else f"replicas did not answer a scan within {seconds:g}s"
    )


def held_here_alone(placements: Sequence[Placement], node_id: str) -> bool:
    """Whether this node is the sole replica of every key placed (rule 4: a read of
    such keys asks no peer)."""
    here = (node_id,)
    return all(replicas == here for replicas, _ in placements)


class _Parts:
    """The requests that share one plan (rules 3 and 4): each is a run of the plan's
    keys (`ends`: where each run ends), decided once all of its keys are."""

    __slots__ = ("_newly_decided", "_part_of", "_undecided", "_undecided_in_part", "ends")

    def __init__(self, part_ends: Sequence[int] | None, keys: int, waiting: bool) -> None:
        ends = [keys] if part_ends is None else list(part_ends)
        if not ends or ends[-1] != keys or any(b < a for a, b in pairwise(ends)):
            raise ValueError(f"parts ending at {ends} do not split {keys} keys")
        self.ends = ends
        # Per part: its keys still undecided (nothing, when no key waits for replicas);
        # parts decided and not yet taken; each key's part (None while there is one).
        self._undecided_in_part: list[int] = []
        self._newly_decided: list[int] = []
        self._part_of: list[int] | None = None
        self._undecided = keys if waiting else 0  # keys of all parts still undecided
        if not waiting:
            return
        starts = [0, *ends[:-1]]
        self._undecided_in_part = [end - start for start, end in zip(starts, ends, strict=True)]
        # A part with no keys has nothing to wait for.
        self._newly_decided = [p for p, size in enumerate(self._undecided_in_part) if not size]
        if len(ends) > 1:
            self._part_of = [
                p for p, size in enumerate(self._undecided_in_part) for _ in range(size)
            ]

    def span(self, part: int) -> range:
        ends = self.ends
        return range(ends[part - 1] if part else 0, ends[part])

    @property
    def decided(self) -> bool:
        """Whether every key of every part is decided."""
        return self._undecided == 0

    def key_decided(self, index: int) -> None:
        self._undecided -= 1
        part = 0 if self._part_of is None else self._part_of[index]
        left = self._undecided_in_part[part] - 1
        self._undecided_in_part[part] = left
        if not left:
            self._newly_decided.append(part)

    def take_decided(self) -> list[int]:
        """The parts decided since the last call (each part is named once)."""
        newly = self._newly_decided
        if not newly:
            return newly
        self._newly_decided = []
        return newly

    def take_undecided(self) -> list[int]:
        """The parts not decided yet; from now on none of them is named again."""
        waiting = [p for p, left in enumerate(self._undecided_in_part) if left > 0]
        for part in waiting:
            self._undecided_in_part[part] = -1  # never reaches 0 again
        return waiting


class WritePlan:
    """One write in progress (rule 3).

    If `only_here` (this node is the sole replica of every key: LOCAL, or a
    one-node ring), the shell applies `records` to its own store and
    `stored_here` is the answer: no quorum to count. Otherwise the shell
    applies `records[i] for i in local` to its own store, sends
    `records[i] for i in peers[replica]` to each peer, reports each answer to
    `acknowledged` and each failure to `failed`, and hints the records that
    `unreachable` and `failed` name. Once `decided`, `result` is the answer.

    A plan of several requests (`part_ends`, rule 3) answers each part on its
    own: `take_decided` names the parts decided since it was last asked, each
    once, and `result(part)` / `stored_here(stored, part)` are that part's
    answer; `take_undecided` names (once) those still waiting, for a timeout.
    """

    __slots__ = (
        "_parts",
        "local",
        "only_here",
        "peers",
        "quorums",
        "records",
        "unreachable",
    )

    def __init__(
        self,
        node_id: str,
        records: list[Record],
        placements: Sequence[WritePlacement],
        is_down: Callable[[str], bool],
        part_ends: Sequence[int] | None = None,
    ) -> None:
        self.records = records
        here = (node_id,)
        self.only_here = all(
            replicas == here and others is None for replicas, _, others in placements
        )
        self._parts = _Parts(part_ends, len(records), not self.only_here)
        self.local: list[int] | None = None
        self.peers: dict[str, list[int]] = {}
        # Replicas known to be down fail at once; their records are hinted.
        self.unreachable: dict[str, list[Record]] = {}
        self.quorums: list[WriteQuorum] = []
        if self.only_here:
            return
        self.quorums = [
            WriteQuorum(replicas, required)
            if others is None
            else JointWriteQuorum(replicas, others, required)
            for replicas, required, others in placements
        ]
        by_replica: dict[str, list[int]] = {}
        for index, quorum in enumerate(self.quorums):
            for replica in quorum.replicas:
                by_replica.setdefault(replica, []).append(index)
        self.local = by_replica.pop(node_id, None)
        for replica, indexes in by_replica.items():
            if is_down(replica):
                self.unreachable[replica] = self.failed(replica, indexes)
            else:
                self.peers[replica] = indexes

    @property
    def parts(self) -> int:
        return len(self._parts.ends)

    def stored_here(self, stored: Sequence[bool], part: int = 0) -> list[Version]:
        """The answer of a write that only this node holds, given what its store kept
        (`stored`: one flag per record of the plan)."""
        span = self._parts.span(part)
        start, stop = span.start, span.stop
        if not all(stored[start:stop]):
            raise WriteRejectedError("a newer version of a key already exists here")
        return [record.version for record in self.records[start:stop]]

    def records_of(self, indexes: list[int]) -> list[Record]:
        records = self.records
        return [records[i] for i in indexes]

    def acknowledged(
        self, replica: str, indexes: list[int], outcomes: Sequence[ApplyOutcome]
    ) -> None:
        """A replica answered: one outcome per record of `indexes`."""
        quorums = self.quorums
        for i, result in zip(indexes, outcomes, strict=True):
            quorum = quorums[i]
            if quorum.decided:
                continue
            if result is ApplyOutcome.SUPERSEDED:
                quorum.supersede(replica)
            elif result is ApplyOutcome.REJECTED:
                quorum.fail(replica)
            else:
                quorum.ack(replica)
            if quorum.decided:
                self._parts.key_decided(i)

    def failed(self, replica: str, indexes: list[int]) -> list[Record]:
        """A replica failed (or never got the call); returns its records, to hint."""
        quorums = self.quorums
        for i in indexes:
            quorum = quorums[i]
            if not quorum.decided:
                quorum.fail(replica)
                if quorum.decided:
                    self._parts.key_decided(i)
        return self.records_of(indexes)

    @property
    def decided(self) -> bool:
        return self._parts.decided

    def take_decided(self) -> list[int]:
        """The parts decided since the last call (each part is named once)."""
        return self._parts.take_decided()

    def take_undecided(self) -> list[int]:
        """The parts not decided yet; from now on none of them is named again."""
        return self._parts.take_undecided()

    def result(self, part: int = 0) -> list[Version]:
        """The versions a decided part wrote, if every key of it reached W
        acknowledgements; else the error."""
        quorums = self.quorums
        span = self._parts.span(part)
        failed = [quorums[i] for i in span if not quorums[i].succeeded]
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
                "on some replicas",
                metadata=replica_counts(quorum.required, len(quorum.acked)),
            )
        records = self.records
        return [records[i].version for i in span]


class ReadPlan:
    """One read in progress (rules 4-5).

    Unless `only_here` (this node is the sole replica of every key: the shell
    reads its own copy and is done), the shell asks each replica of `asks`
    for `keys[i] for i in indexes`, reports each answer to `answered` and each
    failure to `failed` (which names the spares to ask instead). Once
    `decided`, `result` is the answer; once `take_repairs` returns a dict,
    the shell sends each replica its records.

    A plan of several requests (`part_ends`, rule 4) answers each part on its
    own: `take_decided` names the parts decided since it was last asked, each
    once, and `result(wall, part)` is that part's answer; `take_undecided`
    names (once) those still waiting, for a timeout.
    """

    __slots__ = (
        "_coordinator",
        "_outstanding",
        "_parts",
        "_repairs_taken",
        "_spares",
        "asks",
        "keys",
        "only_here",
        "quorums",
    )

    def __init__(
        self,
        coordinator: Coordinator,
        keys: Sequence[bytes],
        placements: Sequence[Placement],
        part_ends: Sequence[int] | None = None,
    ) -> None:
        self.keys = keys
        self._coordinator = coordinator
        self.only_here = held_here_alone(placements, coordinator.node_id)
        self._parts = _Parts(part_ends, len(keys), not self.only_here)
        self.quorums: list[ReadQuorum] = []
        self.asks: dict[str, list[int]] = {}
        self._spares: list[list[str]] = []
        self._outstanding = 0
        self._repairs_taken = False
        if self.only_here:
            return
        self.quorums = [ReadQuorum(replicas, required) for replicas, required in placements]
        # Keys share few replica lists (at most one per partition of the ring): each
        # list is put in reading order once per plan.
        orders: dict[tuple[str, ...], list[str]] = {}
        for index, quorum in enumerate(self.quorums):
            candidates = orders.get(quorum.replicas)
            if candidates is None:
                candidates = orders[quorum.replicas] = coordinator.read_order(quorum.replicas)
            for replica in candidates[: quorum.required]:
                self.asks.setdefault(replica, []).append(index)
            self._spares.append(candidates[quorum.required :])
        self._outstanding = len(self.asks)

    def answered(
        self, replica: str, indexes: list[int], answers: Sequence[Record | None], wall: int
    ) -> list[InvalidRequestError]:
        """A replica answered, one record (or None) per key of `indexes`.

        Returns the answers refused by the checks (they counted as "not
        there"), for the shell to count and log.
        """
        refused: list[InvalidRequestError] = []
        from_peer = replica != self._coordinator.node_id
        for i, record in zip(indexes, answers, strict=True):
            if record is not None and from_peer:
                try:
                    self._check_answer(record, self.keys[i], wall)
                except InvalidRequestError as error:
                    refused.append(error)
                    record = None
            quorum = self.quorums[i]
            was_decided = quorum.decided
            quorum.answer(replica, record)
            if not was_decided and quorum.decided:
                self._parts.key_decided(i)
        self._outstanding -= 1
        return refused

    def _check_answer(self, record: Record, key: bytes, wall: int) -> None:
        if record.key != key:
            raise InvalidRequestError(
                "a Read answer carries a record of another key", Reason.WRONG_KEY
            )
        self._coordinator.limits.check_version(record.version, wall, "record.version")
        if not 0 <= record.expires_at_ms <= MAX_EXPIRES_AT_MS:
            raise InvalidRequestError("a Read answer carries an expiry out of range", Reason.EXPIRY)

    def failed(self, replica: str, indexes: list[int]) -> dict[str, list[int]]:
        """A replica failed (or could not be asked); returns the spares to ask instead."""
        retry: dict[str, list[int]] = {}
        is_down = self._coordinator.topology.is_down
        for i in indexes:
            quorum = self.quorums[i]
            was_decided = quorum.decided
            quorum.fail(replica)
            spares = self._spares[i]
            while spares:
                spare = spares.pop(0)
                if not is_down(spare):
                    retry.setdefault(spare, []).append(i)
                    break
                # A spare that went down since the plan was made fails like an asked one.
                quorum.fail(spare)
            if not was_decided and quorum.decided:
                self._parts.key_decided(i)
        self._outstanding += len(retry) - 1
        return retry

    @property
    def decided(self) -> bool:
        return self._parts.decided

    def take_decided(self) -> list[int]:
        """The parts decided since the last call (each part is named once)."""
        return self._parts.take_decided()

    def take_undecided(self) -> list[int]:
        """The parts not decided yet; from now on none of them is named again."""
        return self._parts.take_undecided()

    def result(self, wall: int, part: int = 0) -> list[Record | None]:
        """Each key's newest record among its first R answers (None: no replica has
        it), for the keys of `part`."""
        clock = self._coordinator.clock
        quorums = [self.quorums[i] for i in self._parts.span(part)]
        for quorum in quorums:
            if quorum.result is not None:
                # A coordinator that read a version stamps later writes above it.
                clock.observe(quorum.result.version, wall)
        for quorum in quorums:
            if not quorum.succeeded:
                raise UnavailableError(
                    f"needed {quorum.required} replica answers, got {len(quorum.answers)} "
                    f"(failed: {', '.join(sorted(quorum.failed))})",
                    metadata=replica_counts(quorum.required, len(quorum.answers)),
                )
        return [quorum.result for quorum in quorums]

    def take_repairs(self) -> dict[str, list[Record]] | None:
        """Once every asked replica has answered or failed (and only once): the records
        each replica that answered with an older copy, or none, needs."""
        if self._outstanding or self._repairs_taken:
            return None
        self._repairs_taken = True
        fixes: dict[str, list[Record]] = {}
        for quorum in self.quorums:
            for replica, record in quorum.stale().items():
                fixes.setdefault(replica, []).append(record)
        return fixes
