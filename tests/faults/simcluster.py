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
- Each process runs SimRebalancer, a3redis.cluster.rebalance.Rebalancer on
  fake time: the cold start (the cluster's first nodes found the ring,
  others wait to join it), joins and decommissions, every decision taken
  by core.transition (next_step, Announcement, join_transfers,
  leave_transfers) and streaming.next_request; partitions are pulled with
  SimLink.stream and pushed with the link's apply. A node coordinates
  nothing until core.transition.Readiness says so, as the node's Topology.
  Its durable state adds the role it saved (its member table) and the
  partitions done of its transition (the Rebalancer's transition.json); a
  node whose decommission ended announces that it left and exits for good.
- While the ring changes, TransitionInvariants is checked after every event
  (see its rules).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Any, Protocol

from a3redis.api.grpc_services import STATUS_CODE_OF_KIND
from a3redis.cluster.rebalance import STREAM_PAGE, STREAM_PARTITIONS, TICK
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
from a3redis.core.expiry import NEVER, Expiry, visible
from a3redis.core.hinted_handoff import Deliver, Hints
from a3redis.core.hlc import HybridLogicalClock, Version
from a3redis.core.membership import (
    Membership,
    MembershipSettings,
    MemberState,
    Probe,
    Role,
    Status,
)
from a3redis.core.merkle import MerkleIndex, diff
from a3redis.core.ownership import batches, durably_held
from a3redis.core.record import ApplyOutcome, Record, outcome
from a3redis.core.ring import Ring
from a3redis.core.streaming import (
    StreamPage,
    StreamRequest,
    answer_stream,
    check_page,
    check_request,
    next_request,
)
from a3redis.core.table import RecordTable
from a3redis.core.transition import (
    ACTIVE,
    SWITCHED,
    Announcement,
    Configurations,
    Readiness,
    TickView,
    Transfer,
    configurations,
    join_transfers,
    leave_transfers,
    restart_state,
    tick,
)
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
    join_timeout: float = 5.0
    stream_max_keys_per_second: float = float(
        SETTINGS_BY_ENV["STREAM_MAX_KEYS_PER_SECOND"].default or 0
    )
    offsets_ms: tuple[int, ...] = ()
    hints: bool = True
    read_repair: bool = True

    @property
    def transition_drain(self) -> float:
        """As a3redis.config.Config.transition_drain."""
        return self.request_timeout + self.peer_timeout


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
        # Called after every event (the invariants).
        self.after_each: Callable[[], None] | None = None

    def at(self, moment: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (max(moment, self.now), next(self._seq), action))

    def after(self, delay: float, action: Callable[[], None]) -> None:
        self.at(self.now + delay, action)

    def run_until(self, moment: float) -> None:
        while self._heap and self._heap[0][0] <= moment:
            when, _, action = heapq.heappop(self._heap)
            self.now = when
            action()
            if self.after_each is not None:
                self.after_each()
        self.now = max(self.now, moment)


class Reply(Protocol):
    """How a coordinator answers a client: outcome, code, message, version, value read,
    and the expiry of the record written or read (0: none)."""

    def __call__(
        self,
        result: str,
        code: str,
        message: str,
        version: Version | None,
        read: str | None,
        /,
        expires_at_ms: int = 0,
    ) -> None: ...


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
        node = self._node
        return not node.readiness.check(node.membership, node.cluster.loop.now)

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

    def is_lagging(self, member: str) -> bool:
        link = self._node.links.get(member)
        return link is not None and link.batcher.lagging(self._node.cluster.loop.now)


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


Wait = Callable[[Callable[[Any], None]], None]
"""What a process task waits for: started with the callback its result goes to."""

Task = Generator[Wait, Any, Any]
"""A process task: trio code on fake time, each `await` a `yield` of a Wait."""


def spawn(node: SimNode, task: Task) -> None:
    """Run `task` in `node`'s current process: each result it waits for resumes it there
    (later if the process is paused, never once it died)."""
    generation = node.generation

    def advance(value: Any) -> None:
        try:
            wait = task.send(value)
        except StopIteration:
            return
        wait(resume)

    def resume(value: Any) -> None:
        node.run(generation, partial(advance, value))

    advance(None)


@dataclass
class Progress:
    """The Rebalancer's transition.json: the partitions done of a transition (durable)."""

    role: Role
    target: frozenset[str]
    done: frozenset[int]


class SimRebalancer:
    """a3redis.cluster.rebalance.Rebalancer on fake time, statement for statement: its
    decisions are core.transition's; this class ticks, announces roles, copies
    partitions and leaves. One per process: a crash loses it and what it had in
    flight, the node's durable `progress` and saved role survive."""

    def __init__(self, node: SimNode) -> None:
        self.node = node
        self.announcement = Announcement(node.config.transition_drain)
        self.done: set[int] = set()
        self.target: frozenset[str] | None = None
        self.streamed = False
        self.founding_since: float | None = None
        self.waiting = ""
        self.keys_streamed = 0
        self.stream_failures = 0

    def run(self) -> Task:
        while True:
            yield from self._tick()
            yield self._sleep(TICK)

    def decommission(self) -> bool:
        """Start leaving the ring with our data (the operator's call)."""
        role = self.node.membership.role
        if role is Role.NORMAL:
            self._announce(Role.RETIRING)
            return True
        return role in (Role.RETIRING, Role.LEAVING, Role.DEPARTING)

    def _sleep(self, seconds: float) -> Wait:
        return lambda resume: self.node.timer(seconds, partial(resume, None))

    def _tick(self) -> Task:
        node = self.node
        membership = node.membership
        now = node.cluster.loop.now
        me = membership.me
        if me.status is Status.LEFT:
            if me.role is Role.DEPARTING and not node.exited:
                # As the node's Rebalancer: restarted at the end of its decommission, or
                # declared dead in it, it has left (core.transition, rule 7).
                node.progress = None
                node.exit()
            return
        view = TickView(
            me,
            list(membership.states()),
            membership.unacknowledged(),
            self.streamed,
            self.founding_since,
            now,
            node.config.join_timeout,
            # The node's peers_unheard: configured peers that have not answered (no DNS here).
            len(membership.seeds_pending()) if me.role is Role.STARTING else 0,
            membership.heard,
            node.readiness.started_at,
        )
        decided = tick(view, self.announcement)
        self.founding_since = decided.founding_since
        step = decided.step
        self.waiting = step.waiting
        if step.role is not None:
            self._announce(step.role)
        elif step.stream:
            yield from self._stream()
        elif step.leave:
            membership.leave(now)
            node.progress = None
            node.exit()

    def _announce(self, role: Role) -> None:
        membership = self.node.membership
        previous = membership.role
        membership.set_role(role)
        if role in (Role.JOINING, Role.LEAVING):
            self._start_transition(role)
        elif role in (Role.NORMAL, Role.WAITING, Role.RETIRING):
            self.streamed = False
            self.target = None
            if role is Role.NORMAL and previous is Role.JOINED:
                self.node.progress = None

    def _start_transition(self, role: Role) -> None:
        target = self.node.configurations().new
        self.target = target
        self.done = self.node.load_progress(role, target)
        self.streamed = False

    # ----- copying partitions -----------------------------------------------------------------

    def _transfers(self) -> list[Transfer]:
        node = self.node
        me = node.node_id
        old_ring, new_ring = node.transition_rings()
        if node.membership.role is Role.JOINING:
            return join_transfers(
                me,
                old_ring.partitions,
                old_ring.partition_owners,
                new_ring.partition_owners,
                node.is_down,
                Consistency.QUORUM.required(node.config.replication_factor),
            )
        return leave_transfers(
            me, old_ring.partitions, old_ring.partition_owners, new_ring.partition_owners
        )

    def _stream(self) -> Task:
        node = self.node
        role = node.membership.role
        target = node.configurations().new
        if self.target != target:
            # The configuration we move towards changed (a member was removed): start over.
            self.target = target
            self.done = node.load_progress(role, target)
        pending = [t for t in self._transfers() if t.partition not in self.done]
        if not pending:
            self.streamed = True
            return
        if role is Role.JOINING:
            yield from self._pull(pending)
        else:
            yield from self._push(pending)

    def _pull(self, pending: list[Transfer]) -> Task:
        """Copy partitions to us from their sources, up to STREAM_PARTITIONS per call."""
        by_sources: dict[tuple[str, ...], list[int]] = {}
        for transfer in pending:
            by_sources.setdefault(transfer.sources, []).append(transfer.partition)
        for sources, partitions in sorted(by_sources.items()):
            if not sources:
                self.waiting = f"no live owner to copy partition {partitions[0]} from"
                continue
            for start in range(0, len(partitions), STREAM_PARTITIONS):
                group = partitions[start : start + STREAM_PARTITIONS]
                for source in sources:
                    pulled = yield from self._pull_from(source, tuple(group))
                    if not pulled:
                        return
                self.done.update(group)
                self._save_progress()

    def _pull_from(self, source: str, partitions: tuple[int, ...]) -> Task:
        node = self.node
        if node.membership.get(source) is None:
            return False  # Topology.link: we do not know where it listens
        link = node.link(source)
        request: StreamRequest | None = StreamRequest(
            partitions, b"", STREAM_PAGE, node.config.partitions
        )
        while request is not None:
            page: StreamPage | None = yield partial(link.stream, request)
            if page is None:
                self.stream_failures += 1
                return False
            if page.building:
                yield self._sleep(TICK)
            elif page.records:
                node.apply_replicated(page.records)
                self.keys_streamed += len(page.records)
                yield from self._pace(len(page.records))
            request = next_request(request, page)
        return True

    def _push(self, pending: list[Transfer]) -> Task:
        """Hand our partitions to the members gaining them."""
        by_partition: dict[int, list[str]] = {}
        for transfer in pending:
            by_partition.setdefault(transfer.partition, []).append(transfer.target)
        for partition, targets in sorted(by_partition.items()):
            for target in targets:
                pushed = yield from self._push_to(target, partition)
                if not pushed:
                    return
            self.done.add(partition)
            if len(self.done) % STREAM_PARTITIONS == 0:
                self._save_progress()
        self._save_progress()

    def _push_to(self, target: str, partition: int) -> Task:
        node = self.node
        if node.membership.get(target) is None or node.is_down(target):
            return False
        link = node.link(target)
        for keys in batches(node.index.partition_keys(partition)):
            batch = [r for r in node.read_local(keys) if r is not None]
            if not batch:
                continue
            outcomes: list[ApplyOutcome] | None = yield partial(link.submit_apply, batch)
            if outcomes is None:
                self.stream_failures += 1
                return False
            if not durably_held(outcomes):
                return False
            self.keys_streamed += len(batch)
            yield from self._pace(len(batch))
        return True

    def _save_progress(self) -> None:
        if self.target is not None:
            self.node.progress = Progress(
                self.node.membership.role, self.target, frozenset(self.done)
            )

    def _pace(self, keys: int) -> Task:
        rate = self.node.config.stream_max_keys_per_second
        if rate > 0:
            yield self._sleep(keys / rate)


class SimNode:
    def __init__(self, cluster: SimCluster, number: int) -> None:
        self.cluster = cluster
        self.config = cluster.config
        self.number = number
        self.node_id = f"node-{number}"
        self.gossip_addr = f"sim-{number}:8000"
        # The cluster's first nodes, each configured with the others as PEERS; a node
        # added later (a spare) names them as its PEERS.
        self.founder = number <= cluster.config.nodes
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
        self.progress: Progress | None = None
        # Ever started (a spare is not, until it joins); exited for good (it left the ring).
        self.started = False
        self.exited = False
        # Process state.
        self.running = False
        self.paused = False
        self.generation = 0
        self.deferred: list[Callable[[], None]] = []
        self.requests: dict[int, Callable[[], None]] = {}
        self.links: dict[str, SimLink] = {}
        self.clock = HybridLogicalClock(self.node_id)
        self.membership = self._membership(self.incarnation)
        self.coordinator = self._coordinator()
        self.readiness = Readiness(0.0, self.config.join_timeout)
        self.rebalancer = SimRebalancer(self)
        self._configurations: tuple[Membership, int, Configurations] | None = None

    # ----- process life ---------------------------------------------------------------------

    def _membership(self, fresh_incarnation: int) -> Membership:
        seeds = [n.gossip_addr for n in self.cluster.nodes if n.founder and n is not self]
        mine = next((m for m in self.saved_members if m.node_id == self.node_id), None)
        role = self._start_role(mine, bool(seeds))
        # As a3redis.node: the incarnation saved at the crash, or the next (a node that
        # left is never started again here).
        status, self.incarnation = restart_state(
            role, None if mine is None else mine.incarnation, fresh_incarnation, False
        )
        me = MemberState(
            self.node_id, f"grpc-{self.number}", self.gossip_addr, status, self.incarnation, role
        )
        settings = MembershipSettings(failure_timeout=self.config.failure_timeout)
        core = Membership(me, "sim", self.config.replication_factor, settings)
        core.add_seeds(seeds)
        core.restore(self.saved_members, self.cluster.loop.now)
        return core

    def _start_role(self, mine: MemberState | None, has_peers: bool) -> Role:
        """As a3redis.node._start_role: the role saved, or the cold-start gate for a fresh
        node (a node that left is never started again here: it exited for good)."""
        if mine is None or mine.status is Status.LEFT:
            return Role.STARTING if has_peers or mine is not None else Role.NORMAL
        return mine.role

    def _coordinator(self) -> Coordinator:
        return Coordinator(self.clock, LIMITS, _Topology(self))

    def start(self) -> None:
        assert not self.running and not self.exited
        self.started = True
        self.running, self.paused = True, False
        self.generation += 1
        self.links = {}
        self.clock = HybridLogicalClock(self.node_id)
        self.coordinator = self._coordinator()
        if self.table.max_version is not None:
            # After a restart, never issue a version below one already stored (keyspace.py).
            self.clock.observe(self.table.max_version, self.wall_ms())
        self.membership = self._membership(self.incarnation + 1)
        self.readiness = Readiness(self.cluster.loop.now, self.config.join_timeout)
        self.rebalancer = SimRebalancer(self)
        rng = self.cluster.loop.rng
        self.timer(rng.uniform(0, self.config.gossip_interval), self._gossip)
        self.timer(self.config.sync_interval * rng.uniform(0.8, 1.2), self._sync)
        self.timer(rng.uniform(0, self.config.hint_interval), self._deliver_hints)
        self.timer(rng.uniform(0, TICK), partial(spawn, self, self.rebalancer.run()))

    def crash(self) -> None:
        if not self.running:
            return
        self.running, self.paused = False, False
        self.generation += 1
        # The real node saves its table and its incarnation on every change: the files
        # are as they were.
        self.saved_members = self.membership.members()
        self.incarnation = self.membership.me.incarnation
        self.deferred.clear()
        self.links = {}  # their queues and the calls they had out die with the process
        lost, self.requests = self.requests, {}
        for notify in lost.values():
            notify()  # the clients' connections break

    def exit(self) -> None:
        """The end of a decommission: tell every live member that we left (gossip's
        departure; the answers are not waited for), then the process ends for good."""
        for probe in self.membership.leave(self.cluster.loop.now):
            self._probe(probe)
        self.crash()
        self.exited = True

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

    def configurations(self) -> Configurations:
        """The member sets of the moment (a3redis.core.transition), looked at again only
        when the member table changed, as the node's Topology."""
        membership = self.membership
        held = self._configurations
        if held is None or held[0] is not membership or held[1] != membership.version:
            held = self._configurations = (
                membership,
                membership.version,
                configurations(membership.states()),
            )
        return held[2]

    def _ring_of(self, members: frozenset[str]) -> Ring:
        return _ring(tuple(sorted(members)), self.config.replication_factor, self.config.partitions)

    def ring(self) -> Ring:
        """The ring reads use (a3redis.core.transition, as the node's Topology)."""
        return self._ring_of(self.configurations().read)

    def other_ring(self) -> Ring | None:
        """While a member joins or leaves, the other configuration writes also need."""
        configs = self.configurations()
        if not configs.changing:
            return None
        return self._ring_of(configs.old if configs.switched else configs.new)

    def transition_rings(self) -> tuple[Ring, Ring]:
        """The rings before and after the transition in progress (Topology.transition_rings)."""
        configs = self.configurations()
        return self._ring_of(configs.old), self._ring_of(configs.new)

    def coordinates(self, now: float) -> bool:
        """Whether this process coordinates requests now, as its Readiness last found
        (asking it again would tell peers it is ready: only the node's own calls may)."""
        return (
            self.running
            and not self.paused
            and self.readiness.ready
            and not self.membership.out_of_touch(now)
        )

    def own_role(self) -> Role:
        """Our role: the process's, or the one saved when it is down."""
        if self.running:
            return self.membership.role
        mine = next((m for m in self.saved_members if m.node_id == self.node_id), None)
        return self.membership.role if mine is None else mine.role

    def load_progress(self, role: Role, target: frozenset[str]) -> set[int]:
        """The partitions done of the transition to `target` in `role` (ProgressFile.load)."""
        progress = self.progress
        if progress is None or (progress.role, progress.target) != (role, target):
            return set()
        return set(progress.done)

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
        expiry: Expiry = NEVER,
    ) -> None:
        """As Keyspace.put / delete (a write with an expiry is checked as it checks it)."""
        wall = self.wall_ms()
        try:
            if expiry != NEVER:
                LIMITS.check_expiry(expiry, wall)
            expiries = None if expiry == NEVER else [expiry]
            plan = self.coordinator.plan_write([(key, value)], level, after, wall, expiries)
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
                reply(OK, "OK", "", versions[0], None, plan.records[0].expires_at_ms)

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

        def found(newest: Record | None) -> None:
            # As Keyspace: the newest record is judged by this coordinator's clock.
            record = visible(newest, self.wall_ms())
            value = None if record is None or record.value is None else record.value.decode()
            expires = 0 if record is None else record.expires_at_ms
            reply(OK, "OK", "", None if record is None else record.version, value, expires)

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
        # The node's handoff pass after each anti-entropy round asks whether it coordinates
        # (Topology.joining), which Readiness then tells peers: once a round here too.
        self.readiness.check(self.membership, self.cluster.loop.now)
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


