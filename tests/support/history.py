"""Histories of client operations, and a checker that finds what a Dynamo-style store must not do.

Rules: pure Python, no I/O. An operation is recorded by the client that ran
it: when it was invoked and when it completed (monotonic seconds; on Linux
CLOCK_MONOTONIC is shared by every process, so histories of several client
processes merge), what it was (put, delete, get), its key and value, its
outcome and the version the store answered with.

Outcomes are what the client can know, never more:
- `ok`: acknowledged (a write's version, a read's answer).
- `fail`: definitely not applied, or definitely not visible: INVALID_ARGUMENT
  and FAILED_PRECONDITION (refused before anything was stored), UNAVAILABLE
  whose message says "nothing was written", and ABORTED (the write lost
  last-write-wins on the replicas and is reported as not visible).
- `unknown`: anything else (a deadline, a lost connection, UNAVAILABLE after
  some replicas may have stored the write): it may or may not have happened,
  at any time after it was invoked.

Every written value is unique in a history, so a read names the write it saw.

The checks (after faults stopped and replicas converged):
(a) no acknowledged write is lost: the final record of its key (the same on
    every replica) has its version, or a higher one written by an
    acknowledged or unknown write of that key;
(b) a QUORUM (or ALL) read that began after a QUORUM (or ALL) write of its key
    completed answers with that write's version or a newer one;
(c) a deleted key does not come back: a delete is a write whose record is a
    tombstone, so (a) and (b) cover it;
(d) every replica of a key holds the same record, and anti-entropy between
    them finds no differing leaves.
Besides, every value read or left in the end must come from a write that was
not `fail`, and with the version that write was acknowledged with.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from a3redis.core.hlc import Version

PUT, DELETE, GET = "put", "delete", "get"
OK, FAIL, UNKNOWN = "ok", "fail", "unknown"
WRITES = (PUT, DELETE)
# Reads and writes at these levels overlap in at least one replica (W + R > N).
OVERLAPPING = ("QUORUM", "ALL")

# ABORTED is not here: a write that lost last-write-wins on W replicas may still
# have been stored on a minority and be read there until the newer version
# reaches it; it is superseded, not unwritten.
_DEFINITE_CODES = ("INVALID_ARGUMENT", "FAILED_PRECONDITION")


def classify(code: str, message: str = "") -> str:
    """The outcome of a request that ended with gRPC status `code` ("OK" for success)."""
    if code == "OK":
        return OK
    if code in _DEFINITE_CODES:
        return FAIL
    if code == "UNAVAILABLE" and "nothing was written" in message:
        return FAIL
    return UNKNOWN


def version_json(version: Version | None) -> list[Any] | None:
    return None if version is None else [version.wall_ms, version.logical, version.node_id]


def version_from_json(raw: Any) -> Version | None:
    if raw is None:
        return None
    wall_ms, logical, node_id = raw
    return Version(int(wall_ms), int(logical), str(node_id))


@dataclass(frozen=True, slots=True)
class Op:
    client: str
    kind: str  # put | delete | get
    key: str
    # put: the value written; get: the value read (None: not found or deleted).
    value: str | None
    invoked: float
    completed: float
    outcome: str  # ok | fail | unknown
    # A write's version when acknowledged; a read's answer (a tombstone's too).
    version: Version | None = None
    consistency: str = "QUORUM"
    code: str = "OK"
    message: str = ""
    coordinator: str = ""
    index: int = -1
    # A put's acknowledged expiry, or the expiry of the record a get answered
    # (also when it had expired: then value is None); 0: none. A put's TTL asked for.
    expires_at_ms: int = 0
    ttl_ms: int = 0

    @property
    def is_write(self) -> bool:
        return self.kind in WRITES

    def to_json(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "kind": self.kind,
            "key": self.key,
            "value": self.value,
            "invoked": self.invoked,
            "completed": self.completed,
            "outcome": self.outcome,
            "version": version_json(self.version),
            "consistency": self.consistency,
            "code": self.code,
            "message": self.message,
            "coordinator": self.coordinator,
            "expires_at_ms": self.expires_at_ms,
            "ttl_ms": self.ttl_ms,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Op:
        return cls(
            client=str(raw["client"]),
            kind=str(raw["kind"]),
            key=str(raw["key"]),
            value=raw.get("value"),
            invoked=float(raw["invoked"]),
            completed=float(raw["completed"]),
            outcome=str(raw["outcome"]),
            version=version_from_json(raw.get("version")),
            consistency=str(raw.get("consistency", "QUORUM")),
            code=str(raw.get("code", "OK")),
            message=str(raw.get("message", "")),
            coordinator=str(raw.get("coordinator", "")),
            expires_at_ms=int(raw.get("expires_at_ms", 0)),
            ttl_ms=int(raw.get("ttl_ms", 0)),
        )

    def describe(self, origin: float = 0.0) -> str:
        if self.kind == PUT:
            what = f"put {self.key}={self.value!r}"
        elif self.kind == DELETE:
            what = f"delete {self.key}"
        else:
            seen = "not found" if self.value is None else repr(self.value)
            what = f"get {self.key} -> {seen}" if self.outcome == OK else f"get {self.key}"
        result = self.outcome if self.outcome == OK else f"{self.outcome} ({self.code})"
        version = f" {self.version}" if self.version is not None else ""
        via = f" via {self.coordinator}" if self.coordinator else ""
        return (
            f"#{self.index} [{self.invoked - origin:+.3f} .. {self.completed - origin:+.3f}] "
            f"{self.client}: {what} {self.consistency} -> {result}{version}{via}"
        )


@dataclass(frozen=True, slots=True)
class Observed:
    """One replica's own record of a key (a LOCAL read): a value, or a tombstone (None)."""

    value: str | None
    version: Version

    def describe(self) -> str:
        what = "tombstone" if self.value is None else repr(self.value)
        return f"{what} {self.version}"


