"""Anti-entropy: replicas compare Merkle trees and exchange only what differs.

Rules: the exchange itself (what to ask, what an answer means, what moves)
is core.anti_entropy's; this shell moves its messages, keeps time and
paces. Every SYNC_INTERVAL (with jitter) a node runs a round with each live
peer it shares partitions with: it drives a TreeWalk over the PeerLink
(Tree, Chunks, Entries: one call at a time), checks the peer's entries
(`check_entries`; each refusal is counted), and carries out `transfers`:
pulled records are applied through Keyspace.apply_replicated (a record that
fails its checks is not applied, and is counted), pushed ones are applied on
the peer. Transfers are paced by REPAIR_MAX_KEYS_PER_SECOND so client
traffic is not starved; an unreachable peer is skipped quietly. The serving
side answers from the same cached index, and starts building it in the
background when a Tree request finds none. Records are read as reads see
them (Keyspace.read_local): one beyond the clock-skew bound is neither
offered nor pushed. Each round ends with the purge pass for tombstones and
expired records (core.purge) and the handoff pass (a3redis.cluster.ownership) for partitions this
node holds but does not own.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from a3redis.cluster.keyspace import Keyspace
from a3redis.cluster.ownership import Handoff
from a3redis.cluster.peers import PeerLink, PeerUnavailableError
from a3redis.cluster.topology import Topology
from a3redis.core.anti_entropy import (
    FANOUT,
    TRANSFER_BATCH,
    ChunksAnswer,
    ChunksRequest,
    EntriesAnswer,
    EntriesRequest,
    EntryVersion,
    TreeAnswer,
    TreeRequest,
    TreeWalk,
    answer_chunks,
    answer_tree,
    check_entries,
    entries_keys,
    transfers,
)
from a3redis.core.membership import Status
from a3redis.core.merkle import MerkleIndex
from a3redis.core.purge import purgeable
from a3redis.core.record import Record
from a3redis.core.ring import partition_of

log = logging.getLogger("a3redis.cluster.anti_entropy")


@dataclass(frozen=True, slots=True)
class RepairSettings:
    interval: float
    chunks: int
    max_keys_per_second: float
    tombstone_grace_s: float
    fanout: int = FANOUT


@dataclass
class PeerReport:
    peer: str
    partitions: int = 0
    tree_nodes: int = 0
    leaves: int = 0
    keys_pulled: int = 0
    keys_pushed: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    seconds: float = 0.0
    calls: int = 0
    skipped: str = ""


@dataclass
class RepairStats:
    rounds: int = 0
    peers_compared: int = 0
    tree_nodes: int = 0
    leaves_differed: int = 0
    keys_pulled: int = 0
    keys_pushed: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    purged: int = 0  # tombstones
    expired_purged: int = 0  # expired records
    last_round_seconds: float = 0.0
    last_round_at: float = 0.0
    last_reports: list[PeerReport] = field(default_factory=list)


class AntiEntropy:
    def __init__(self, keyspace: Keyspace, cluster: Topology, settings: RepairSettings) -> None:
        self.keyspace = keyspace
        self.cluster = cluster
        self.settings = settings
        self.stats = RepairStats()
        self._rng = random.Random()
        self._round_lock = trio.Lock()
        self._wake = trio.Event()
        # (partition, peer) -> our wall-clock ms at the start of the last round that
        # left that partition identical on both: the purge rule's evidence. At most
        # partitions x ring members: peers that left the ring are dropped by _purge.
        self._confirmed: dict[tuple[int, str], int] = {}
        self._nursery: trio.Nursery | None = None
        self._building = False
        self.handoff = Handoff(keyspace.store, keyspace.read_local, cluster, self.index, self._pace)

    def _start_index_build(self) -> None:
        if self._nursery is not None and not self._building:
            self._building = True
            self._nursery.start_soon(self._build_index)

    async def _build_index(self) -> None:
        try:
            await self.index()
        finally:
            self._building = False

    async def index(self) -> MerkleIndex:
        return await self.keyspace.store.merkle_index(
            self.cluster.ring.partitions, self.settings.chunks
        )

    # ----- serving side -------------------------------------------------------------------

    async def serve_tree(self, request: TreeRequest) -> TreeAnswer:
        shared = self.cluster.ring.shared_partitions(request.requester, self.cluster.node_id)
        index = self.keyspace.store.built_merkle_index
        answer = answer_tree(request, shared, self.settings.chunks, index)
        if answer.building:
            # Build it in the background and let the requester come back: a call
            # must not wait the seconds a million keys take.
            self._start_index_build()
        return answer

    def built_index(self) -> MerkleIndex | None:
        """The Merkle index if it is built; else None, and it is built in the background
        (for Stream: a call must not wait the seconds a million keys take)."""
        index = self.keyspace.store.built_merkle_index
        if index is None:
            self._start_index_build()
        return index

    async def serve_chunks(self, request: ChunksRequest) -> ChunksAnswer:
        return answer_chunks(request, await self.index())

    async def serve_entries(self, request: EntriesRequest) -> EntriesAnswer:
        keys = entries_keys(request, await self.index())
        return EntriesAnswer.of(self.keyspace.read_local(keys))

    # ----- initiating side ----------------------------------------------------------------

    async def run(
        self, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            nursery.start_soon(self._rounds)
            await stop.wait()
            # A round in progress is abandoned: the next start repairs what it missed.
            nursery.cancel_scope.cancel()

    async def _rounds(self) -> None:
        while True:
            # Jitter spreads the rounds of different nodes apart.
            with trio.move_on_after(self.settings.interval * self._rng.uniform(0.8, 1.2)):
                await self._wake.wait()
            self._wake = trio.Event()
            await self.round()

    def trigger(self) -> None:
        self._wake.set()

    async def round(self) -> list[PeerReport]:
        """One round with every live peer that shares partitions with us."""
        async with self._round_lock:
            started = time.monotonic()
            reports = []
            for peer in self._peers():
                report = await self.round_with(peer)
                reports.append(report)
                self._account(report)
            await self._purge()
            await self.handoff.run_pass()
            self.stats.rounds += 1
            self.stats.last_round_seconds = time.monotonic() - started
            self.stats.last_round_at = time.time()
            self.stats.last_reports = reports
            return reports

    def _peers(self) -> list[str]:
        ring = self.cluster.ring
        me = self.cluster.node_id
        peers = []
        for node in ring.members:
            member = self.cluster.membership.get(node)
            if node != me and member is not None and member.status is Status.ALIVE:
                peers.append(node)
        return peers

    def _account(self, report: PeerReport) -> None:
        stats = self.stats
        stats.peers_compared += 0 if report.skipped else 1
        stats.tree_nodes += report.tree_nodes
        stats.leaves_differed += report.leaves
        stats.keys_pulled += report.keys_pulled
        stats.keys_pushed += report.keys_pushed
        stats.bytes_sent += report.bytes_sent
        stats.bytes_received += report.bytes_received

    async def round_with(self, peer: str) -> PeerReport:
        report = PeerReport(peer)
        started = time.monotonic()
        started_ms = self.keyspace.wall_ms()
        link = self.cluster.link(peer)
        try:
            if link is None:
                report.skipped = "no address"
            else:
                shared = await self._compare(link, peer, report)
                if not report.skipped:
                    for partition in shared:
                        self._confirmed[(partition, peer)] = started_ms
        except PeerUnavailableError as error:
            report.skipped = "unreachable"
            log.debug("[anti-entropy] skipped peer=%s: %s", peer, error)
        report.seconds = time.monotonic() - started
        return report

    async def _purge(self) -> None:
        """Drop the tombstones and expired records that every replica is known to hold,
        once they have been dead for the grace period."""
        store = self.keyspace.store
        ring = self.cluster.ring
        me = self.cluster.node_id
        # Confirmations from peers no longer in the ring can never count again.
        members = set(ring.members)
        for forgotten in [key for key in self._confirmed if key[1] not in members]:
            del self._confirmed[forgotten]
        now_ms = self.keyspace.wall_ms()
        candidates = store.dead(now_ms - self._grace_ms)
        if not candidates:
            return
        chosen = purgeable(
            candidates,
            now_ms,
            self._grace_ms,
            lambda key: partition_of(key, ring.partitions),
            lambda partition: [n for n in ring.partition_owners(partition) if n != me],
            self._confirmed,
        )
        if chosen:
            expired = [record for record in chosen if record.value is not None]
            tombstones = [record for record in chosen if record.value is None]
            purged_tombstones = await store.purge(tombstones) if tombstones else 0
            purged_expired = await store.purge(expired) if expired else 0
            self.stats.purged += purged_tombstones
            self.stats.expired_purged += purged_expired
            log.info(
                "[anti-entropy] purged %d tombstones and %d expired records dead for longer "
                "than the grace period",
                purged_tombstones,
                purged_expired,
            )

    @property
    def _grace_ms(self) -> int:
        return int(self.settings.tombstone_grace_s * 1000)

    async def _compare(self, link: PeerLink, peer: str, report: PeerReport) -> list[int]:
        """Compare and repair the partitions shared with `peer`; return them."""
        me = self.cluster.node_id
        shared = self.cluster.ring.shared_partitions(me, peer)
        report.partitions = len(shared)
        if not shared:
            return shared
        walk = TreeWalk(me, await self.index(), shared, self.settings.fanout)
        # Bounded: one step per tree level, then Chunks and Entries; a peer that is
        # building its index is asked again for INDEX_BUILD_WAIT at most.
        while (request := walk.request) is not None:
            if walk.pause:
                await trio.sleep(walk.pause)
            if isinstance(request, TreeRequest):
                walk.on_tree(await link.tree(request, report), trio.current_time())
                report.tree_nodes = walk.tree_nodes
            elif isinstance(request, ChunksRequest):
                walk.on_chunks(await link.chunks(request, report))
                report.leaves = len(walk.leaves)
            else:
                walk.on_entries(await link.entries(request, report))
        if walk.skipped:
            report.skipped = walk.skipped
            return shared
        if not walk.leaves:
            return shared
        theirs = self._valid_entries(walk.entries, peer)
        mine = self.keyspace.read_local(walk.my_keys())
        moves = transfers(mine, theirs, self.keyspace.wall_ms(), self._grace_ms)
        await self._transfer(link, moves.pull, moves.push, report)
        log.info(
            "[anti-entropy] MISMATCH peer=%s partitions=%d leaves=%d keys=%d pulled=%d pushed=%d",
            peer,
            len(walk.partitions),
            len(walk.leaves),
            len(moves.pull) + len(moves.push),
            report.keys_pulled,
            report.keys_pushed,
        )
        return shared

    def _valid_entries(
        self, entries: Sequence[EntryVersion], peer: str
    ) -> dict[bytes, EntryVersion]:
        """The peer's entries that pass the checks, by key; the others are counted."""
        valid, refused = check_entries(entries, self.keyspace.limits, self.keyspace.wall_ms())
        for error in refused:
            self.keyspace.reject("Entries", error, peer)
        return valid

    async def _transfer(
        self, link: PeerLink, pull: list[bytes], push: list[Record], report: PeerReport
    ) -> None:
        peer = link.node_id
        for start in range(0, len(pull), TRANSFER_BATCH):
            keys = pull[start : start + TRANSFER_BATCH]
            fetched = await link.fetch(keys, report)
            await self.keyspace.apply_replicated(fetched, "repair", peer)
            report.keys_pulled += len(fetched)
            await self._pace(len(keys))
        for start in range(0, len(push), TRANSFER_BATCH):
            batch = push[start : start + TRANSFER_BATCH]
            await link.push(batch, report)
            report.keys_pushed += len(batch)
            await self._pace(len(batch))

    async def _pace(self, keys: int) -> None:
        rate = self.settings.max_keys_per_second
        if rate > 0:
            await trio.sleep(keys / rate)
