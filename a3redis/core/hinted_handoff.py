"""Hinted handoff: which writes a node holds for a replica, and when it hands them over.

Rules:
- A hint is a record held for one replica that was down or did not answer
  a write. Per replica and key only the newest record is held (`supersedes`):
  last-write-wins makes an older one pointless, so `hold` keeps only the
  records that are newer than what is held, and returns them (the shell
  appends exactly those to the replica's file).
- Hints never count toward a write's W; they are an optimisation, and
  anti-entropy repairs whatever they would have.
- The hint window: a hint whose version is older than `window_ms` (by the
  wall clock of the node holding it) is dropped (`expire`, which counts
  them): by then anti-entropy has repaired what it would have.
- Each round (`due`), per replica:
  - none held any more (delivered or expired): it is forgotten;
  - the member is ALIVE: its hints are delivered, a snapshot in batches of
    at most `batch` records, sent in order;
  - the member LEFT the ring, or was forgotten by membership
    (DEAD_MEMBER_REAP): its hints are dropped with it, never delivered;
  - otherwise (suspect, dead, or not known yet) they wait.
- A delivered batch (`delivered`) removes only the hints that are still the
  ones sent: a hint superseded while the batch was in flight stays, to be
  delivered next. A hint the replica refuses (REJECTED by its checks) counts
  as delivered: it would be refused again.
- Bounds: a delivery sends at most `batch` records per call. A replica's
  file only grows between rewrites; it is due for a rewrite with its live
  hints once a delivery removed some (so a restart does not send them
  again), or once it holds more than twice its live hints plus
  `rewrite_slack` (the overwrites of a long-dead replica's hot keys), so no
  file grows without end. The number of hints held is bounded by the keys
  written within the window (one per key and replica).
- The shell does the file I/O, the time and the calls: it restores what
  the files hold, tells the core what it appended and rewrote, and carries
  out the steps `due` returns. Time (`now_ms`, wall milliseconds) is an
  argument; nothing here waits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from a3redis.core.membership import MemberState, Status
from a3redis.core.record import Record, supersedes

# Records per delivery call.
DELIVERY_BATCH = 500
# A file is rewritten once it holds this many records more than twice its live hints.
REWRITE_SLACK = 1000


class Members(Protocol):
    """What the hint rules read from the member table (core.membership.Membership)."""

    def get(self, node_id: str) -> MemberState | None: ...

    def is_forgotten(self, node_id: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Deliver:
    """Send `batches` to `replica` in order; report each answered one to `delivered`."""

    replica: str
    batches: list[list[Record]]


@dataclass(frozen=True, slots=True)
class Drop:
    """`replica`'s hints are gone (`count` of them, because `reason`): remove its file."""

    replica: str
    count: int
    reason: str


Step = Deliver | Drop


class Hints:
    """One node's hints, per replica; the shell persists them and carries out `due`."""

    def __init__(
        self,
        window_ms: int,
        batch: int = DELIVERY_BATCH,
        rewrite_slack: int = REWRITE_SLACK,
    ) -> None:
        if batch < 1:
            raise ValueError("a delivery batch holds at least one record")
        self.window_ms = window_ms
        self.batch = batch
        self.rewrite_slack = rewrite_slack
        self._held: dict[str, dict[bytes, Record]] = {}
        # Records in each replica's file, live or not, as the shell reported them.
        self._in_file: dict[str, int] = {}
        # Replicas whose file still holds hints that a delivery removed.
        self._delivered_since_rewrite: set[str] = set()

    # ----- holding ------------------------------------------------------------------------

    def hold(self, replica: str, records: Iterable[Record]) -> list[Record]:
        """Hold `records` for `replica`; the ones newer than what it held (to persist)."""
        held = self._held.setdefault(replica, {})
        fresh = []
        for record in records:
            if supersedes(record, held.get(record.key)):
                held[record.key] = record
                fresh.append(record)
        return fresh

    def restore(self, replica: str, records: Sequence[Record]) -> None:
        """Hold what `replica`'s file holds (all of `records`, in file order)."""
        self.hold(replica, records)
        self._in_file[replica] = len(records)

    def expire(self, now_ms: int) -> int:
        """Drop the hints older than the window; how many went."""
        oldest = now_ms - self.window_ms
        dropped = 0
        for held in self._held.values():
            for key in [k for k, r in held.items() if r.version.wall_ms < oldest]:
                del held[key]
                dropped += 1
        return dropped

    # ----- delivering ---------------------------------------------------------------------

    def due(self, members: Members) -> list[Step]:
        """This round's steps: deliveries to alive replicas, replicas dropped (already done)."""
        steps: list[Step] = []
        for replica in list(self._held):
            member = members.get(replica)
            if not self._held[replica]:
                steps.append(Drop(replica, self.forget(replica), ""))
            elif member is not None and member.status is Status.ALIVE:
                steps.append(Deliver(replica, self._batches(replica)))
            elif member is not None and member.status is Status.LEFT:
                steps.append(Drop(replica, self.forget(replica), "it left the ring"))
            elif member is None and members.is_forgotten(replica):
                reason = "it was forgotten (DEAD_MEMBER_REAP)"
                steps.append(Drop(replica, self.forget(replica), reason))
        return steps

    def _batches(self, replica: str) -> list[list[Record]]:
        snapshot = list(self._held[replica].values())
        return [snapshot[i : i + self.batch] for i in range(0, len(snapshot), self.batch)]

    def delivered(self, replica: str, batch: Sequence[Record]) -> int:
        """`replica` answered `batch`: remove the hints still as sent; how many went."""
        held = self._held.get(replica)
        if held is None:
            return 0
        removed = 0
        for record in batch:
            if held.get(record.key) is record:
                del held[record.key]
                removed += 1
        if removed:
            self._delivered_since_rewrite.add(replica)
        return removed

    def forget(self, replica: str) -> int:
        """Drop every hint for `replica` (and what we knew of its file); how many went."""
        self._in_file.pop(replica, None)
        self._delivered_since_rewrite.discard(replica)
        return len(self._held.pop(replica, {}))

    # ----- files --------------------------------------------------------------------------

    def appended(self, replica: str, count: int) -> None:
        """The shell appended `count` records to `replica`'s file."""
        self._in_file[replica] = self._in_file.get(replica, 0) + count

    def stale_files(self) -> list[str]:
        """Replicas whose file should be rewritten with their live hints (see the rules)."""
        return [
            replica
            for replica, held in self._held.items()
            if replica in self._delivered_since_rewrite or self._outgrown(replica, len(held))
        ]

    def _outgrown(self, replica: str, live: int) -> bool:
        return live > 0 and self._in_file.get(replica, 0) > 2 * live + self.rewrite_slack

    def rewritten(self, replica: str, count: int) -> None:
        """The shell rewrote `replica`'s file with `count` live hints."""
        self._in_file[replica] = count
        self._delivered_since_rewrite.discard(replica)

    # ----- reading ------------------------------------------------------------------------

    def held(self, replica: str) -> dict[bytes, Record]:
        """A copy of `replica`'s hints, by key."""
        return dict(self._held.get(replica, {}))

    def live(self, replica: str) -> list[Record]:
        """`replica`'s hints, as its rewritten file holds them."""
        return list(self._held.get(replica, {}).values())

    def pending(self) -> dict[str, int]:
        """Hints held per replica (replicas holding none left out)."""
        return {replica: len(held) for replica, held in self._held.items() if held}