def merge_histories(histories: Iterable[Sequence[Op]]) -> list[Op]:
    """One history ordered by invocation, each op numbered."""
    ops = sorted((op for history in histories for op in history), key=lambda o: o.invoked)
    return [replace(op, index=i) for i, op in enumerate(ops)]


def load_history(path: Path) -> list[Op]:
    return [Op.from_json(raw) for raw in json.loads(path.read_text())["ops"]]


def dump_history(path: Path, ops: Sequence[Op], **extra: Any) -> None:
    path.write_text(json.dumps({"ops": [op.to_json() for op in ops], **extra}))


@dataclass
class Anomaly:
    kind: str
    key: str
    message: str
    ops: list[Op] = field(default_factory=list)
    final: Mapping[str, Observed | None] = field(default_factory=dict)

    def render(self) -> str:
        origin = min((op.invoked for op in self.ops), default=0.0)
        lines = [f"{self.kind} on key {self.key!r}: {self.message}"]
        lines += ["    " + op.describe(origin) for op in sorted(self.ops, key=lambda o: o.index)]
        for node, record in sorted(self.final.items()):
            lines.append(f"    final {node}: {'absent' if record is None else record.describe()}")
        return "\n".join(lines)


def _by_key(history: Iterable[Op]) -> dict[str, list[Op]]:
    keys: dict[str, list[Op]] = {}
    for op in history:
        keys.setdefault(op.key, []).append(op)
    return keys


class _Writes:
    """The writes of one key, for naming the write that produced a record.

    `node_of` maps a coordinator's address to its node id, when known: a
    version's node id names the coordinator that made it, which rules out
    deletes sent elsewhere.
    """

    def __init__(self, ops: Sequence[Op], node_of: Mapping[str, str] | None = None) -> None:
        self.writes = [op for op in ops if op.is_write]
        self.by_value = {op.value: op for op in self.writes if op.kind == PUT}
        self.deletes = [op for op in self.writes if op.kind == DELETE]
        self.node_of = node_of or {}

    def source(self, value: str | None, version: Version) -> Op | None:
        """The write that produced (value, version), if the history has one that could."""
        if value is not None:
            return self.by_value.get(value)
        exact = [op for op in self.deletes if op.version == version]
        if exact:
            return exact[0]
        # An expired put reads as missing, with its version.
        expired = [op for op in self.writes if op.ttl_ms and op.version == version]
        if expired:
            return expired[0]
        # A delete whose version we never learned (unknown, aborted or failed outcome).
        candidates = [
            op
            for op in self.deletes + [w for w in self.writes if w.ttl_ms]  # or an expired put
            if op.version is None
            and self.node_of.get(op.coordinator, version.node_id) == version.node_id
        ]

        # Tombstones carry no value to tell deletes apart: with several candidates,
        # the checker takes the innocent explanation, so that it flags only what no
        # attribution could explain.
        def guilt(op: Op) -> int:
            if op.outcome == UNKNOWN:
                return 1 if op.code == "ABORTED" else 0
            return 2

        return min(candidates, key=guilt, default=None)

    def explain(
        self, key: str, value: str | None, version: Version, what: str, context: list[Op]
    ) -> Anomaly | None:
        """An anomaly if (value, version) was not produced by a write that could produce it."""
        source = self.source(value, version)
        shown = "tombstone" if value is None else repr(value)
        if source is None:
            return Anomaly(
                "phantom",
                key,
                f"{what} {shown} {version} was written by no operation in the history",
                context,
            )
        if source.outcome == FAIL:
            return Anomaly(
                "failed-write-visible",
                key,
                f"{what} {shown} {version} comes from a write reported as not applied "
                f"({source.code})",
                [*context, source],
            )
        if source.outcome == OK and source.version != version:
            return Anomaly(
                "version-mismatch",
                key,
                f"{what} {shown} has version {version} but its write was acknowledged with "
                f"{source.version}",
                [*context, source],
            )
        return None


