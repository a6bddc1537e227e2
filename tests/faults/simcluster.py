"""A simulated a3redis cluster built from the sans-IO cores, for fault schedules.

Rules:
- Only the cores decide, the very ones the node runs: Membership (SWIM),
  Ring (placement), the Coordinator's write and read plans
  (a3redis.core.coordinator: placement checks, versions stamped last, W
  acks of N, R replicas asked with spares, newest of the first R answers,
  read repair once every asked replica answered, hints for replicas that
  failed), Record / supersedes, HybridLogicalClock, RecordTable with its
  MerkleIndex, and merkle.diff. This module plays the shells: it moves
  messages, keeps time, and carries out what the cores decide as the
  node's shells in a3redis/cluster/ (keyspace, hinted_handoff,
  anti_entropy) do, so that a schedule that breaks the real store breaks
  this one.
- Replica writes and reads, read repair and hint delivery go, as in the
  node, through a link per peer (SimLink) that drives the node's batcher
  core (a3redis.core.batcher) as a3redis.cluster.peers.PeerLink does: what
  leaves in which call and when (hold-back, in-flight limit, bounds), and
  who gets which answer or failure. A call is one `SimCluster.call`, so it
  can be lost, late or time out after `peer_timeout` like any message. The
  node gathers a call (runtime.gathering) while other tasks can still run;
  here those are the events due at the same instant: a gathering sender
  lets them run first, once. Keepalive pings are not modelled (there are no
  connections to keep). A Stream call (a3redis.core.streaming) goes
  through the link unbatched, as PeerLink.stream's does. Links are process
  state: a crash loses them and every call they had out, settling nothing (a
  killed process runs no more code); a restarted process starts with new
  ones.
- Time is fake and events run in order from one heap; randomness comes from
  one seeded generator: a schedule replays exactly.
- Messages take a small random latency. A message between nodes whose link
  is cut, or to a crashed process, is lost (the caller's timeout decides); a
  message to a paused process waits in its socket buffer until it resumes,
  and so do its timers. A crash loses everything but the durable state: the
  record table and the hints (both fsync'ed before they count in the real
  node) and the member table it saved (a3redis.cluster.gossip.MemberFile, written on
  every change); the clock restarts past the newest stored version,
  membership restarts with a higher incarnation, its seeds and the saved
  table. A node that knows no other member refuses requests (a3redis/cluster/keyspace.py).
- Clients are never cut from coordinators; a client runs one operation at a
  time, carries the newest version it saw (as a3redis.client does) and
  records every operation for the history checker.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Any

from a3redis.api.grpc_services import STATUS_CODE_OF_KIND
from a3redis.config import SETTINGS_BY_ENV
from a3redis.core.anti_entropy import (
    TRANSFER_BATCH,
    ChunksAnswer,
    ChunksRequest,
    EntriesAnswer,
    TreeAnswer,
    TreeRequest,
    TreeWalk,
    WalkRequest,
    answer_chunks,
    answer_tree,
    check_entries,
    entries_keys,
    transfers,
)
from a3redis.core.batcher import Batcher, Call
from a3redis.core.consistency import Consistency
from a3redis.core.coordinator import Coordinator, ReadPlan, WritePlan, timed_out
from a3redis.core.errors import RequestError
from a3redis.core.hinted_handoff import Deliver, Hints
from a3redis.core.hlc import HybridLogicalClock, Version
from a3redis.core.membership import (
    Membership,
    MembershipSettings,
    MemberState,
    Probe,
    Status,
)
from a3redis.core.merkle import MerkleIndex, diff
from a3redis.core.record import ApplyOutcome, Record, outcome
from a3redis.core.ring import Ring
from a3redis.core.streaming import (
    StreamPage,
    StreamRequest,
    answer_stream,
    check_page,
    check_request,
)
from a3redis.core.table import RecordTable
from a3redis.core.transition import configurations
from a3redis.core.validation import InvalidRequestError, Limits
from tests.support.history import (
    DELETE,
    FAIL,
    GET,
    OK,
    PUT,
    UNKNOWN,
    Observed,
    Op,
)

EPOCH_MS = 1_800_000_000_000
LIMITS = Limits()  # a3redis.cluster.keyspace checks `after` with the node's limits
PROBE_TIMEOUT = 1.0  # a3redis.cluster.gossip


@dataclass(frozen=True)
class SimConfig:
    nodes: int = 3
    replication_factor: int = 3
    partitions: int = 64
    chunks: int = 4
    gossip_interval: float = 0.5
    failure_timeout: float = 3.0
    request_timeout: float = 2.0
    peer_timeout: float = 1.0
    sync_interval: float = 2.0
    hint_interval: float = 1.0
    client_timeout: float = 3.0
    offsets_ms: tuple[int, ...] = ()
    hints: bool = True
    read_repair: bool = True


@cache
def _ring(members: tuple[str, ...], factor: int, partitions: int) -> Ring:
    return Ring(members, factor, partitions)


class Loop:
    """Fake time and one heap of events."""

    def __init__(self, seed: int) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def at(self, moment: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (max(moment, self.now), next(self._seq), action))

    def after(self, delay: float, action: Callable[[], None]) -> None:
        self.at(self.now + delay, action)

    def run_until(self, moment: float) -> None:
        while self._heap and self._heap[0][0] <= moment:
            when, _, action = heapq.heappop(self._heap)
            self.now = when
            action()
        self.now = max(self.now, moment)


Reply = Callable[[str, str, str, Version | None, str | None], None]
"""outcome, code, message, version, value read"""


def grpc_code(error: RequestError) -> str:
    """The status code a node's gRPC front end answers for `error`."""
    return str(STATUS_CODE_OF_KIND[error.kind].name)


