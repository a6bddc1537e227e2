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
refused again. It drops a target's hints when
the target left or was forgotten, and rewrites a file that holds mostly
dropped or superseded records, so the file of a long-dead target does not
grow without end. Hints never count toward a write's W.

A file name is only ever made from a node id that passed the one node-id
rule (a3redis.core.names, applied to everything gossip admits), and the
resolved path is checked to lie inside the hints directory: a name that
does not is our own bug and stops the node. Files on disk whose names do not
follow the rule (from an older release) are left alone and logged once.
Hints are an optimisation: a disk error while keeping or rewriting them is
logged (at most once per LOG_INTERVAL) and counted in `errors`, and the
node goes on; anti-entropy repairs what they would have.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from a3redis.cluster import Cluster
from a3redis.core.membership import Status
from a3redis.core.names import is_node_id
from a3redis.core.record import Record, supersedes
from a3redis.core.throttle import LogThrottle, Tally
from a3redis.peers import PeerUnavailableError
from a3redis.storage import codec
from a3redis.storage.files import AppendLog, truncate_file, write_file

log = logging.getLogger("a3redis.hints")

_FILE = re.compile(r"^(.+)\.hints$")
DELIVERY_BATCH = 500
LOG_INTERVAL = 60.0
# A file is rewritten once it holds this many records more than twice its live hints.
REWRITE_SLACK = 1000


class HintStore:
    def __init__(self, directory: Path, window_s: float, wall_ms: Callable[[], int]) -> None:
        self.directory = directory
        self.window_ms = int(window_s * 1000)
        self._wall_ms = wall_ms
        self._hints: dict[str, dict[bytes, Record]] = {}
        # Records in each target's file (live or not): decides when to rewrite it.
        self._in_file: dict[str, int] = {}
        self._lock = trio.Lock()
        self._log_throttle = LogThrottle(LOG_INTERVAL)
        self.stored = 0
        self.delivered = 0
        self.expired = 0
        # (task, reason) -> failures the node survived.
        self.errors = Tally()

    # ----- loading ------------------------------------------------------------------------

    def load(self) -> None:
        """Read every hints file (blocking; call before serving)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        strays = []
        for path in sorted(self.directory.iterdir()):
            match = _FILE.match(path.name)
            if not match:
                continue
            if not is_node_id(match.group(1)) or not path.is_file():
                strays.append(path.name)
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
            self._in_file[match.group(1)] = len(decoded.records)
            for record in decoded.records:
                if supersedes(record, target.get(record.key)):
                    target[record.key] = record
        if strays:
            log.warning(
                "ignoring %d files in %s not named by a valid node id (first: %s)",
                len(strays),
                self.directory,
                ascii(strays[0][:80]),
            )
        self._expire()

    # ----- storing ------------------------------------------------------------------------

    def pending(self) -> dict[str, int]:
        return {node: len(hints) for node, hints in self._hints.items() if hints}

    async def store(self, node_id: str, records: Sequence[Record]) -> None:
        """Keep `records` for `node_id`, durably (in memory only if the disk fails)."""
        path = self._path(node_id)
        target = self._hints.setdefault(node_id, {})
        fresh = [r for r in records if supersedes(r, target.get(r.key))]
        if not fresh:
            return
        payloads = [codec.encode_payload(record) for record in fresh]
        for record in fresh:
            target[record.key] = record
        try:
            async with self._lock:
                await trio.to_thread.run_sync(self._append, path, payloads)
        except OSError as error:
            self._failed("store", node_id, error)
        else:
            self._in_file[node_id] = self._in_file.get(node_id, 0) + len(payloads)
        self.stored += len(fresh)

    def _path(self, node_id: str) -> Path:
        """The file of `node_id`'s hints, always directly inside the hints directory."""
        if not is_node_id(node_id):
            raise AssertionError(f"hint target {node_id[:80]!r} is not a valid node id")
        path = self.directory / f"{node_id}.hints"
        if path.resolve().parent != self.directory.resolve():
            raise AssertionError(f"hints file {path} would lie outside {self.directory}")
        return path

    def _failed(self, task: str, node_id: str, error: OSError) -> None:
        self.errors.add((f"hints_{task}", type(error).__name__))
        should, held_back = self._log_throttle.should_log(task, trio.current_time())
        if should:
            more = f" ({held_back} more since the last line)" if held_back else ""
            log.error("hints for %s: %s failed: %s%s", node_id, task, error, more)

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
            for node_id in list(self._hints):
                member = cluster.membership.get(node_id)
                if not self._hints[node_id]:
                    await self._drop(node_id, "")
                elif member is not None and member.status is Status.ALIVE:
                    await self._deliver(cluster, node_id)
                elif member is not None and member.status is Status.LEFT:
                    await self._drop(node_id, "it left the ring")
                elif member is None and cluster.membership.is_forgotten(node_id):
                    await self._drop(node_id, "it was forgotten (DEAD_MEMBER_REAP)")
                live = len(self._hints.get(node_id, ()))
                if live and self._in_file.get(node_id, 0) > 2 * live + REWRITE_SLACK:
                    await self._rewrite_live(node_id)
            await trio.sleep(interval)

    async def _rewrite_live(self, node_id: str) -> None:
        """Rewrite a target's file with its live hints only (nothing else changes)."""
        live = list(self._hints.get(node_id, {}).values())
        try:
            async with self._lock:
                await trio.to_thread.run_sync(self._rewrite, self._path(node_id), live)
        except OSError as error:
            self._failed("rewrite", node_id, error)
            return
        self._in_file[node_id] = len(live)

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
            await self._rewrite_live(node_id)
            log.info("delivered %d hints to %s", len(delivered), node_id)

    async def _drop(self, node_id: str, reason: str) -> None:
        """Forget a target's hints and remove its file (`reason`: why, if any were left)."""
        count = len(self._hints.pop(node_id, {}))
        try:
            async with self._lock:
                await trio.to_thread.run_sync(self._rewrite, self._path(node_id), [])
        except OSError as error:
            self._failed("drop", node_id, error)
        self._in_file.pop(node_id, None)
        if count:
            log.info("dropped %d hints for %s: %s", count, node_id, reason)
