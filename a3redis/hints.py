"""Hinted handoff: writes held for a replica that was down, delivered when it is back.

Rules: a hint is a record kept for one target node, in memory and in an
append-only file `DATA_DIR/hints/<node id>.hints` (the storage file format
of kind "hints", fdatasync'ed in a worker thread before `store` returns; a
torn tail is cut on load). Per target and key only the newest record is
kept: last-write-wins makes the older ones pointless. Hints older than
HINT_WINDOW are dropped (anti-entropy repairs what they would have). The
delivery loop hands a target its hints in batches once membership shows it
alive, then rewrites the file without them; a hint the target refuses
(REJECTED by its checks) is dropped like a delivered one, since it would be
refused again. Hints never count toward a write's W.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from a3redis.cluster import Cluster
from a3redis.core.membership import Status
from a3redis.core.record import Record, supersedes
from a3redis.peers import PeerUnavailableError
from a3redis.storage import codec
from a3redis.storage.files import AppendLog, truncate_file, write_file

log = logging.getLogger("a3redis.hints")

_FILE = re.compile(r"^(.+)\.hints$")
DELIVERY_BATCH = 500


class HintStore:
    def __init__(self, directory: Path, window_s: float, wall_ms: Callable[[], int]) -> None:
        self.directory = directory
        self.window_ms = int(window_s * 1000)
        self._wall_ms = wall_ms
        self._hints: dict[str, dict[bytes, Record]] = {}
        self._lock = trio.Lock()
        self.stored = 0
        self.delivered = 0
        self.expired = 0

    # ----- loading ------------------------------------------------------------------------

    def load(self) -> None:
        """Read every hints file (blocking; call before serving)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.directory.iterdir()):
            match = _FILE.match(path.name)
            if not match:
                continue
            data = path.read_bytes()
            try:
                decoded = codec.decode_file(data, codec.FileKind.HINTS)
            except codec.CorruptLogError as error:
                # Hints are an optimisation: anti-entropy covers what they hold.
                log.error("dropping unreadable hints file %s: %s", path, error)
                path.unlink()
                continue
            if decoded.valid_length < len(data):
                # Cut a torn tail now, or later appends would follow it and read as corruption.
                log.warning("%s: cutting a torn tail at %d", path, decoded.valid_length)
                truncate_file(path, decoded.valid_length)
            target = self._hints.setdefault(match.group(1), {})
            for record in decoded.records:
                if supersedes(record, target.get(record.key)):
                    target[record.key] = record
        self._expire()

    # ----- storing ------------------------------------------------------------------------

    def pending(self) -> dict[str, int]:
        return {node: len(hints) for node, hints in self._hints.items() if hints}

    async def store(self, node_id: str, records: Sequence[Record]) -> None:
        """Keep `records` for `node_id`, durably."""
        target = self._hints.setdefault(node_id, {})
        fresh = [r for r in records if supersedes(r, target.get(r.key))]
        if not fresh:
            return
        payloads = [codec.encode_payload(record) for record in fresh]
        for record in fresh:
            target[record.key] = record
        async with self._lock:
            await trio.to_thread.run_sync(self._append, self._path(node_id), payloads)
        self.stored += len(fresh)

    def _path(self, node_id: str) -> Path:
        return self.directory / f"{node_id}.hints"

    @staticmethod
    def _append(path: Path, payloads: list[bytes]) -> None:
        hints_file = AppendLog(path, codec.FileKind.HINTS)
        try:
            hints_file.write_and_sync(hints_file.frames(payloads))
        finally:
            hints_file.close()

    @staticmethod
    def _rewrite(path: Path, records: list[Record]) -> None:
        if not records:
            path.unlink(missing_ok=True)
            return
        write_file(path, codec.FileKind.HINTS, records)

    def _expire(self) -> None:
        oldest = self._wall_ms() - self.window_ms
        for hints in self._hints.values():
            for key in [k for k, r in hints.items() if r.version.wall_ms < oldest]:
                del hints[key]
                self.expired += 1

    # ----- delivering ---------------------------------------------------------------------

    async def run_delivery(
        self,
        cluster: Cluster,
        interval: float,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        while True:
            self._expire()
            for node_id in [n for n, hints in self._hints.items() if hints]:
                member = cluster.membership.get(node_id)
                if member is not None and member.status is Status.ALIVE:
                    await self._deliver(cluster, node_id)
                elif member is not None and member.status is Status.LEFT:
                    await self._drop(node_id, "it left the ring")
            await trio.sleep(interval)

    async def _deliver(self, cluster: Cluster, node_id: str) -> None:
        link = cluster.link(node_id)
        if link is None:
            return
        hints = self._hints[node_id]
        snapshot = list(hints.values())
        sent = 0
        try:
            for start in range(0, len(snapshot), DELIVERY_BATCH):
                await link.apply(snapshot[start : start + DELIVERY_BATCH])
                sent = start + DELIVERY_BATCH
        except PeerUnavailableError as error:
            log.info("hint delivery to %s paused: %s", node_id, error)
        delivered = snapshot[:sent]
        for record in delivered:
            if hints.get(record.key) is record:
                del hints[record.key]
        if delivered:
            self.delivered += len(delivered)
            async with self._lock:
                await trio.to_thread.run_sync(
                    self._rewrite, self._path(node_id), list(hints.values())
                )
            log.info("delivered %d hints to %s", len(delivered), node_id)

    async def _drop(self, node_id: str, reason: str) -> None:
        count = len(self._hints.pop(node_id, {}))
        async with self._lock:
            await trio.to_thread.run_sync(self._rewrite, self._path(node_id), [])
        log.info("dropped %d hints for %s: %s", count, node_id, reason)