class _Topology:
    """A simulated node's view of its cluster, as a3redis.cluster.topology gives the node's."""

    def __init__(self, node: SimNode) -> None:
        self._node = node

    @property
    def joining(self) -> bool:
        return not self._node.membership.joined

    @property
    def ring(self) -> Ring:
        return self._node.ring()

    @property
    def other_ring(self) -> Ring | None:
        return self._node.other_ring()

    @property
    def replication_factor(self) -> int:
        return self._node.config.replication_factor

    def is_down(self, member: str) -> bool:
        return self._node.is_down(member)


Settled = Callable[[list[Any] | None], None]
"""A submission's end: its answers, in the order of its items, or None (the call failed)."""


class SimLink:
    """A node's link to one peer: a3redis.cluster.peers.PeerLink's sender on fake time.

    Submissions queue in the batcher and wake the sender, which runs after
    the event that woke it (as PeerLink's sender task runs once the
    submitting task yields); it sends what `Batcher.next_call` hands it,
    one call per step (PeerLink's checkpoint before each call), and sleeps
    until a submission, a call's end or `Batcher.wake_at`.
    """

    def __init__(self, node: SimNode, peer: SimNode) -> None:
        self.node = node
        self.peer = peer
        self.batcher: Batcher[Settled] = Batcher()  # PeerLink's default in-flight limit
        self._wake_at: float | None = None  # the earliest sender step scheduled

    def submit_apply(self, records: list[Record], settle: Settled) -> None:
        self.batcher.applies.submit(records, settle)
        self._wake(self.node.cluster.loop.now)

    def submit_read(self, keys: list[bytes], settle: Settled) -> None:
        self.batcher.reads.submit(keys, settle)
        self._wake(self.node.cluster.loop.now)

    def stream(self, request: StreamRequest, settle: Callable[[StreamPage | None], None]) -> None:
        """One Stream call, unbatched (PeerLink.stream): the peer answers from its table
        and index with core.streaming, as the Replica service does; the page is checked
        when it arrives. `settle(None)`: the call failed or the peer refused the request
        (INVALID_ARGUMENT in the node), or the page was refused (RefusedPageError)."""
        node, peer = self.node, self.peer

        def serve() -> StreamPage | None:
            try:
                check_request(request, peer.config.partitions, LIMITS)
            except InvalidRequestError:
                return None
            return answer_stream(request, peer.index.partition_keys, peer.read_local)

        def answered(page: StreamPage | None) -> None:
            if page is not None:
                try:
                    check_page(request, page, LIMITS, node.wall_ms())
                except InvalidRequestError:
                    page = None
            settle(page)

        node.cluster.call(
            node, peer, serve, answered, partial(settle, None), node.config.peer_timeout
        )

    def _wake(self, moment: float, gather: bool = True) -> None:
        """Schedule a sender step at `moment`, unless one comes no later (steps are idempotent)."""
        if self._wake_at is not None and self._wake_at <= moment:
            return
        self._wake_at = moment
        self.node.timer(moment - self.node.cluster.loop.now, partial(self._step, gather))

    def _step(self, gather: bool) -> None:
        now = self.node.cluster.loop.now
        self._wake_at = None
        batcher = self.batcher
        if gather and batcher.should_gather():
            self._wake(now, gather=False)  # the events due now add to the call first
            return
        call = batcher.next_call(now)
        if call is not None:
            self._send(call)
            if batcher.ready(now):
                self._wake(now, gather=False)  # the next call, after a checkpoint
                return
        wake_at = batcher.wake_at()
        if wake_at is not None:
            # A held-back call is due once `now - last_call >= HOLD_BACK`, which float
            # rounding can leave false at `wake_at` itself; then, as the node's clock
            # would, time moves on by its least step.
            self._wake(max(wake_at, math.nextafter(now, math.inf)))

    def _send(self, call: Call[Any, Settled]) -> None:
        peer, items = self.peer, call.items
        serve: Callable[[], list[Any]]
        if call.queue is self.batcher.applies:
            serve = partial(peer.apply_replicated, items)
        else:
            serve = partial(peer.read_local, items)
        self.node.cluster.call(
            self.node,
            peer,
            serve,
            partial(self._answered, call),
            partial(self._failed, call),
            self.node.config.peer_timeout,
        )

    def _answered(self, call: Call[Any, Settled], results: list[Any]) -> None:
        self._ended(call)
        for settle, answers in call.queue.answered(call, results):
            settle(answers)

    def _failed(self, call: Call[Any, Settled]) -> None:
        self._ended(call)
        for settle in call.queue.failed(call):
            settle(None)

    def _ended(self, call: Call[Any, Settled]) -> None:
        if self.batcher.ended(call):
            self._wake(self.node.cluster.loop.now)


