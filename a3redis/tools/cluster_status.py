"""`a3redis cluster status` and `a3redis cluster ring`: the cluster as its nodes see it.

Rules: read-only, over the nodes' existing HTTP endpoints (`/membership`,
`/api/ring`, `/api/metrics/summary`, `/api/transition`). Placement is computed with the same
`Ring` the nodes use, from the members, replication factor and partition
count the entry node reports for its own ring, so the owners printed are the
ones that node sends a key to. A member that does not answer is shown as
unreachable, never an error; only an unreachable entry node fails the
command (as a ClientError, like every other CLI failure). Gathering and
rendering are separate: the renderers are pure functions of the gathered data
and the current time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import trio

from a3redis.client import ClientError
from a3redis.core.ring import Ring, partition_of
from a3redis.net.address import Address

# Members in these states may answer; `left` ones are gone for good, `incompatible` ones
# belong to another cluster.
_ASKED = ("alive", "suspect", "dead")


class Unreachable(Exception):
    pass


class NodeHttp:
    """GETs JSON from nodes' HTTP endpoints, at their advertised address or, failing that,
    at the host we reached the entry node on (an advertised name may not resolve here)."""

    def __init__(self, http: httpx.AsyncClient, fallback_host: str, scheme: str = "http") -> None:
        self._http = http
        self._fallback_host = fallback_host
        self._scheme = scheme  # "https" for nodes with TLS

    async def get(self, address: Address, path: str) -> Any:
        try:
            return await self._get(f"{self._scheme}://{address}{path}")
        except Unreachable:
            if address.host == self._fallback_host:
                raise
            fallback = Address(self._fallback_host, address.port)
            return await self._get(f"{self._scheme}://{fallback}{path}")

    async def _get(self, url: str) -> Any:
        try:
            response = await self._http.get(url)
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise Unreachable(f"{url}: {error or type(error).__name__}") from None


@dataclass(frozen=True, slots=True)
class ForgottenMember:
    """A member the node forgot after DEAD_MEMBER_REAP (it is out of the ring)."""

    node_id: str
    status: str  # what it was when forgotten: dead or left
    forgotten_at: float  # wall-clock seconds


@dataclass(frozen=True, slots=True)
class RingInfo:
    """The ring one node acts on: what its `/api/ring` says."""

    node_id: str
    members: tuple[str, ...]
    replication_factor: int
    partitions: int
    forgotten: tuple[ForgottenMember, ...] = ()
    dead_member_reap: float | None = None  # older nodes do not say

    @classmethod
    def from_json(cls, node_id: str, body: dict[str, Any]) -> RingInfo:
        reap = body.get("dead_member_reap")
        return cls(
            node_id,
            tuple(body["members"]),
            int(body["replication_factor"]),
            int(body["partitions"]),
            tuple(
                ForgottenMember(str(f["node_id"]), str(f["status"]), float(f["forgotten_at"]))
                for f in body.get("forgotten") or ()
            ),
            None if reap is None else float(reap),
        )

    def ring(self) -> Ring:
        return Ring(self.members, self.replication_factor, self.partitions)

    def same_placement(self, other: RingInfo) -> bool:
        return (self.members, self.replication_factor, self.partitions) == (
            other.members,
            other.replication_factor,
            other.partitions,
        )


@dataclass(frozen=True, slots=True)
class MemberStatus:
    node_id: str
    grpc_addr: str | None
    gossip_addr: str | None
    status: str  # as the entry node's member table says
    incarnation: int | None
    reachable: bool
    keys: int | None = None
    share: float | None = None  # fraction of all replicas in the entry node's ring
    repair_rounds: int | None = None
    last_repair_at: float | None = None  # wall-clock seconds
    ring_agrees: bool | None = None  # its ring places keys as the entry node's does
    error: str | None = None
    since: float | None = None  # dead or left: since when (wall-clock seconds)
    forget_in: float | None = None  # dead or left: seconds until it is forgotten
    role: str = "normal"  # its place in the ring (core.transition), as the entry node sees it
    progress: str | None = None  # its join, decommission or removal of another, in words


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    entry: str
    ring: RingInfo
    members: list[MemberStatus]


async def entry_view(
    http: NodeHttp, entry: Address, entry_id: str
) -> tuple[dict[str, Any], RingInfo]:
    """The entry node's member table and ring, or a ClientError saying it cannot be read."""
    try:
        members = await http.get(entry, "/membership")
        ring = RingInfo.from_json(entry_id, await http.get(entry, "/api/ring"))
    except (Unreachable, ValueError, KeyError, TypeError) as error:
        raise ClientError("UNAVAILABLE", f"cannot read {entry_id}'s view: {error}") from None
    return members, ring