# Where a view may show a `normal` member: as it is, as it was founding (the cold start),
# or one step behind, `joined` (its `normal` waits for `joined` to be acknowledged).
_SERVING = frozenset({Role.NORMAL, Role.FOUNDING, Role.JOINED})


class TransitionInvariants:
    """What must hold at every moment of a join or a decommission, checked after every
    event while a member is in transition or a view is behind (SimCluster.in_transition).

    Rules:
    - Durable copies: for every write acknowledged to its client at QUORUM or ALL,
      at least W (QUORUM's) replicas of its key in the read configuration of every
      live node's view hold that version or a newer one in their store (a crashed
      node's store counts; one that left the ring does not). Live: running, not
      paused, and coordinating (core.transition.Readiness, SimNode.coordinates).
    - Switched roles: no member is `joined` or `departing` (or has left at the end
      of its decommission) while a live node's view shows it in a role before its
      transition (`waiting`, `retiring`, `normal`, ...) or not at all; and no member
      is `normal` while a live node's view shows it further behind than `joined`
      (`joining`, `waiting`, `starting`) or not at all.
    The first violations are kept (`violations`), each with the time it was found.
    """

    LIMIT = 10

    def __init__(self, cluster: SimCluster) -> None:
        self.cluster = cluster
        self.required = Consistency.QUORUM.required(cluster.config.replication_factor)
        # The newest acknowledged version of each key: holding it holds every older one.
        self.newest: dict[bytes, Version] = {}
        self.violations: list[str] = []
        self.checks = 0

    def acknowledged(self, key: bytes, version: Version, level: Consistency) -> None:
        if level not in (Consistency.QUORUM, Consistency.ALL):
            return
        newest = self.newest.get(key)
        if newest is None or version > newest:
            self.newest[key] = version

    def check(self) -> None:
        cluster = self.cluster
        if len(self.violations) >= self.LIMIT or not cluster.in_transition():
            return
        self.checks += 1
        now = cluster.loop.now
        live = [n for n in cluster.nodes if n.coordinates(now)]
        self._check_copies(live, now)
        self._check_roles(live, now)

    def _check_copies(self, live: list[SimNode], now: float) -> None:
        cluster = self.cluster
        rings = {n.configurations().read: n for n in live}
        for members, viewer in rings.items():
            ring = viewer.ring()
            for key, version in self.newest.items():
                replicas = ring.preference_list(key)
                holding = [r for r in replicas if self._holds(cluster.node(r), key, version)]
                if len(holding) < self.required:
                    self._violation(
                        now,
                        f"{key.decode()} @ {version}: {len(holding)} of "
                        f"{', '.join(replicas)} hold it in the read configuration "
                        f"{sorted(members)} of {viewer.node_id}",
                    )

    @staticmethod
    def _holds(node: SimNode, key: bytes, version: Version) -> bool:
        record = node.table.get(key)
        return not node.exited and record is not None and record.version >= version

    def _check_roles(self, live: list[SimNode], now: float) -> None:
        for mover in self.cluster.nodes:
            if not mover.started:
                continue
            role = mover.own_role()
            if mover.exited:
                allowed = frozenset({Role.DEPARTING})
            elif role in SWITCHED:
                allowed = ACTIVE
            elif role is Role.NORMAL:
                allowed = _SERVING
            else:
                continue
            for viewer in live:
                if viewer is mover:
                    continue
                seen = viewer.membership.get(mover.node_id)
                if seen is None or (seen.status is not Status.LEFT and seen.role not in allowed):
                    shown = "unknown" if seen is None else seen.role.value
                    state = "left" if mover.exited else role.value
                    self._violation(
                        now, f"{mover.node_id} is {state} but {viewer.node_id} shows it {shown}"
                    )

    def _violation(self, now: float, text: str) -> None:
        if len(self.violations) < self.LIMIT:
            self.violations.append(f"t={now:.3f}: {text}")


