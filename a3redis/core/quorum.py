"""Quorum bookkeeping for one write or one read (N/R/W), without any I/O.

Rules: a write succeeds once `required` replicas acknowledged it (stored it,
or already held that very version), and is known to have failed as soon as
too many replicas failed for that ever to happen; a replica that holds a
newer version counts as a failure and is remembered, so the caller can say
the write lost rather than that replicas were down; acknowledgements are
counted once per replica. While the ring changes (a3redis.core.transition) a
write needs `required` acknowledgements among the old replicas of its key
and `required` among the new ones (JointWriteQuorum). A read is answered
once `required` replicas replied, with the newest record among those
replies; once every replica has replied (or failed), `stale` names the
replicas that hold an older copy or none, for read repair.
"""

from __future__ import annotations

from collections.abc import Sequence

from a3redis.core.record import Record, supersedes


class WriteQuorum:
    __slots__ = ("acked", "failed", "replicas", "required", "superseded")

    def __init__(self, replicas: Sequence[str], required: int) -> None:
        if not 0 < required <= len(replicas):
            raise ValueError(f"cannot require {required} of {len(replicas)} replicas")
        self.replicas = tuple(replicas)
        self.required = required
        self.acked: set[str] = set()
        self.failed: set[str] = set()
        # Replicas that hold a newer version: the write lost last-write-wins there.
        self.superseded: set[str] = set()

    def supersede(self, replica: str) -> None:
        if replica in self.replicas and replica not in self.acked:
            self.failed.add(replica)
            self.superseded.add(replica)

    def ack(self, replica: str) -> None:
        if replica in self.replicas and replica not in self.failed:
            self.acked.add(replica)

    def fail(self, replica: str) -> None:
        if replica in self.replicas and replica not in self.acked:
            self.failed.add(replica)

    @property
    def succeeded(self) -> bool:
        return len(self.acked) >= self.required

    @property
    def impossible(self) -> bool:
        return len(self.replicas) - len(self.failed) < self.required

    @property
    def decided(self) -> bool:
        # succeeded or impossible, spelled out: every answer of a batch asks.
        required = self.required
        return len(self.acked) >= required or len(self.replicas) - len(self.failed) < required


class JointWriteQuorum(WriteQuorum):
    """A write while the ring changes: `required` acknowledgements in each of two lists."""

    __slots__ = ("groups",)

    def __init__(self, old: Sequence[str], new: Sequence[str], required: int) -> None:
        if not 0 < required <= min(len(old), len(new)):
            raise ValueError(f"cannot require {required} of {len(old)} and {len(new)} replicas")
        super().__init__((*old, *(r for r in new if r not in old)), required)
        self.groups = (tuple(old), tuple(new))

    @property
    def succeeded(self) -> bool:
        acked, required = self.acked, self.required
        return all(sum(r in acked for r in group) >= required for group in self.groups)

    @property
    def impossible(self) -> bool:
        failed, required = self.failed, self.required
        return any(len(group) - sum(r in failed for r in group) < required for group in self.groups)

    @property
    def decided(self) -> bool:
        return self.succeeded or self.impossible


class ReadQuorum:
    __slots__ = ("_decided_with", "answers", "failed", "replicas", "required", "result")

    def __init__(self, replicas: Sequence[str], required: int) -> None:
        if not 0 < required <= len(replicas):
            raise ValueError(f"cannot require {required} of {len(replicas)} replicas")
        self.replicas = tuple(replicas)
        self.required = required
        self.answers: dict[str, Record | None] = {}
        self.failed: set[str] = set()
        # The newest record among the answers that decided the read.
        self.result: Record | None = None
        self._decided_with = 0

    def answer(self, replica: str, record: Record | None) -> None:
        if replica not in self.replicas or replica in self.answers or replica in self.failed:
            return
        self.answers[replica] = record
        if self._decided_with == 0 and len(self.answers) >= self.required:
            self._decided_with = len(self.answers)
            for found in self.answers.values():
                if found is not None and supersedes(found, self.result):
                    self.result = found

    def fail(self, replica: str) -> None:
        if replica in self.replicas and replica not in self.answers:
            self.failed.add(replica)

    @property
    def succeeded(self) -> bool:
        return self._decided_with > 0

    @property
    def impossible(self) -> bool:
        return not self.succeeded and len(self.replicas) - len(self.failed) < self.required

    @property
    def decided(self) -> bool:
        return self.succeeded or self.impossible

    @property
    def complete(self) -> bool:
        return len(self.answers) + len(self.failed) == len(self.replicas)

    def newest(self) -> Record | None:
        """The newest record among all answers so far (may be newer than `result`)."""
        newest: Record | None = None
        for found in self.answers.values():
            if found is not None and supersedes(found, newest):
                newest = found
        return newest

    def stale(self) -> dict[str, Record]:
        """Replicas that answered with an older copy (or none), and the record they need."""
        newest = self.newest()
        if newest is None:
            return {}
        return {
            replica: newest
            for replica, found in self.answers.items()
            if found is None or supersedes(newest, found)
        }