async def gather_status(http: NodeHttp, entry: Address, entry_id: str) -> ClusterStatus:
    members, ring_info = await entry_view(http, entry, entry_id)
    shares = ring_info.ring().shares()
    rows: dict[str, MemberStatus] = {}

    async def ask(node_id: str, entry_json: dict[str, Any]) -> None:
        rows[node_id] = await _member_status(http, node_id, entry_json, ring_info, shares)

    async with trio.open_nursery() as nursery:
        for node_id, entry_json in members.items():
            nursery.start_soon(ask, node_id, entry_json)
    return ClusterStatus(ring_info.node_id, ring_info, [rows[n] for n in sorted(rows)])


async def _member_status(
    http: NodeHttp,
    node_id: str,
    entry: dict[str, Any],
    ring_info: RingInfo,
    shares: dict[str, float],
) -> MemberStatus:
    status = str(entry.get("status"))
    base = MemberStatus(
        node_id=node_id,
        grpc_addr=entry.get("addr"),
        gossip_addr=entry.get("gossip_addr"),
        status=status,
        incarnation=entry.get("incarnation"),
        reachable=False,
        share=shares.get(node_id),
        since=_number(entry.get("since")),
        forget_in=_number(entry.get("forget_in")),
        role=str(entry.get("role", "normal")),
    )
    if status not in _ASKED or not base.gossip_addr:
        return base
    try:
        address = Address.parse(base.gossip_addr)
        summary = await http.get(address, "/api/metrics/summary")
        if summary.get("node_id") != node_id:
            raise Unreachable(f"{address} answers as {summary.get('node_id')!r}")
        ring = RingInfo.from_json(node_id, await http.get(address, "/api/ring"))
        transition = await http.get(address, "/api/transition")
    except (Unreachable, ValueError, KeyError, TypeError) as error:
        return dataclasses.replace(base, error=str(error))
    repair = summary.get("last_repair") or {}
    return dataclasses.replace(
        base,
        progress=transition_progress(transition) if isinstance(transition, dict) else None,
        reachable=True,
        keys=summary.get("keys"),
        repair_rounds=repair.get("rounds"),
        last_repair_at=repair.get("finished_at"),
        ring_agrees=ring.same_placement(ring_info),
    )


def transition_progress(body: dict[str, Any]) -> str | None:
    """What a node's /api/transition says it is doing, in words (None: nothing)."""
    parts = []
    role = body.get("role")
    if role not in ("normal", None):
        waiting = body.get("waiting_for")
        parts.append(
            f"{role}: partitions {body.get('partitions_done')}/{body.get('partitions')}, "
            f"{body.get('keys_streamed')} keys copied"
            + (f", waiting for {waiting}" if waiting else "")
        )
    removing = body.get("removing")
    if isinstance(removing, dict):
        parts.append(
            f"removing {removing.get('node_id')}: partitions {removing.get('partitions_done')}/"
            f"{removing.get('partitions')}, {removing.get('keys_copied')} keys copied"
        )
    return "; ".join(parts) or None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# ----- rendering ------------------------------------------------------------------------


def status_json(status: ClusterStatus) -> dict[str, Any]:
    return {
        "entry": status.entry,
        "replication_factor": status.ring.replication_factor,
        "partitions": status.ring.partitions,
        "members": [asdict(row) for row in status.members],
        "forgotten": [asdict(gone) for gone in status.ring.forgotten],
        "dead_member_reap": status.ring.dead_member_reap,
    }


def status_text(status: ClusterStatus, now: float) -> str:
    rows = [("NODE", "GRPC", "GOSSIP", "STATUS", "ROLE", "INC", "KEYS", "SHARE", "LAST REPAIR")]
    for m in status.members:
        rows.append(
            (
                m.node_id,
                m.grpc_addr or "-",
                m.gossip_addr or "-",
                m.status if m.reachable or m.status not in _ASKED else f"{m.status} (unreachable)",
                m.role,
                "-" if m.incarnation is None else str(m.incarnation),
                "-" if m.keys is None else str(m.keys),
                "-" if m.share is None else f"{100 * m.share:.1f}%",
                _repair_age(m, now),
            )
        )
    lines = [table(rows)]
    ring = status.ring
    lines.append(
        f"\nas {status.entry} sees it: {len(ring.members)} in the ring, "
        f"replication factor {ring.replication_factor}, {ring.partitions} partitions"
    )
    for m in status.members:
        if m.ring_agrees is False:
            lines.append(f"note: {m.node_id} places keys on a different ring (not converged yet?)")
        if m.error:
            lines.append(f"note: {m.node_id}: {m.error}")
        if m.progress:
            lines.append(f"note: {m.node_id} is {m.progress}")
        if m.status in ("dead", "left") and m.forget_in is not None:
            gone_for = "" if m.since is None else f" for {age(now - m.since)}"
            lines.append(
                f"note: {m.node_id} has been {m.status}{gone_for}; it will be forgotten "
                f"(taken out of the ring, its partitions moved to the others) in "
                f"{age(m.forget_in)} (DEAD_MEMBER_REAP)"
            )
    for gone in ring.forgotten:
        lines.append(
            f"note: {gone.node_id} was forgotten {age(now - gone.forgotten_at)} ago after being "
            f"{gone.status} for DEAD_MEMBER_REAP: it is no longer in the ring"
        )
    return "\n".join(lines)