@dataclass
class SimClient:
    name: str
    # (kind, key, coordinator number, level, TTL in ms: 0 for none)
    queue: deque[tuple[str, bytes, int, Consistency, int]] = field(default_factory=deque)
    busy: bool = False
    seen: Version | None = None
    sequence: int = 0


class SimCluster:
    """`config.nodes` founders, started together, and `spares` nodes that may join later."""

    def __init__(self, config: SimConfig, seed: int, clients: int, spares: int = 0) -> None:
        self.config = config
        self.loop = Loop(seed)
        self.nodes: list[SimNode] = []
        for number in range(1, config.nodes + spares + 1):
            self.nodes.append(SimNode(self, number))
        # Seeds need every node's address, so memberships are made once all exist.
        for node in self.nodes:
            node.membership = node._membership(node.incarnation)
        self.by_id = {n.node_id: n for n in self.nodes}
        self.by_gossip = {n.gossip_addr: n for n in self.nodes}
        self.cut: set[frozenset[str]] = set()
        self.clients = [SimClient(f"c{i}") for i in range(clients)]
        self.history: list[Op] = []
        self._request_ids = itertools.count()
        self._transition_state: list[tuple[int, int]] = []
        self._transition = False
        self.invariants = TransitionInvariants(self)
        self.loop.after_each = self.invariants.check

    def node(self, node_id: str) -> SimNode:
        return self.by_id[node_id]

    def start(self) -> None:
        for node in self.nodes:
            if node.founder:
                node.start()

    def members(self) -> list[SimNode]:
        """The nodes of the ring once every transition ends: started, and not left."""
        return [n for n in self.nodes if n.started and not n.exited]

    @property
    def full_ring(self) -> Ring:
        """The ring every member serves once every transition has ended."""
        return _ring(
            tuple(sorted(n.node_id for n in self.members())),
            self.config.replication_factor,
            self.config.partitions,
        )

    # ----- joins and decommissions ----------------------------------------------------------

    def join(self) -> SimNode | None:
        """Start the next spare: a fresh node that passes its gate and joins the ring."""
        spare = next((n for n in self.nodes if not n.started), None)
        if spare is not None:
            spare.start()
        return spare

    def decommission(self, node: SimNode) -> bool:
        """The operator's decommission call to `node` (refused if its process does not answer)."""
        if not node.running or node.paused:
            return False
        return node.rebalancer.decommission()

    def in_transition(self) -> bool:
        """Whether a member is joining or leaving (in its own role, or in a running node's
        view), or a running node's view does not show a member's role yet.

        Asked after every event: worked out again only when a process started or ended,
        or a member table changed."""
        state = [(n.generation, n.membership.version) for n in self.nodes]
        if state != self._transition_state:
            self._transition_state = state
            members = [n for n in self.nodes if n.started]
            running = [n for n in members if n.running]
            self._transition = any(n.own_role() in ACTIVE for n in members if not n.exited) or any(
                viewer.configurations().changing or self._behind(viewer, members)
                for viewer in running
            )
        return self._transition

    @staticmethod
    def _behind(viewer: SimNode, members: list[SimNode]) -> bool:
        for member in members:
            seen = viewer.membership.get(member.node_id)
            if member.exited:
                if seen is not None and seen.status is not Status.LEFT:
                    return True
            elif seen is None or seen.role is not member.own_role():
                return True
        return False

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
        """Every member's round with every other (no membership needed); what still differed."""
        differing = 0
        members = self.members()
        full_ring = self.full_ring
        for me in members:
            for peer in members:
                if me is peer:
                    continue
                shared = full_ring.shared_partitions(me.node_id, peer.node_id)
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
        self,
        client: int,
        kind: str,
        key: bytes,
        coordinator: int,
        level: Consistency,
        ttl_ms: int = 0,
    ) -> None:
        sim_client = self.clients[client % len(self.clients)]
        # Clients know the nodes that were ever started and have not left.
        known = self.members()
        number = known[coordinator % len(known)].number - 1
        sim_client.queue.append((kind, key, number, level, ttl_ms))
        if not sim_client.busy:
            self._next(sim_client)

    def _next(self, client: SimClient) -> None:
        if not client.queue:
            client.busy = False
            return
        client.busy = True
        kind, key, number, level, ttl_ms = client.queue.popleft()
        coordinator = self.nodes[number]
        invoked = self.loop.now
        client.sequence += 1
        value = f"{client.name}-{client.sequence}" if kind == PUT else None
        finished = [False]
        request_id = next(self._request_ids)

        def record(
            result: str,
            code: str,
            message: str,
            version: Version | None,
            read: str | None,
            expires_at_ms: int = 0,
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
            if result == OK and version is not None and kind != GET:
                self.invariants.acknowledged(key, version, level)
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
                    expires_at_ms=expires_at_ms if result == OK else 0,
                    ttl_ms=ttl_ms,
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
            result: str,
            code: str,
            message: str,
            version: Version | None,
            read: str | None,
            expires_at_ms: int = 0,
        ) -> None:
            if coordinator.alive_process(generation):
                self.loop.after(
                    latency, lambda: record(result, code, message, version, read, expires_at_ms)
                )

        def handle() -> None:
            if kind == GET:
                coordinator.read(key, level, respond)
            else:
                data = None if kind == DELETE else (value or "").encode()
                expiry = Expiry(ttl_ms=ttl_ms) if ttl_ms else NEVER
                coordinator.write(key, data, level, after, respond, expiry)

        self.loop.after(latency, lambda: coordinator.run(generation, handle))

    # ----- the end --------------------------------------------------------------------------

    def settle(self, seconds: float, transitions_within: float = 120.0) -> bool:
        """Stop every fault, then let gossip, hints, repair and clients finish, and every
        join and decommission end (within `transitions_within` more seconds: whether
        they did)."""
        self.heal()
        for node in self.members():
            if not node.running:
                node.start()
            node.resume()
        self.loop.run_until(self.loop.now + seconds)
        deadline = self.loop.now + transitions_within
        while not self.transitions_ended():
            if self.loop.now >= deadline:
                return False
            self.loop.run_until(self.loop.now + 1.0)
        return True

    def transitions_ended(self) -> bool:
        """Every member is `normal` and every member's view is the one ring."""
        ring = frozenset(n.node_id for n in self.members())
        for node in self.members():
            if node.membership.role is not Role.NORMAL:
                return False
            configs = node.configurations()
            if configs.changing or configs.read != ring:
                return False
        return True

    def final_state(self, keys: Sequence[bytes]) -> dict[str, dict[str, Observed | None]]:
        return {n.node_id: {k.decode(): n.observed(k) for k in keys} for n in self.nodes}

    def owners(self, key: str) -> Sequence[str]:
        return self.full_ring.preference_list(key.encode())