def check_reads(history: Sequence[Op], node_of: Mapping[str, str] | None = None) -> list[Anomaly]:
    """(b) and (c): reads see every write that completed before they began, and only real ones."""
    anomalies: list[Anomaly] = []
    for key, ops in _by_key(history).items():
        writes = _Writes(ops, node_of)
        acked = sorted(
            (
                op
                for op in writes.writes
                if op.outcome == OK and op.consistency in OVERLAPPING and op.version is not None
            ),
            key=lambda o: o.completed,
        )
        for read in ops:
            if read.kind != GET or read.outcome != OK:
                continue
            if read.version is not None:
                found = writes.explain(key, read.value, read.version, "a read returned", [read])
                if found is not None:
                    anomalies.append(found)
                    continue
            elif read.value is not None:
                anomalies.append(
                    Anomaly("phantom", key, "a read returned a value without a version", [read])
                )
                continue
            if read.consistency not in OVERLAPPING:
                continue
            before = [w for w in acked if w.completed < read.invoked]
            if not before:
                continue
            newest = max(before, key=lambda w: w.version or Version(0, 0, ""))
            assert newest.version is not None
            if read.version is None or read.version < newest.version:
                source = (
                    writes.source(read.value, read.version) if read.version is not None else None
                )
                saw = (
                    "nothing"
                    if read.version is None
                    else f"{'a tombstone' if read.value is None else repr(read.value)} "
                    f"{read.version}"
                )
                kind = "resurrected-delete" if newest.kind == DELETE else "stale-read"
                anomalies.append(
                    Anomaly(
                        kind,
                        key,
                        f"a {read.consistency} read that began after the {newest.kind} "
                        f"{newest.version} was acknowledged returned {saw}",
                        [newest, read] + ([source] if source is not None else []),
                    )
                )
    return anomalies


def check_final(
    history: Sequence[Op],
    final: Mapping[str, Mapping[str, Observed | None]],
    owners: Callable[[str], Sequence[str]],
    node_of: Mapping[str, str] | None = None,
) -> list[Anomaly]:
    """(a) and (d): the replicas agree, and their record keeps every acknowledged write.

    `final` is every node's own record per key (None: absent); `owners` names
    the replicas of a key.
    """
    anomalies: list[Anomaly] = []
    by_key = _by_key(history)
    keys = set(by_key) | {key for records in final.values() for key in records}
    for key in sorted(keys):
        ops = by_key.get(key, [])
        writes = _Writes(ops, node_of)
        copies = {node: final.get(node, {}).get(key) for node in owners(key)}
        distinct = set(copies.values())
        if len(distinct) > 1:
            anomalies.append(
                Anomaly(
                    "divergent-replicas",
                    key,
                    "the replicas hold different records after convergence",
                    [],
                    copies,
                )
            )
        present = [record for record in distinct if record is not None]
        record = max(present, key=lambda r: (r.version, r.value is not None)) if present else None
        if record is not None:
            found = writes.explain(key, record.value, record.version, "the final record", [])
            source = writes.source(record.value, record.version)
            if found is None and source is not None and source.code == "ABORTED":
                # It may be read for a while, but a newer version exists durably somewhere.
                found = Anomaly(
                    "aborted-write-won",
                    key,
                    "the final record comes from a write reported ABORTED (it lost to a "
                    "newer version, which must win in the end)",
                    [source],
                )
            if found is not None:
                found.final = copies
                anomalies.append(found)
        for write in writes.writes:
            if write.outcome != OK or write.version is None:
                continue
            if record is None or record.version < write.version:
                kind = "resurrected-delete" if write.kind == DELETE else "lost-write"
                newer = [
                    w
                    for w in writes.writes
                    if w is not write and (w.version is None or w.version > write.version)
                ]
                anomalies.append(
                    Anomaly(
                        kind,
                        key,
                        f"the acknowledged {write.kind} {write.version} is not in the final "
                        f"state (final: {'absent' if record is None else record.describe()})",
                        [write, *newer[-3:]],
                        copies,
                    )
                )
            elif (
                record.version == write.version
                and record.value != (write.value if write.kind == PUT else None)
                # An expired put reads as missing, with its version (as in `source`).
                and not (record.value is None and write.kind == PUT and write.ttl_ms)
            ):
                anomalies.append(
                    Anomaly(
                        "version-mismatch",
                        key,
                        f"the final record has the version of {write.kind} #{write.index} "
                        "but not its content",
                        [write],
                        copies,
                    )
                )
    return anomalies