def _repair_age(member: MemberStatus, now: float) -> str:
    if not member.reachable:
        return "-"
    if not member.last_repair_at:
        return "never"
    return f"{age(now - member.last_repair_at)} ago"


def age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


@dataclass(frozen=True, slots=True)
class NodeShare:
    node_id: str
    partitions: int  # partitions it holds a replica of
    primary: int  # partitions it is first in the preference list of
    share: float  # fraction of all replicas
    ranges: list[tuple[int, int]]  # its partitions as inclusive runs


def ring_shares(ring: Ring) -> list[NodeShare]:
    held: dict[str, list[int]] = {node: [] for node in ring.members}
    primary = dict.fromkeys(ring.members, 0)
    for partition in range(ring.partitions):
        owners = ring.partition_owners(partition)
        for node in owners:
            held[node].append(partition)
        if owners:
            primary[owners[0]] += 1
    shares = ring.shares()
    return [
        NodeShare(node, len(held[node]), primary[node], shares[node], runs(held[node]))
        for node in ring.members
    ]


def runs(numbers: list[int]) -> list[tuple[int, int]]:
    """Sorted numbers as inclusive (first, last) runs: [1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    found: list[tuple[int, int]] = []
    for number in numbers:
        if found and found[-1][1] == number - 1:
            found[-1] = (found[-1][0], number)
        else:
            found.append((number, number))
    return found


def ring_json(ring_info: RingInfo) -> dict[str, Any]:
    return {
        "entry": ring_info.node_id,
        "replication_factor": ring_info.replication_factor,
        "partitions": ring_info.partitions,
        "members": [
            {
                "node_id": s.node_id,
                "partitions": s.partitions,
                "primary": s.primary,
                "share": s.share,
                "ranges": [list(r) for r in s.ranges],
            }
            for s in ring_shares(ring_info.ring())
        ],
    }


def ring_text(ring_info: RingInfo) -> str:
    rows = [("NODE", "PARTITIONS", "PRIMARY", "SHARE", "RANGES")]
    for s in ring_shares(ring_info.ring()):
        rows.append(
            (
                s.node_id,
                str(s.partitions),
                str(s.primary),
                f"{100 * s.share:.1f}%",
                f"{len(s.ranges)}: {_preview(s.ranges)}",
            )
        )
    return (
        f"ring of {ring_info.node_id}: {len(ring_info.members)} members, replication factor "
        f"{ring_info.replication_factor}, {ring_info.partitions} partitions "
        f"(a key's partition is the top {int(math.log2(ring_info.partitions))} bits "
        f"of its blake3 hash)\n" + table(rows)
    )


def _preview(ranges: list[tuple[int, int]], width: int = 40) -> str:
    shown = ""
    for index, (first, last) in enumerate(ranges):
        part = str(first) if first == last else f"{first}-{last}"
        candidate = f"{shown}, {part}" if shown else part
        if len(candidate) > width and index:
            return shown + ", ..."
        shown = candidate
    return shown


def key_owners_json(
    ring_info: RingInfo, key: bytes, members: dict[str, Any], shown_key: str
) -> dict[str, Any]:
    ring = ring_info.ring()
    return {
        "key": shown_key,
        "entry": ring_info.node_id,
        "partition": partition_of(key, ring.partitions),
        "partitions": ring.partitions,
        "replication_factor": ring.replication_factor,
        "owners": [
            {
                "node_id": node,
                "grpc_addr": (members.get(node) or {}).get("addr"),
                "status": (members.get(node) or {}).get("status"),
            }
            for node in ring.preference_list(key)
        ],
    }


def key_owners_text(body: dict[str, Any]) -> str:
    rows = [("#", "NODE", "GRPC", "STATUS")]
    for index, owner in enumerate(body["owners"], start=1):
        rows.append((str(index), owner["node_id"], owner["grpc_addr"] or "-", str(owner["status"])))
    return (
        f"key {body['key']!r}: partition {body['partition']} of {body['partitions']}, "
        f"{len(body['owners'])} replicas in preference order (as {body['entry']} places it)\n"
        + table(rows)
    )


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )
