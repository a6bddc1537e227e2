"""This node's own place in the ring: its cold start, its join, its decommission.

Rules: every decision is a3redis.core.transition's (when the gate passes,
whose turn it is, when an announced role may be acted on, what streams from
where); this shell ticks, announces roles, copies partitions and reports.
- A join copies each gained partition from its sources with the Replica
  `Stream` call, page after page, applying every page through the same
  checks as any replicated write (Keyspace.apply_replicated); a partition
  counts as in only once every page of every source is applied.
- A decommission hands each of its partitions to the member that gains it
  with `Apply`, batch after batch; a partition counts as handed over only
  once the gainer answered for every batch without a refusal.
- A join copies from up to STREAM_SOURCES_AT_ONCE sets of sources at a time
  (one source builds its index or answers while another's page is applied).
- Copying is background work and yields to the requests the node serves
  (`StreamPacer`, one per node, shared by its own copying and the Stream
  pages it answers as a source): at most STREAM_MAX_KEYS_PER_SECOND while
  the node is idle, STREAM_BUSY_KEYS_PER_SECOND while it serves more than
  BUSY_ABOVE client or replica requests a second (a limit on the rate: the
  time the copying itself took counts).
- Joins and decommissions remember the partitions done in DATA_DIR
  (`transition.json`, replaced atomically), so a restart in the middle
  resumes where it stopped as long as the target configuration is the
  same; a source or target that fails is retried at the next tick.
- When the decommission is over the node announces `left` and stops itself
  (the node exits 0).
- A removal (an operator's, of a dead member) copies the member's partitions
  from the live old owners to the members gaining them, page by page with
  `Stream` then `Apply` through this node, and only then announces the
  member `left`; one removal at a time, retried at the next tick until done
  or the member comes back to life (then it is not removed).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from a3redis.cluster.keyspace import Keyspace
from a3redis.cluster.peers import PeerUnavailableError
from a3redis.cluster.topology import Topology
from a3redis.core.consistency import Consistency
from a3redis.core.membership import Membership, Role, Status
from a3redis.core.merkle import MerkleIndex
from a3redis.core.ownership import batches, durably_held
from a3redis.core.streaming import StreamRequest, answer_stream, next_request
from a3redis.core.throttle import BackgroundPace
from a3redis.core.transition import (
    Announcement,
    Readiness,
    TickView,
    Transfer,
    join_transfers,
    leave_transfers,
    removal_transfers,
    tick,
)

log = logging.getLogger("a3redis.cluster.rebalance")

TICK = 0.25
# Written in DATA_DIR when a decommission ends: the node does not join again by itself.
LEFT_MARKER = "left"
# Partitions asked in one Stream call, and records per page.
STREAM_PARTITIONS = 64
STREAM_PAGE = 4096
# Sets of sources a join copies from at the same time.
STREAM_SOURCES_AT_ONCE = 4


@dataclass
class RebalanceStats:
    partitions_total: int = 0
    partitions_done: int = 0
    keys_streamed: int = 0
    bytes_streamed: int = 0
    stream_failures: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    waiting: str = ""


class ProgressFile:
    """The partitions done of the transition in progress, kept across restarts."""

    NAME = "transition.json"

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / self.NAME

    def load(self, role: Role, target: frozenset[str]) -> set[int]:
        try:
            raw: Any = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return set()
        if (
            not isinstance(raw, dict)
            or raw.get("role") != role.value
            or raw.get("target") != sorted(target)
            or not isinstance(raw.get("done"), list)
        ):
            return set()
        return {p for p in raw["done"] if isinstance(p, int) and not isinstance(p, bool)}

    def save(self, role: Role, target: frozenset[str], done: set[int]) -> None:
        body = {"role": role.value, "target": sorted(target), "done": sorted(done)}
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(body) + "\n")
        os.replace(temporary, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


# A node serving more client or replica requests a second than this is busy: copying
# partitions then runs at STREAM_BUSY_KEYS_PER_SECOND.
BUSY_ABOVE = 20.0


class StreamPacer:
    """This node's pace for copying partitions: its own pulls and pushes, and the Stream
    pages it answers, all in one schedule (a3redis.core.throttle.BackgroundPace)."""

    def __init__(
        self,
        idle_rate: float,
        busy_rate: float,
        served: Callable[[], int],
        max_answer_wait: float,
    ) -> None:
        self._served = served
        self.pace = BackgroundPace(idle_rate, busy_rate, BUSY_ABOVE, trio.current_time(), served())
        self._max_answer_wait = max_answer_wait

    async def wait_turn(self) -> None:
        """Until the keys copied so far are due, but at most `max_answer_wait`: a source
        holds a Stream answer back no longer than a fraction of the caller's timeout
        (the caller's own pace limits it too)."""
        now = trio.current_time()
        due = self.pace.next_start(now, self._served())
        await trio.sleep_until(min(due, now + self._max_answer_wait))

    def book(self, keys: int, started: float) -> float:
        """Count `keys` keys copied from `started` (trio time) on; when the next may start."""
        return self.pace.book(keys, started, trio.current_time(), self._served())

    async def book_and_wait(self, keys: int, started: float) -> None:
        await trio.sleep_until(self.book(keys, started))

    def status_json(self) -> dict[str, Any]:
        pace = self.pace
        pace.measure(trio.current_time(), self._served())
        return {
            "busy": pace.busy,
            "requests_per_second": round(pace.foreground_rate, 1),
            "max_keys_per_second": pace.rate or None,
        }


class Rebalancer:
    def __init__(
        self,
        membership: Membership,
        topology: Topology,
        keyspace: Keyspace,
        readiness: Readiness,
        peers_unheard: Callable[[], int],
        index: Callable[[], Awaitable[MerkleIndex]],
        data_dir: Path,
        *,
        drain: float,
        pacer: StreamPacer,
        on_change: Callable[[], None],
        on_left: Callable[[], None],
        parked: bool = False,
    ) -> None:
        self._membership = membership
        self._topology = topology
        self._keyspace = keyspace
        self._readiness = readiness
        self._peers_unheard = peers_unheard
        self._index = index
        self._progress = ProgressFile(data_dir)
        self._announcement = Announcement(drain)
        self.pacer = pacer
        self._on_change = on_change
        self._on_left = on_left
        # This node left the ring (its decommission ended) in an earlier run: it does not
        # join again by itself (a pod restarted before its scale-down must not).
        self._parked = parked
        self._finished = False
        self._done: set[int] = set()
        self._target: frozenset[str] | None = None
        self._streamed = False
        self._founding_since: float | None = None
        # The member being removed, and the (partition, target) pairs copied so far.
        self._removing: str | None = None
        self._removed_done: set[tuple[int, str]] = set()
        self.stats = RebalanceStats()
        self.removal = RebalanceStats()

    async def run(
        self, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while not stop.is_set():
            await self._tick()
            with trio.move_on_after(TICK):
                await stop.wait()

    @property
    def role(self) -> Role:
        return self._membership.role

    def decommission(self) -> bool:
        """Start leaving the ring with our data (an operator's request); False if this
        node is not an owner that could (it is starting, joining or leaving already)."""
        role = self._membership.role
        if role is Role.NORMAL:
            self._announce(Role.RETIRING)
            return True
        return role in (Role.RETIRING, Role.LEAVING, Role.DEPARTING)

    def status_json(self) -> dict[str, Any]:
        """This node's role and the progress of its join or decommission."""
        configs = self._topology.configurations
        stats = self.stats
        return {
            "node_id": self._membership.node_id,
            "role": self._membership.role.value,
            "status": self._membership.me.status.name.lower(),
            "waiting_for": stats.waiting or None,
            "partitions": stats.partitions_total,
            "partitions_done": stats.partitions_done,
            "keys_streamed": stats.keys_streamed,
            "bytes_streamed": stats.bytes_streamed,
            "stream_failures": stats.stream_failures,
            "started_at": stats.started_at,
            "finished_at": stats.finished_at,
            "pace": self.pacer.status_json(),
            "removing": None
            if self._removing is None
            else {
                "node_id": self._removing,
                "partitions": self.removal.partitions_total,
                "partitions_done": self.removal.partitions_done,
                "keys_copied": self.removal.keys_streamed,
                "waiting_for": self.removal.waiting or None,
            },
            "ring": {
                "old": sorted(configs.old),
                "new": sorted(configs.new),
                "reads_from": ("new" if configs.switched else "old") if configs.changing else None,
            },
        }

    def remove(self, node_id: str) -> None:
        """Start removing a dead member (an operator's request); KeyError / ValueError
        if it is not one that can be removed, or another removal is in progress."""
        self._membership.check_removable(node_id)
        if self._removing not in (None, node_id):
            raise ValueError(f"{self._removing} is being removed; one removal at a time")
        if self._removing is None:
            self._removing = node_id
            self._removed_done = set()
            self.removal = RebalanceStats(started_at=time.time())
            log.info("removing %s: copying its partitions from the other owners first", node_id)

    @property
    def removing(self) -> str | None:
        return self._removing

    async def _tick(self) -> None:
        if self._removing is not None:
            await self._remove_step(self._removing)
        membership = self._membership
        now = trio.current_time()
        me = membership.me
        if self._parked:
            self.stats.waiting = "an operator: this node left the ring (wipe DATA_DIR to join anew)"
            return
        if me.status is Status.LEFT:
            if me.role is Role.DEPARTING and not self._finished:
                # Restarted at the end of our decommission, or declared dead in it: we
                # have left (core.transition, rule 7).
                self._finish_leaving()
            return
        view = TickView(
            me,
            list(membership.states()),
            membership.unacknowledged(),
            self._streamed,
            self._founding_since,
            now,
            self._readiness.join_timeout,
            self._peers_unheard() if me.role is Role.STARTING else 0,
            membership.heard,
            self._readiness.started_at,
        )
        decided = tick(view, self._announcement)
        self._founding_since = decided.founding_since
        if decided.note:
            log.info("%s", decided.note)
        step = decided.step
        self.stats.waiting = step.waiting
        if step.role is not None:
            self._announce(step.role)
        elif step.stream:
            await self._stream()
        elif step.leave:
            membership.leave(now)
            self._finish_leaving()

    def _finish_leaving(self) -> None:
        log.info("decommission complete: leaving the ring and stopping")
        marker = self._progress.path.with_name(LEFT_MARKER)
        marker.write_text(f"{self._membership.node_id} left the ring at {time.time():.0f}\n")
        self._finished = True
        self._progress.clear()
        self._on_change()
        self._on_left()

    def _announce(self, role: Role) -> None:
        previous = self._membership.role
        self._membership.set_role(role)
        self._on_change()
        if role in (Role.JOINING, Role.LEAVING):
            self._start_transition(role)
        elif role in (Role.NORMAL, Role.WAITING, Role.RETIRING):
            self._streamed = False
            self._target = None
            if role is Role.NORMAL and previous is Role.JOINED:
                self._progress.clear()
                self.stats.finished_at = time.time()
        log.info("role %s -> %s", previous.value, role.value)

    def _start_transition(self, role: Role) -> None:
        configs = self._topology.configurations
        self._target = configs.new
        self._done = self._progress.load(role, configs.new)
        self._streamed = False
        self.stats.started_at = time.time()
        self.stats.finished_at = None

    # ----- copying partitions -----------------------------------------------------------------

    def _transfers(self) -> list[Transfer]:
        topology = self._topology
        me = self._membership.node_id
        old_ring, new_ring = topology.transition_rings()
        if self._membership.role is Role.JOINING:
            return join_transfers(
                me,
                old_ring.partitions,
                old_ring.partition_owners,
                new_ring.partition_owners,
                topology.is_down,
                Consistency.QUORUM.required(topology.replication_factor),
            )
        return leave_transfers(
            me, old_ring.partitions, old_ring.partition_owners, new_ring.partition_owners
        )

    async def _stream(self) -> None:
        role = self._membership.role
        target = self._topology.configurations.new
        if self._target != target:
            # The configuration we move towards changed (a member was removed): start over.
            self._target = target
            self._done = self._progress.load(role, target)
        transfers = self._transfers()
        pending = [t for t in transfers if t.partition not in self._done]
        self.stats.partitions_total = len({t.partition for t in transfers})
        self.stats.partitions_done = self.stats.partitions_total - len(
            {t.partition for t in pending}
        )
        if not pending:
            self._streamed = True
            return
        if role is Role.JOINING:
            await self._pull(pending)
        else:
            await self._push(pending)
        # Done now: switch at the next tick rather than finding nothing left a tick later.
        self._streamed = all(t.partition in self._done for t in transfers)

    async def _pull(self, pending: list[Transfer]) -> None:
        """Copy partitions to us from their sources, up to STREAM_PARTITIONS per call,
        from up to STREAM_SOURCES_AT_ONCE sets of sources at the same time (each source
        builds its index and answers while we apply another's pages)."""
        by_sources: dict[tuple[str, ...], list[int]] = {}
        for transfer in pending:
            by_sources.setdefault(transfer.sources, []).append(transfer.partition)
        slots = trio.Semaphore(STREAM_SOURCES_AT_ONCE)
        async with trio.open_nursery() as nursery:
            for sources, partitions in sorted(by_sources.items()):
                if not sources:
                    self.stats.waiting = f"no live owner to copy partition {partitions[0]} from"
                    continue
                nursery.start_soon(self._pull_partitions, sources, partitions, slots)

    async def _pull_partitions(
        self, sources: tuple[str, ...], partitions: list[int], slots: trio.Semaphore
    ) -> None:
        me = self._membership.node_id
        async with slots:
            for start in range(0, len(partitions), STREAM_PARTITIONS):
                group = partitions[start : start + STREAM_PARTITIONS]
                for source in sources:
                    if not await self._copy(source, me, tuple(group), self.stats):
                        return
                self._done.update(group)
                self._save_progress()
                self.stats.partitions_done += len(group)

    async def _push(self, pending: list[Transfer]) -> None:
        """Hand our partitions to the members gaining them."""
        index = await self._index()
        by_partition: dict[int, list[str]] = {}
        for transfer in pending:
            by_partition.setdefault(transfer.partition, []).append(transfer.target)
        for partition, targets in sorted(by_partition.items()):
            for target in targets:
                if not await self._push_to(target, partition, index):
                    return
            self._done.add(partition)
            self.stats.partitions_done += 1
            if len(self._done) % STREAM_PARTITIONS == 0:
                self._save_progress()
        self._save_progress()

    async def _push_to(self, target: str, partition: int, index: MerkleIndex) -> bool:
        link = self._topology.link(target)
        if link is None or self._topology.is_down(target):
            return False
        for keys in batches(index.partition_keys(partition)):
            started = trio.current_time()
            batch = [r for r in self._keyspace.read_local(keys) if r is not None]
            if not batch:
                continue
            try:
                outcomes = await link.apply(batch)
            except PeerUnavailableError as error:
                self.stats.stream_failures += 1
                log.info("[stream] to %s: %s; retrying", target, error)
                return False
            if not durably_held(outcomes):
                log.warning(
                    "[stream] %s refused records of partition %d; retrying", target, partition
                )
                return False
            self.stats.keys_streamed += len(batch)
            await self._pace(len(batch), started)
        return True

    async def _remove_step(self, node_id: str) -> None:
        membership = self._membership
        try:
            membership.check_removable(node_id)
        except (KeyError, ValueError) as error:
            log.warning("not removing %s: %s", node_id, error)
            self._removing = None
            return
        topology = self._topology
        ring = topology.ring
        others = frozenset(ring.members) - {node_id}
        after = ring.with_members(others)
        transfers = removal_transfers(
            node_id,
            ring.partitions,
            ring.partition_owners,
            after.partition_owners,
            topology.is_down,
        )
        pending = [t for t in transfers if (t.partition, t.target) not in self._removed_done]
        self.removal.partitions_total = len({t.partition for t in transfers})
        self.removal.partitions_done = self.removal.partitions_total - len(
            {t.partition for t in pending}
        )
        by_route: dict[tuple[tuple[str, ...], str], list[int]] = {}
        for transfer in pending:
            by_route.setdefault((transfer.sources, transfer.target), []).append(transfer.partition)
        for (sources, target), partitions in sorted(by_route.items()):
            if not sources:
                self.removal.waiting = f"no live owner to copy partition {partitions[0]} from"
                return
            for start in range(0, len(partitions), STREAM_PARTITIONS):
                group = tuple(partitions[start : start + STREAM_PARTITIONS])
                for source in sources:
                    if not await self._copy(source, target, group, self.removal):
                        return
                self._removed_done.update((partition, target) for partition in group)
        removed = membership.remove(node_id, trio.current_time())
        self._on_change()
        self.removal.finished_at = time.time()
        self.removal.partitions_done = self.removal.partitions_total
        self._removing = None
        log.info("removed %s (%s) after copying its partitions", node_id, removed.status.name)

    async def _copy(
        self, source: str, target: str, partitions: tuple[int, ...], stats: RebalanceStats
    ) -> bool:
        """Copy `partitions` from `source` to `target` through this node, page by page
        (either may be this node itself: then its own store answers or applies); False
        if a side failed or refused records (retried at the next tick)."""
        topology = self._topology
        me = self._membership.node_id
        from_link = None if source == me else topology.link(source)
        to_link = None if target == me else topology.link(target)
        if (from_link is None and source != me) or (to_link is None and target != me):
            return False
        keyspace = self._keyspace
        request: StreamRequest | None = StreamRequest(
            partitions, b"", STREAM_PAGE, topology.ring.partitions
        )
        while request is not None:
            asked_at = trio.current_time()
            try:
                checked_at = None
                if from_link is None:
                    index = await self._index()
                    page = answer_stream(request, index.partition_keys, keyspace.read_local)
                else:
                    page, checked_at = await from_link.stream(
                        request, keyspace.limits, keyspace.wall_ms
                    )
                if page.building:
                    await trio.sleep(TICK)
                elif page.records:
                    if to_link is not None:
                        outcomes = await to_link.apply(page.records)
                    elif checked_at is not None:
                        outcomes = await keyspace.apply_stream_page(page, checked_at)
                    else:
                        outcomes = await keyspace.apply_replicated(page.records, "Stream", source)
                    if not durably_held(outcomes):
                        stats.waiting = f"{target} refused records from {source}; retrying"
                        log.warning("[stream] %s", stats.waiting)
                        return False
            except PeerUnavailableError as error:
                stats.stream_failures += 1
                stats.waiting = f"{error}; retrying"
                log.info("[stream] partitions from %s to %s: %s", source, target, stats.waiting)
                return False
            records = page.records
            stats.keys_streamed += len(records)
            stats.bytes_streamed += sum(
                len(r.key) + (len(r.value) if r.value is not None else 0) for r in records
            )
            await self._pace(len(records), asked_at)
            request = next_request(request, page)
        return True

    def _save_progress(self) -> None:
        if self._target is not None:
            self._progress.save(self._membership.role, self._target, self._done)

    async def _pace(self, keys: int, started: float) -> None:
        """Hold on until `keys` more keys, whose copy began at `started`, are due."""
        await self.pacer.book_and_wait(keys, started)