def check_repair_reports(reports: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[Anomaly]:
    """(d): after convergence a repair round from every node finds nothing to do."""
    anomalies = []
    for node, peers in sorted(reports.items()):
        for report in peers:
            if report.get("skipped"):
                anomalies.append(
                    Anomaly("repair-skipped", "*", f"{node} skipped {report['peer']}: {report}", [])
                )
            elif report.get("leaves") or report.get("keys_pulled") or report.get("keys_pushed"):
                anomalies.append(
                    Anomaly(
                        "repair-not-converged",
                        "*",
                        f"{node} still differs from {report['peer']}: {report}",
                        [],
                    )
                )
    return anomalies


def check(
    history: Sequence[Op],
    final: Mapping[str, Mapping[str, Observed | None]],
    owners: Callable[[str], Sequence[str]],
    node_of: Mapping[str, str] | None = None,
) -> list[Anomaly]:
    """Every check; `node_of` maps coordinator addresses to node ids (see `_Writes`)."""
    return check_reads(history, node_of) + check_final(history, final, owners, node_of)


def check_expiry(
    history: Sequence[Op], wall_at: Callable[[float], int], clock_low_ms: int, clock_high_ms: int
) -> list[Anomaly]:
    """(e) no expired key is read back, none reads as missing before it expired, and a
    read returns a value with the expiry its write was acknowledged with.

    `wall_at(t)` is the true wall-clock ms at history time `t`; every coordinator's
    clock reads within [true + clock_low_ms, true + clock_high_ms]. A read answers
    by its coordinator's clock some time between its invocation and completion.
    """
    anomalies: list[Anomaly] = []
    for key, ops in _by_key(history).items():
        puts = {op.value: op for op in ops if op.kind == PUT}
        for read in ops:
            if read.kind != GET or read.outcome != OK or not read.expires_at_ms:
                continue
            expires = read.expires_at_ms
            if read.value is not None and expires <= wall_at(read.invoked) + clock_low_ms:
                anomalies.append(
                    Anomaly(
                        "expired-read",
                        key,
                        f"a read returned {read.value!r}, which expired at {expires}, before "
                        "any coordinator's clock could read that time",
                        [read],
                    )
                )
            if read.value is None and expires > wall_at(read.completed) + clock_high_ms:
                anomalies.append(
                    Anomaly(
                        "early-expiry",
                        key,
                        f"a read found the key expired (at {expires}) before any "
                        "coordinator's clock could read that time",
                        [read],
                    )
                )
            written = puts.get(read.value) if read.value is not None else None
            if written is not None and written.outcome == OK and written.expires_at_ms != expires:
                anomalies.append(
                    Anomaly(
                        "expiry-mismatch",
                        key,
                        f"a read returned expiry {expires}; its write was acknowledged with "
                        f"{written.expires_at_ms}",
                        [written, read],
                    )
                )
    return anomalies


def render(anomalies: Sequence[Anomaly], limit: int = 10) -> str:
    kinds: dict[str, int] = {}
    for anomaly in anomalies:
        kinds[anomaly.kind] = kinds.get(anomaly.kind, 0) + 1
    head = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    shown = "\n".join(anomaly.render() for anomaly in anomalies[:limit])
    more = f"\n... and {len(anomalies) - limit} more" if len(anomalies) > limit else ""
    return f"{len(anomalies)} anomalies ({head}):\n{shown}{more}"


def assert_no_anomalies(anomalies: Sequence[Anomaly]) -> None:
    if anomalies:
        raise AssertionError(render(anomalies))


@dataclass(frozen=True, slots=True)
class Summary:
    ops: int
    by_outcome: Mapping[str, int]
    acked_writes: int
    ok_reads: int

    def __str__(self) -> str:
        outcomes = ", ".join(f"{n} {o}" for o, n in sorted(self.by_outcome.items()))
        return (
            f"{self.ops} ops ({outcomes}); {self.acked_writes} acknowledged writes, "
            f"{self.ok_reads} reads answered"
        )


def summarize(history: Sequence[Op]) -> Summary:
    outcomes: dict[str, int] = {}
    for op in history:
        outcomes[op.outcome] = outcomes.get(op.outcome, 0) + 1
    return Summary(
        len(history),
        outcomes,
        sum(op.is_write and op.outcome == OK for op in history),
        sum(op.kind == GET and op.outcome == OK for op in history),
    )