class SimNode:
    def __init__(self, cluster: SimCluster, number: int) -> None:
        self.cluster = cluster
        self.config = cluster.config
        self.number = number
        self.node_id = f"node-{number}"
        self.gossip_addr = f"sim-{number}:8000"
        self.offset_ms = (
            cluster.config.offsets_ms[number - 1]
            if number - 1 < len(cluster.config.offsets_ms)
            else 0
        )
        # Durable state.
        self.table = RecordTable()
        index = MerkleIndex(self.config.partitions, self.config.chunks)
        self.table.begin_index()
        self.table.finish_index(index)
        self.index = index
        self.hints = Hints(window_ms=10_800_000)  # HINT_WINDOW's default
        self.saved_members: list[MemberState] = []
        self.incarnation = 0
        # Process state.
        self.running = False
        self.paused = False
        self.generation = 0
        self.deferred: list[Callable[[], None]] = []
        self.requests: dict[int, Callable[[], None]] = {}
        self.links: dict[str, SimLink] = {}
        self.clock = HybridLogicalClock(self.node_id)
        self.membership = self._membership()
        self.coordinator = self._coordinator()

    # ----- process life ---------------------------------------------------------------------

    def _membership(self) -> Membership:
        me = MemberState(
            self.node_id, f"grpc-{self.number}", self.gossip_addr, Status.ALIVE, self.incarnation
        )
        settings = MembershipSettings(failure_timeout=self.config.failure_timeout)
        core = Membership(me, "sim", self.config.replication_factor, settings)
        core.add_seeds(n.gossip_addr for n in self.cluster.nodes if n is not self)
        core.restore(self.saved_members, self.cluster.loop.now)
        return core

    def _coordinator(self) -> Coordinator:
        return Coordinator(self.clock, LIMITS, _Topology(self), self.cluster.loop.rng)

    def start(self) -> None:
        assert not self.running
        self.running, self.paused = True, False
        self.generation += 1
        self.incarnation += 1
        self.links = {}
        self.clock = HybridLogicalClock(self.node_id)
        self.coordinator = self._coordinator()
        if self.table.max_version is not None:
            # After a restart, never issue a version below one already stored (keyspace.py).
            self.clock.observe(self.table.max_version, self.wall_ms())
        self.membership = self._membership()
        rng = self.cluster.loop.rng
        self.timer(rng.uniform(0, self.config.gossip_interval), self._gossip)
        self.timer(self.config.sync_interval * rng.uniform(0.8, 1.2), self._sync)
        self.timer(rng.uniform(0, self.config.hint_interval), self._deliver_hints)

    def crash(self) -> None:
        if not self.running:
            return
        self.running, self.paused = False, False
        self.generation += 1
        # The real node saves its table on every change: the file is the table as it was.
        self.saved_members = self.membership.members()
        self.deferred.clear()
        self.links = {}  # their queues and the calls they had out die with the process
        lost, self.requests = self.requests, {}
        for notify in lost.values():
            notify()  # the clients' connections break

    def pause(self) -> None:
        if self.running:
            self.paused = True

    def resume(self) -> None:
        if self.running and self.paused:
            self.paused = False
            waiting, self.deferred = self.deferred, []
            for action in waiting:
                action()

    def alive_process(self, generation: int) -> bool:
        return self.running and self.generation == generation

    def run(self, generation: int, action: Callable[[], object]) -> None:
        """Run `action` in this process now, later if it is paused, never if it died."""
        if not self.alive_process(generation):
            return
        if self.paused:
            self.deferred.append(lambda: self.run(generation, action))
            return
        action()

    def timer(self, delay: float, action: Callable[[], None]) -> None:
        generation = self.generation
        self.cluster.loop.after(delay, lambda: self.run(generation, action))

    def link(self, peer: str) -> SimLink:
        """The link to `peer` (as Topology.link), made on first use."""
        link = self.links.get(peer)
        if link is None:
            link = self.links[peer] = SimLink(self, self.cluster.node(peer))
        return link

    def wall_ms(self) -> int:
        return EPOCH_MS + int(self.cluster.loop.now * 1000) + self.offset_ms

    # ----- views ----------------------------------------------------------------------------

    def ring(self) -> Ring:
        """The ring reads use (a3redis.core.transition, as the node's Topology)."""
        configs = configurations(self.membership.states())
        return _ring(
            tuple(sorted(configs.read)), self.config.replication_factor, self.config.partitions
        )

    def other_ring(self) -> Ring | None:
        """While a member joins or leaves, the other configuration writes also need."""
        configs = configurations(self.membership.states())
        if not configs.changing:
            return None
        other = configs.old if configs.switched else configs.new
        return _ring(tuple(sorted(other)), self.config.replication_factor, self.config.partitions)

    def is_down(self, node_id: str) -> bool:
        member = self.membership.get(node_id)
        return member is None or member.status in (Status.DEAD, Status.LEFT)

    # ----- replica side ---------------------------------------------------------------------

    def apply_replicated(self, records: Sequence[Record]) -> list[ApplyOutcome]:
        """As Keyspace.apply_replicated: each record checked, observed, applied."""
        wall = self.wall_ms()
        outcomes = []
        for record in records:
            try:
                LIMITS.check_record(record, wall)
            except InvalidRequestError:
                outcomes.append(ApplyOutcome.REJECTED)
                continue
            self.clock.observe(record.version, wall)
            stored = self.table.apply(record)
            outcomes.append(outcome(record, stored, None if stored else self.table.get(record.key)))
        return outcomes

    def read_local(self, keys: Sequence[bytes]) -> list[Record | None]:
        """As Keyspace.read_local: a record beyond the clock-skew bound is not there."""
        bound = LIMITS.clock_bound(self.wall_ms())
        found = [self.table.get(key) for key in keys]
        return [None if r is None or r.version.wall_ms > bound else r for r in found]

    # ----- coordinator: the shell of a3redis.core.coordinator's plans, as keyspace.py is ---

    def write(
        self,
        key: bytes,
        value: bytes | None,
        level: Consistency,
        after: Version | None,
        reply: Reply,
    ) -> None:
        try:
            plan = self.coordinator.plan_write([(key, value)], level, after, self.wall_ms())
        except RequestError as error:
            reply(FAIL, grpc_code(error), str(error), None, None)  # nothing was sent
            return

        def answer(versions_of: Callable[[], list[Version]]) -> None:
            try:
                versions = versions_of()
            except RequestError as error:
                # Not "fail": replicas may have stored it (and a write that lost
                # last-write-wins may show until the newer version reaches them).
                reply(UNKNOWN, grpc_code(error), str(error), None, None)
            else:
                reply(OK, "OK", "", versions[0], None)

        if plan.only_here:
            stored = [self.table.apply(record) for record in plan.records]
            answer(lambda: plan.stored_here(stored))
            return
        finished = [False]

        def decide() -> None:
            if finished[0] or not plan.decided:
                return
            finished[0] = True
            answer(plan.result)

        def deadline() -> None:
            if not finished[0]:
                finished[0] = True
                error = timed_out("write", self.config.request_timeout)
                reply(UNKNOWN, grpc_code(error), str(error), None, None)

        self.timer(self.config.request_timeout, deadline)
        for replica, records in plan.unreachable.items():
            self._hint_all(replica, records)
        for replica, indexes in plan.peers.items():
            self._replicate(replica, indexes, plan, decide)
        if plan.local is not None:
            outcomes = self.apply_replicated(plan.records_of(plan.local))
            plan.acknowledged(self.node_id, plan.local, outcomes)
        decide()

    def _replicate(
        self, replica: str, indexes: list[int], plan: WritePlan, decide: Callable[[], None]
    ) -> None:
        def settle(outcomes: list[ApplyOutcome] | None) -> None:
            if outcomes is None:
                self._hint_all(replica, plan.failed(replica, indexes))
            else:
                plan.acknowledged(replica, indexes, outcomes)
            decide()

        self.link(replica).submit_apply(plan.records_of(indexes), settle)

    def _hint_all(self, replica: str, records: list[Record]) -> None:
        if self.config.hints:
            self.hints.hold(replica, records)

    def read(self, key: bytes, level: Consistency, reply: Reply) -> None:
        try:
            plan = self.coordinator.plan_read([key], level)
        except RequestError as error:
            reply(FAIL, grpc_code(error), str(error), None, None)
            return
        finished = [False]

        def found(record: Record | None) -> None:
            value = None if record is None or record.value is None else record.value.decode()
            reply(OK, "OK", "", None if record is None else record.version, value)

        def settle() -> None:
            if not finished[0] and plan.decided:
                finished[0] = True
                try:
                    result = plan.result(self.wall_ms())[0]
                except RequestError as error:
                    reply(UNKNOWN, grpc_code(error), str(error), None, None)
                else:
                    found(result)
            repairs = plan.take_repairs()
            if repairs and self.config.read_repair:
                self._read_repair(repairs)

        def deadline() -> None:
            if not finished[0]:
                finished[0] = True
                error = timed_out("read", self.config.request_timeout)
                reply(UNKNOWN, grpc_code(error), str(error), None, None)

        if plan.only_here:
            found(self.read_local([key])[0])
            return
        self.timer(self.config.request_timeout, deadline)
        asks = dict(plan.asks)
        local = asks.pop(self.node_id, None)
        for replica, indexes in asks.items():
            self._ask(replica, indexes, plan, settle)
        if local is not None:
            self._ask(self.node_id, local, plan, settle)

    def _ask(
        self, replica: str, indexes: list[int], plan: ReadPlan, decide: Callable[[], None]
    ) -> None:
        keys = [plan.keys[i] for i in indexes]

        def settle(records: list[Record | None] | None) -> None:
            if records is None:
                for spare, spare_indexes in plan.failed(replica, indexes).items():
                    self._ask(spare, spare_indexes, plan, decide)
            else:
                plan.answered(replica, indexes, records, self.wall_ms())
            decide()

        if replica == self.node_id:
            settle(self.read_local(keys))
        else:
            self.link(replica).submit_read(keys, settle)

    def _read_repair(self, repairs: dict[str, list[Record]]) -> None:
        for replica, records in repairs.items():
            if replica == self.node_id:
                self.apply_replicated(records)
            else:
                self.link(replica).submit_apply(records, lambda _: None)

    # ----- background loops -----------------------------------------------------------------

    def _gossip(self) -> None:
        loop = self.cluster.loop
        for probe in self.membership.tick(loop.now, loop.rng):
            self._probe(probe)
        self.timer(self.config.gossip_interval, self._gossip)

    def _probe(self, probe: Probe) -> None:
        target = self.cluster.by_gossip.get(probe.gossip_addr)
        loop = self.cluster.loop
        if target is None:
            self.membership.on_probe_failed(probe, loop.now)
            return
        self.cluster.call(
            self,
            target,
            lambda: target.membership.on_exchange(probe.message, loop.now),
            lambda reply: self.membership.on_reply(probe, reply, loop.now),
            lambda: self.membership.on_probe_failed(probe, loop.now),
            PROBE_TIMEOUT,
        )

    def _deliver_hints(self) -> None:
        def send(replica: str, batches: deque[list[Record]]) -> None:
            # In order, each batch once the one before was answered (hinted_handoff.py).
            if not batches:
                return
            batch = batches.popleft()

            def delivered(outcomes: list[ApplyOutcome] | None) -> None:
                if outcomes is not None:  # else delivery pauses until the next round
                    self.hints.delivered(replica, batch)
                    send(replica, batches)

            self.link(replica).submit_apply(batch, delivered)

        self.hints.expire(self.wall_ms())
        for step in self.hints.due(self.membership):
            if isinstance(step, Deliver):
                send(step.replica, deque(step.batches))
        self.timer(self.config.hint_interval, self._deliver_hints)

    def _sync(self) -> None:
        for peer in self.ring().members:
            member = self.membership.get(peer)
            if peer != self.node_id and member is not None and member.status is Status.ALIVE:
                self.cluster.anti_entropy(self, self.cluster.node(peer))
        rng = self.cluster.loop.rng
        self.timer(self.config.sync_interval * rng.uniform(0.8, 1.2), self._sync)

    # ----- inspection -----------------------------------------------------------------------

    def observed(self, key: bytes) -> Observed | None:
        record = self.table.get(key)
        if record is None:
            return None
        return Observed(None if record.value is None else record.value.decode(), record.version)


