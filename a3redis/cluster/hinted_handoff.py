"""Hinted handoff's shell: the hints files, the delivery loop and its calls.

The rules (which hints are held, the window, when and what is delivered,
when a replica's hints go, when its file is rewritten) are the core's,
a3redis.core.hinted_handoff; this shell keeps its hints in files, keeps time
and makes the calls. A replica's hints live in an append-only file
`DATA_DIR/hints/<node id>.hints` (the storage file format of kind "hints",
fdatasync'ed in a worker thread before `store` returns; a torn tail is cut
on load). Each second the loop expires old hints, carries out the core's
deliveries (each batch one Apply call to the replica, in order, stopping at
the first that fails) and drops, and rewrites the files the core names.

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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import trio

from a3redis.cluster.peers import PeerUnavailableError
from a3redis.cluster.topology import Topology
from a3redis.core.hinted_handoff import Deliver, Drop, Hints
from a3redis.core.names import is_node_id
from a3redis.core.record import Record
from a3redis.core.throttle import LogThrottle, Tally
from a3redis.storage import codec
from a3redis.storage.files import AppendLog, truncate_file, write_file

log = logging.getLogger("a3redis.cluster.hinted_handoff")

_FILE = re.compile(r"^(.+)\.hints$")
LOG_INTERVAL = 60.0


class HintStore:
    def __init__(self, directory: Path, window_s: float, wall_ms: Callable[[], int]) -> None:
        self.directory = directory
        self.hints = Hints(int(window_s * 1000))
        self._wall_ms = wall_ms
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
            if decoded.valid_length and codec.header_format(data) != codec.FORMAT_VERSION:
                # Appends must not mix layouts: the file is rewritten in the current format.
                self._rewrite(path, decoded.records)
            self.hints.restore(match.group(1), decoded.records)
        if strays:
            log.warning(
                "ignoring %d files in %s not named by a valid node id (first: %s)",
                len(strays),
                self.directory,
                ascii(strays[0][:80]),
            )
        self.expired += self.hints.expire(self._wall_ms())

    # ----- storing ------------------------------------------------------------------------

    def pending(self) -> dict[str, int]:
        return self.hints.pending()

    def held(self, node_id: str) -> Mapping[bytes, Record]:
        """The hints held for `node_id`, by key (a copy)."""
        return self.hints.held(node_id)

    async def store(self, node_id: str, records: Sequence[Record]) -> None:
        """Keep `records` for `node_id`, durably (in memory only if the disk fails)."""
        path = self._path(node_id)
        fresh = self.hints.hold(node_id, records)
        if not fresh:
            return
        payloads = [codec.encode_payload(record) for record in fresh]
        try:
            async with self._lock:
                await trio.to_thread.run_sync(self._append, path, payloads)
        except OSError as error:
            self._failed("store", node_id, error)
        else:
            self.hints.appended(node_id, len(payloads))
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

    # ----- delivering ---------------------------------------------------------------------

    async def run_delivery(
        self,
        cluster: Topology,
        interval: float,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        while True:
            self.expired += self.hints.expire(self._wall_ms())
            for step in self.hints.due(cluster.membership):
                if isinstance(step, Deliver):
                    await self._deliver(cluster, step)
                else:
                    await self._drop(step)
            for node_id in self.hints.stale_files():
                await self._rewrite_live(node_id)
            await trio.sleep(interval)

    async def _deliver(self, cluster: Topology, step: Deliver) -> None:
        link = cluster.link(step.replica)
        if link is None:
            return
        sent = 0
        try:
            for batch in step.batches:
                await link.apply(batch)
                self.hints.delivered(step.replica, batch)
                sent += len(batch)
        except PeerUnavailableError as error:
            log.info("hint delivery to %s paused: %s", step.replica, error)
        if sent:
            self.delivered += sent
            log.info("delivered %d hints to %s", sent, step.replica)

    async def _rewrite_live(self, node_id: str) -> None:
        """Rewrite a replica's file with its live hints only (nothing else changes)."""
        try:
            path = self._path(node_id)
            async with self._lock:
                # Taken under the lock, so that no append lands between snapshot and rewrite.
                live = self.hints.live(node_id)
                await trio.to_thread.run_sync(self._rewrite, path, live)
        except OSError as error:
            self._failed("rewrite", node_id, error)
            return
        self.hints.rewritten(node_id, len(live))

    async def _drop(self, step: Drop) -> None:
        """Remove the file of a replica whose hints the core dropped."""
        try:
            async with self._lock:
                await trio.to_thread.run_sync(self._rewrite, self._path(step.replica), [])
        except OSError as error:
            self._failed("drop", step.replica, error)
        if step.count:
            log.info("dropped %d hints for %s: %s", step.count, step.replica, step.reason)
