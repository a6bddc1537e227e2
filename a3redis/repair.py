"""Anti-entropy: replicas compare Merkle trees and exchange only what differs.

Rules: every SYNC_INTERVAL (with jitter) a node runs a round with each live
peer it shares partitions with. A round compares the roots of the range
trees over the shared partitions (equal: done, a few dozen bytes), walks
down only the differing children one level per call, compares the chunk
hashes of the differing partitions, then the (key, version) lists of the
differing chunks, and transfers only the entries whose versions differ, in
both directions, newer wins. Transfers are paced by
REPAIR_MAX_KEYS_PER_SECOND so client traffic is not starved; an unreachable
peer is skipped quietly. The serving side answers from the same cached index.
Each round ends with the tombstone purge pass and the handoff pass
(a3redis.handoff) for partitions this node holds but does not own.
What a peer sends is checked like any peer input (core.validation): an
entry that fails is left out of the comparison (so our valid copy is pushed
over it), a pulled record that fails is not applied, and both are counted;
a stored record beyond the clock-skew bound is neither offered nor pushed.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
from blake3 import blake3

from a3redis import wire
from a3redis.cluster import Cluster
from a3redis.core.hlc import Version
from a3redis.core.membership import Status
from a3redis.core.merkle import MerkleIndex
from a3redis.core.purge import purgeable
from a3redis.core.record import Record
from a3redis.core.ring import partition_of
from a3redis.core.validation import InvalidRequestError, Reason
from a3redis.handoff import Handoff
from a3redis.kv import KeyValue
from a3redis.peers import PeerLink, PeerUnavailableError
from a3redis.v1 import replica_pb2 as rpb

log = logging.getLogger("a3redis.repair")

MAX_FANOUT = 256
TRANSFER_BATCH = 256
# How long a round waits for a peer that is still building its Merkle index.
INDEX_BUILD_WAIT = 60.0


@dataclass(frozen=True, slots=True)
class RepairSettings:
    interval: float
    chunks: int
    max_keys_per_second: float
    tombstone_grace_s: float
    fanout: int = 16


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
    purged: int = 0
    last_round_seconds: float = 0.0
    last_round_at: float = 0.0
    last_reports: list[PeerReport] = field(default_factory=list)


def shared_digest(partitions: Sequence[int]) -> bytes:
    return blake3(b",".join(str(p).encode() for p in partitions)).digest(16)


class AntiEntropy:
    def __init__(self, kv: KeyValue, cluster: Cluster, settings: RepairSettings) -> None:
        self.kv = kv
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
        self.handoff = Handoff(kv.store, kv.read_local, cluster, self.index, self._pace)

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
        return await self.kv.store.merkle_index(self.cluster.ring.partitions, self.settings.chunks)

    # ----- serving side -------------------------------------------------------------------

    async def serve_tree(self, request: rpb.TreeRequest) -> rpb.TreeResponse:
        shared = self.cluster.ring.shared_partitions(request.requester, self.cluster.node_id)
        if shared_digest(shared) != request.shared_digest or request.chunks != self.settings.chunks:
            return rpb.TreeResponse(same_ring=False)
        if not 2 <= request.fanout <= MAX_FANOUT:
            raise InvalidRequestError(
                f"Merkle fan-out {request.fanout} is not within 2..{MAX_FANOUT}"
            )
        index = self.kv.store.built_merkle_index
        if index is None:
            # Build it in the background and let the requester come back: a call
            # must not wait the seconds a million keys take.
            self._start_index_build()
            return rpb.TreeResponse(same_ring=True, building=True)
        tree = index.range_tree(shared, request.fanout)
        if request.level >= tree.depth:
            return rpb.TreeResponse(same_ring=False)
        nodes = tree.levels[request.level]
        if len(request.indexes) > len(nodes):
            raise InvalidRequestError(
                f"Tree asks for {len(request.indexes)} nodes; "
                f"level {request.level} has {len(nodes)}"
            )
        return rpb.TreeResponse(
            same_ring=True, hashes=[nodes[i] for i in request.indexes if i < len(nodes)]
        )

    async def serve_chunks(self, request: rpb.ChunksRequest) -> rpb.ChunksResponse:
        index = await self.index()
        if len(request.partitions) > index.partitions:
            raise InvalidRequestError(
                f"Chunks asks for {len(request.partitions)} partitions; "
                f"the ring has {index.partitions}"
            )
        hashes: list[bytes] = []
        for partition in request.partitions:
            if partition < index.partitions:
                hashes.extend(index.leaf_hashes(partition))
        return rpb.ChunksResponse(hashes=hashes)

    async def serve_entries(self, request: rpb.EntriesRequest) -> rpb.EntriesResponse:
        index = await self.index()
        leaves = index.partitions * index.chunks
        if len(request.leaves) > leaves:
            raise InvalidRequestError(
                f"{len(request.leaves)} leaves asked for; this node's index has {leaves}",
                Reason.BATCH,
            )
        entries = []
        for leaf in request.leaves:
            for record in self._records_in(index, leaf.partition, leaf.chunk):
                entries.append(
                    rpb.EntryVersion(
                        key=record.key,
                        version=wire.version_to_pb(record.version),
                        tombstone=record.value is None,
                    )
                )
        return rpb.EntriesResponse(entries=entries)

    def _records_in(self, index: MerkleIndex, partition: int, chunk: int) -> list[Record]:
        if partition >= index.partitions or chunk >= index.chunks:
            return []
        found = self.kv.read_local(sorted(index.keys_in(partition, chunk)))
        return [record for record in found if record is not None]

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
        started_ms = self.kv.wall_ms()
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
        """Drop the tombstones that every replica is known to hold, after the grace period."""
        store = self.kv.store
        ring = self.cluster.ring
        me = self.cluster.node_id
        # Confirmations from peers no longer in the ring can never count again.
        members = set(ring.members)
        for forgotten in [key for key in self._confirmed if key[1] not in members]:
            del self._confirmed[forgotten]
        candidates = store.tombstones()
        if not candidates:
            return
        chosen = purgeable(
            candidates,
            self.kv.wall_ms(),
            self._grace_ms,
            lambda key: partition_of(key, ring.partitions),
            lambda partition: [n for n in ring.partition_owners(partition) if n != me],
            self._confirmed,
        )
        if chosen:
            purged = await store.purge(chosen)
            self.stats.purged += purged
            log.info("[anti-entropy] purged %d tombstones older than the grace period", purged)

    @property
    def _grace_ms(self) -> int:
        return int(self.settings.tombstone_grace_s * 1000)

    def _expired_tombstone(self, version: Version, tombstone: bool) -> bool:
        # Past the grace period a tombstone is about to be purged everywhere: copying it
        # to a replica that has no entry for the key (it already purged it) would only
        # bring it back for a while. A replica holding an older value always gets it.
        return tombstone and version.wall_ms < self.kv.wall_ms() - self._grace_ms

    async def _call(self, link: PeerLink, method: str, request: Any, report: PeerReport) -> Any:
        report.bytes_sent += request.ByteSize()
        report.calls += 1
        response = await link.unary(method, request)
        report.bytes_received += response.ByteSize()
        return response

    async def _compare(self, link: PeerLink, peer: str, report: PeerReport) -> list[int]:
        """Compare and repair the partitions shared with `peer`; return them."""
        me = self.cluster.node_id
        shared = self.cluster.ring.shared_partitions(me, peer)
        report.partitions = len(shared)
        if not shared:
            return shared
        index = await self.index()
        fanout = self.settings.fanout
        tree = index.range_tree(shared, fanout)
        digest = shared_digest(shared)
        differing = [0]
        for level in range(tree.depth):
            if level > 0:
                differing = [
                    child
                    for parent in differing
                    for child in range(
                        parent * fanout, min((parent + 1) * fanout, len(tree.levels[level]))
                    )
                ]
            request = rpb.TreeRequest(
                requester=me,
                shared_digest=digest,
                level=level,
                indexes=differing,
                fanout=fanout,
                chunks=self.settings.chunks,
            )
            response = await self._call(link, "Tree", request, report)
            with trio.move_on_after(INDEX_BUILD_WAIT):
                while response.building:
                    await trio.sleep(0.2)
                    response = await self._call(link, "Tree", request, report)
            if response.building:
                report.skipped = "the peer is still building its Merkle index"
                return shared
            if not response.same_ring:
                report.skipped = "ring views or CHUNK_COUNT differ (membership may be converging)"
                return shared
            report.tree_nodes += len(differing)
            mine = tree.levels[level]
            differing = [
                i
                for i, theirs in zip(differing, response.hashes, strict=False)
                if mine[i] != theirs
            ]
            if not differing:
                return shared
        partitions = [shared[i] for i in differing]
        response = await self._call(
            link, "Chunks", rpb.ChunksRequest(partitions=partitions), report
        )
        chunks = index.chunks
        leaves: list[tuple[int, int]] = []
        for position, partition in enumerate(partitions):
            theirs = response.hashes[position * chunks : (position + 1) * chunks]
            ours = index.leaf_hashes(partition)
            leaves.extend(
                (partition, chunk)
                for chunk in range(chunks)
                if chunk >= len(theirs) or ours[chunk] != theirs[chunk]
            )
        report.leaves = len(leaves)
        if not leaves:
            return shared
        wanted = rpb.EntriesRequest(leaves=[rpb.Leaf(partition=p, chunk=c) for p, c in leaves])
        entries = await self._call(link, "Entries", wanted, report)
        theirs_versions = self._valid_entries(entries.entries, peer)
        ours_records = {
            record.key: record
            for partition, chunk in leaves
            for record in self._records_in(index, partition, chunk)
        }
        pull = [
            key
            for key, (version, tombstone) in theirs_versions.items()
            if (
                key not in ours_records
                or (version, not tombstone)
                > (ours_records[key].version, ours_records[key].value is not None)
            )
            # An expired tombstone is not fetched back once we purged it; an older
            # value of ours, though, must always be overwritten by it.
            and not (key not in ours_records and self._expired_tombstone(version, tombstone))
        ]
        push = [
            record
            for key, record in ours_records.items()
            if (
                key not in theirs_versions
                or (record.version, record.value is not None)
                > (theirs_versions[key][0], not theirs_versions[key][1])
            )
            and not (
                key not in theirs_versions
                and self._expired_tombstone(record.version, record.value is None)
            )
        ]
        await self._transfer(link, pull, push, report)
        log.info(
            "[anti-entropy] MISMATCH peer=%s partitions=%d leaves=%d keys=%d pulled=%d pushed=%d",
            peer,
            len(partitions),
            len(leaves),
            len(pull) + len(push),
            report.keys_pulled,
            report.keys_pushed,
        )
        return shared

    def _valid_entries(
        self, entries: Sequence[rpb.EntryVersion], peer: str
    ) -> dict[bytes, tuple[Version, bool]]:
        """The peer's (key, version, tombstone) entries that pass the checks, by key."""
        limits = self.kv.limits
        wall = self.kv.wall_ms()
        valid: dict[bytes, tuple[Version, bool]] = {}
        for entry in entries:
            version = wire.version_from_pb(entry.version)
            try:
                limits.check_key(entry.key)
                limits.check_version(version, wall, "entry.version")
            except InvalidRequestError as error:
                self.kv.reject("Entries", error, peer)
                continue
            valid[entry.key] = (version, entry.tombstone)
        return valid

    async def _transfer(
        self, link: PeerLink, pull: list[bytes], push: list[Record], report: PeerReport
    ) -> None:
        peer = link.node_id
        for start in range(0, len(pull), TRANSFER_BATCH):
            keys = pull[start : start + TRANSFER_BATCH]
            response = await self._call(link, "Read", rpb.ReadRequest(keys=keys), report)
            fetched = [wire.record_from_pb(r.record) for r in response.results if r.present]
            await self.kv.apply_replicated(fetched, "repair", peer)
            report.keys_pulled += len(fetched)
            await self._pace(len(keys))
        for start in range(0, len(push), TRANSFER_BATCH):
            batch = push[start : start + TRANSFER_BATCH]
            request = rpb.ApplyRequest(
                coordinator=self.cluster.node_id, records=[wire.record_to_pb(r) for r in batch]
            )
            await self._call(link, "Apply", request, report)
            report.keys_pushed += len(batch)
            await self._pace(len(batch))

    async def _pace(self, keys: int) -> None:
        rate = self.settings.max_keys_per_second
        if rate > 0:
            await trio.sleep(keys / rate)