@dataclass
class SimClient:
    name: str
    queue: deque[tuple[str, bytes, int, Consistency]] = field(default_factory=deque)
    busy: bool = False
    seen: Version | None = None
    sequence: int = 0


class SimCluster:
    def __init__(self, config: SimConfig, seed: int, clients: int) -> None:
        self.config = config
        self.loop = Loop(seed)
        self.nodes: list[SimNode] = []
        for number in range(1, config.nodes + 1):
            self.nodes.append(SimNode(self, number))
        # Seeds need every node's address, so memberships are made once all exist.
        for node in self.nodes:
            node.membership = node._membership()
        self.by_id = {n.node_id: n for n in self.nodes}
        self.by_gossip = {n.gossip_addr: n for n in self.nodes}
        self.cut: set[frozenset[str]] = set()
        self.clients = [SimClient(f"c{i}") for i in range(clients)]
        self.history: list[Op] = []
        self.full_ring = Ring(
            [n.node_id for n in self.nodes], config.replication_factor, config.partitions
        )
        self._request_ids = itertools.count()

    def node(self, node_id: str) -> SimNode:
        return self.by_id[node_id]

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    # ----- the network ----------------------------------------------------------------------

    def linked(self, a: SimNode, b: SimNode) -> bool:
        return a is b or frozenset((a.node_id, b.node_id)) not in self.cut

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        ids = [[self.nodes[i].node_id for i in group] for group in groups]
        self.cut = {
            frozenset((a, b))
            for i, left in enumerate(ids)
            for right in ids[i + 1 :]
            for a in left
            for b in right
            if a != b
        }

    def cut_pairs(self, pairs: Sequence[tuple[int, int]]) -> None:
        self.cut = {
            frozenset((self.nodes[a].node_id, self.nodes[b].node_id)) for a, b in pairs if a != b
        }

    def heal(self) -> None:
        self.cut = set()

    def send(
        self,
        source: SimNode,
        target: SimNode,
        action: Callable[[], object],
        generation: int | None = None,
    ) -> None:
        """Deliver `action` to a process of `target` (by default its current one) after a
        latency, unless the link is cut or that process is gone."""
        if generation is None:
            generation = target.generation
        if not self.linked(source, target) or not target.alive_process(generation):
            return
        latency = self.loop.rng.uniform(0.0005, 0.01)

        def arrive() -> None:
            if self.linked(source, target):
                target.run(generation, action)

        self.loop.after(latency, arrive)

    def call(
        self,
        source: SimNode,
        target: SimNode,
        serve: Callable[[], Any],
        on_reply: Callable[[Any], None],
        on_fail: Callable[[], object],
        timeout: float,
    ) -> None:
        """A request/response from `source`'s process, failed after `timeout` without an answer."""
        done = [False]

        def fail() -> None:
            if not done[0]:
                done[0] = True
                on_fail()

        def reply(value: Any) -> None:
            if not done[0]:
                done[0] = True
                on_reply(value)

        caller = source.generation

        def at_target() -> None:
            value = serve()
            # The answer goes back to the very process that asked, if it still runs.
            self.send(target, source, lambda: reply(value), caller)

        source.timer(timeout, fail)
        self.send(source, target, at_target)

    def anti_entropy(
        self,
        me: SimNode,
        peer: SimNode,
        done: Callable[[], None] = lambda: None,
        tombstone_grace_s: float | None = None,  # None: TOMBSTONE_GRACE's default
    ) -> None:
        """One exchange of repair.py's: core.anti_entropy's walk and pull/push rule, each
        message a `call` that may be late or lost; `done` once it ended, however."""
        shared = me.ring().shared_partitions(me.node_id, peer.node_id)
        if not shared:
            done()
            return
        walk = TreeWalk(me.node_id, me.index, shared)
        timeout = self.config.peer_timeout
        if tombstone_grace_s is None:
            tombstone_grace_s = float(SETTINGS_BY_ENV["TOMBSTONE_GRACE"].default or 0)
        grace_ms = int(tombstone_grace_s * 1000)

        def step() -> None:
            request = walk.request
            if request is None:
                transfer()
            elif walk.pause:
                me.timer(walk.pause, lambda: ask(request))
            else:
                ask(request)

        def ask(request: WalkRequest) -> None:
            self.call(me, peer, lambda: serve(request), answered, done, timeout)

        def serve(request: WalkRequest) -> TreeAnswer | ChunksAnswer | EntriesAnswer:
            """The peer's side (repair.py's serve_*), run in its process when the call arrives."""
            if isinstance(request, TreeRequest):
                its_shared = peer.ring().shared_partitions(peer.node_id, me.node_id)
                return answer_tree(request, its_shared, peer.index.chunks, peer.index)
            if isinstance(request, ChunksRequest):
                return answer_chunks(request, peer.index)
            return EntriesAnswer.of(peer.read_local(entries_keys(request, peer.index)))

        def answered(answer: TreeAnswer | ChunksAnswer | EntriesAnswer) -> None:
            if isinstance(answer, TreeAnswer):
                walk.on_tree(answer, self.loop.now)
            elif isinstance(answer, ChunksAnswer):
                walk.on_chunks(answer)
            else:
                walk.on_entries(answer)
            step()

        def transfer() -> None:
            if walk.skipped or not walk.leaves:
                done()
                return
            now_ms = me.wall_ms()
            theirs, _ = check_entries(walk.entries, LIMITS, now_ms)
            moves = transfers(me.read_local(walk.my_keys()), theirs, now_ms, grace_ms)
            batch = TRANSFER_BATCH
            # As repair.py: pulls, then pushes, one batch at a time; a failure ends it.
            send_next(
                [moves.pull[i : i + batch] for i in range(0, len(moves.pull), batch)],
                [moves.push[i : i + batch] for i in range(0, len(moves.push), batch)],
            )

        def send_next(pulls: list[list[bytes]], pushes: list[list[Record]]) -> None:
            if pulls:
                keys, later = pulls[0], pulls[1:]

                def pulled(records: list[Record]) -> None:
                    me.apply_replicated(records)
                    send_next(later, pushes)

                self.call(
                    me,
                    peer,
                    lambda: [r for r in peer.read_local(keys) if r is not None],
                    pulled,
                    done,
                    timeout,
                )
            elif pushes:
                records, rest = pushes[0], pushes[1:]
                self.call(
                    me,
                    peer,
                    lambda: peer.apply_replicated(records),
                    lambda _: send_next([], rest),
                    done,
                    timeout,
                )
            else:
                done()

        step()

    def repair_pass(self) -> int:
        """Every node's round with every other (no membership needed); what still differed."""
        differing = 0
        for me in self.nodes:
            for peer in self.nodes:
                if me is peer:
                    continue
                shared = self.full_ring.shared_partitions(me.node_id, peer.node_id)
                if shared:
                    differing += len(diff(me.index, peer.index, shared))
                ended: list[bool] = []
                self.anti_entropy(me, peer, partial(ended.append, True))
                # Each message is answered or timed out within peer_timeout and an
                # exchange sends a handful: the deadline is only for a process that died.
                deadline = self.loop.now + 20 * self.config.peer_timeout
                while not ended and self.loop.now < deadline:
                    self.loop.run_until(self.loop.now + 0.05)
        return differing

    # ----- clients --------------------------------------------------------------------------

    def submit(
        self, client: int, kind: str, key: bytes, coordinator: int, level: Consistency
    ) -> None:
        sim_client = self.clients[client % len(self.clients)]
        sim_client.queue.append((kind, key, coordinator % len(self.nodes), level))
        if not sim_client.busy:
            self._next(sim_client)

    def _next(self, client: SimClient) -> None:
        if not client.queue:
            client.busy = False
            return
        client.busy = True
        kind, key, number, level = client.queue.popleft()
        coordinator = self.nodes[number]
        invoked = self.loop.now
        client.sequence += 1
        value = f"{client.name}-{client.sequence}" if kind == PUT else None
        finished = [False]
        request_id = next(self._request_ids)

        def record(
            result: str, code: str, message: str, version: Version | None, read: str | None
        ) -> None:
            if finished[0]:
                return
            finished[0] = True
            coordinator.requests.pop(request_id, None)
            if (
                result == OK
                and version is not None
                and (client.seen is None or version > client.seen)
            ):
                client.seen = version
            self.history.append(
                Op(
                    client=client.name,
                    kind=kind,
                    key=key.decode(),
                    value=value if kind == PUT else read,
                    invoked=invoked,
                    completed=self.loop.now,
                    outcome=result,
                    version=version if result == OK else None,
                    consistency=level.name,
                    code=code,
                    message=message,
                    coordinator=coordinator.node_id,
                )
            )
            self.loop.after(0.001, lambda: self._next(client))

        if not coordinator.running:
            # Connection refused: the request was never sent.
            record(FAIL, "UNAVAILABLE", "connection refused", None, None)
            return
        self.loop.after(
            self.config.client_timeout,
            lambda: record(UNKNOWN, "DEADLINE_EXCEEDED", "no answer in time", None, None),
        )
        coordinator.requests[request_id] = lambda: record(
            UNKNOWN, "UNAVAILABLE", "connection lost during the request", None, None
        )
        after = client.seen
        generation = coordinator.generation
        latency = self.loop.rng.uniform(0.0005, 0.005)

        def respond(
            result: str, code: str, message: str, version: Version | None, read: str | None
        ) -> None:
            if coordinator.alive_process(generation):
                self.loop.after(latency, lambda: record(result, code, message, version, read))

        def handle() -> None:
            if kind == GET:
                coordinator.read(key, level, respond)
            else:
                data = None if kind == DELETE else (value or "").encode()
                coordinator.write(key, data, level, after, respond)

        self.loop.after(latency, lambda: coordinator.run(generation, handle))

    # ----- the end --------------------------------------------------------------------------

    def settle(self, seconds: float) -> None:
        """Stop every fault, then let gossip, hints, repair and clients finish."""
        self.heal()
        for node in self.nodes:
            if not node.running:
                node.start()
            node.resume()
        self.loop.run_until(self.loop.now + seconds)

    def final_state(self, keys: Sequence[bytes]) -> dict[str, dict[str, Observed | None]]:
        return {n.node_id: {k.decode(): n.observed(k) for k in keys} for n in self.nodes}

    def owners(self, key: str) -> Sequence[str]:
        return self.full_ring.preference_list(key.encode())
