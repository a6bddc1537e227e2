"""Redis Cluster, emulated: key slots and the CLUSTER replies cluster clients read.

Rules:
- A key's slot is Redis's `keyHashSlot`: CRC16 (XMODEM: polynomial 0x1021,
  initial value 0, no reflection) of the key, mod 16384; when the key holds
  a `{`, and a `}` after it with at least one byte between, only the bytes
  between the first `{` and the first `}` after it are hashed.
- Every live a3redis node serves every key: any node coordinates any read
  or write, so a client never needs a redirection and none is ever sent
  (no MOVED, no ASK). The slots are still spread over the live members, so
  cluster clients (redis-py's RedisCluster, `redis-cli -c`) spread their
  connections and load over the nodes instead of piling onto one.
- The view is made from the live ring members (a3redis node id, host, RESP
  port), ordered by node id, so every node that sees the same members
  answers the same map. The 16384 slots are cut into one contiguous range
  per member, in that order, the sizes differing by at most one; a single
  live member owns them all. Every member is a primary of its own shard with
  no replicas (listing other nodes as replicas would invite clients to read
  from them after READONLY, which a3redis maps to a weaker read level).
- Redis Cluster ids are 40 lower-case hex characters, derived with blake3
  from the a3redis node id, so they are stable across restarts and the same
  on every node. A member's config epoch is its place in the order plus one
  (distinct, as in a healthy cluster); the cluster's current epoch is the
  member count. There is no cluster bus (gossip runs over HTTP), so the bus
  port in CLUSTER NODES is 0.
- Replies follow Redis 7: CLUSTER INFO and NODES are verbatim text, SLOTS
  lists `[start, end, [host, port, id, {}]]`, SHARDS lists maps of `slots`
  (flat start/end integers) and `nodes`. Errors are Redis's texts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from blake3 import blake3

from a3redis.core.resp_values import ErrorReply, Reply, Status, Verbatim, error, quoted_argument

if TYPE_CHECKING:
    from collections.abc import Iterable

CLUSTER_SLOTS = 16384


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = (crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC16 = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC16-XMODEM, the checksum Redis Cluster hashes keys with."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
    return crc


def key_slot(key: bytes) -> int:
    """The slot Redis Cluster places `key` in (hash tags included)."""
    opening = key.find(b"{")
    if opening >= 0:
        closing = key.find(b"}", opening + 1)
        if closing > opening + 1:
            key = key[opening + 1 : closing]
    return crc16(key) & (CLUSTER_SLOTS - 1)


def cluster_node_id(node_id: str) -> str:
    """The 40-hex-character Redis Cluster id of an a3redis node."""
    return blake3(b"a3redis cluster node id\x00" + node_id.encode()).hexdigest(20)


def cluster_shard_id(node_id: str) -> str:
    """The id of the shard an a3redis node is the only member of (CLUSTER MYSHARDID)."""
    return blake3(b"a3redis cluster shard id\x00" + node_id.encode()).hexdigest(20)


@dataclass(frozen=True, slots=True)
class ClusterMember:
    """A live ring member as cluster clients see it: its id and where its RESP port listens."""

    node_id: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class SlotRange:
    """`first`..`last` (inclusive) are served by `member`, the `epoch`-th in the order."""

    first: int
    last: int
    member: ClusterMember
    epoch: int

    @property
    def cluster_id(self) -> str:
        return cluster_node_id(self.member.node_id)


def spread_slots(members: Iterable[ClusterMember]) -> list[SlotRange]:
    """One contiguous range per member, ordered by node id, sizes within one of each other.

    A member gets an empty range (first > last) only when there are more
    members than slots.
    """
    ordered = sorted(members, key=lambda member: member.node_id)
    if len({member.node_id for member in ordered}) != len(ordered):
        raise ValueError("a member is listed twice")
    base, extra = divmod(CLUSTER_SLOTS, len(ordered)) if ordered else (0, 0)
    ranges: list[SlotRange] = []
    first = 0
    for place, member in enumerate(ordered):
        size = base + (1 if place < extra else 0)
        ranges.append(SlotRange(first, first + size - 1, member, place + 1))
        first += size
    return ranges


_HELP = (
    "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "INFO",
    "    Return information about the cluster.",
    "KEYSLOT <key>",
    "    Return the hash slot for <key>.",
    "MYID",
    "    Return the node id.",
    "MYSHARDID",
    "    Return the node's shard id.",
    "NODES",
    "    Return cluster configuration seen by node. Output format:",
    "    <id> <ip:port@bus-port[,hostname]> <flags> <master> <pings> <pongs> <epoch> <link>"
    " <slot> ...",
    "SHARDS",
    "    Return information about slot range mappings and the nodes associated with them.",
    "SLOTS",
    "    Return information about slots range mappings. Each range is made of:",
    "    start, end, master and replicas IP addresses, ports and ids",
    "HELP",
    "    Print this help.",
    "(a3redis: every node serves every slot; the map only spreads client load.)",
)


class ClusterView:
    """The cluster as `myself` answers CLUSTER commands, from the live ring members."""

    def __init__(self, members: Iterable[ClusterMember], myself: str) -> None:
        """The shell passes the live ring members, `myself` (this node) included."""
        self.ranges = spread_slots(members)
        mine = [slot_range for slot_range in self.ranges if slot_range.member.node_id == myself]
        if not mine:
            raise ValueError("the cluster view must hold this node")
        self.mine = mine[0]

    def command(self, arguments: list[bytes]) -> Reply:
        """The reply to `CLUSTER <arguments...>`; Redis's errors for unknown or malformed calls."""
        if not arguments:
            return error("wrong number of arguments for 'cluster' command")
        name = arguments[0].lower()
        simple = {
            b"info": self.info,
            b"myid": self.myid,
            b"myshardid": self.myshardid,
            b"nodes": self.nodes,
            b"shards": self.shards,
            b"slots": self.slots,
            b"help": self.help,
        }
        if name in simple:
            if len(arguments) != 1:
                return self._arity(name)
            return simple[name]()
        if name == b"keyslot":
            if len(arguments) != 2:
                return self._arity(name)
            return key_slot(arguments[1])
        return error(f"unknown subcommand '{quoted_argument(arguments[0])}'. Try CLUSTER HELP.")

    @staticmethod
    def _arity(name: bytes) -> ErrorReply:
        return error(f"wrong number of arguments for 'cluster|{name.decode()}' command")

    def help(self) -> Reply:
        return [Status(line) for line in _HELP]

    def myid(self) -> Reply:
        return self.mine.cluster_id.encode()

    def myshardid(self) -> Reply:
        return cluster_shard_id(self.mine.member.node_id).encode()

    def info(self) -> Reply:
        assigned = sum(max(0, r.last - r.first + 1) for r in self.ranges)
        serving = sum(1 for r in self.ranges if r.last >= r.first)
        lines = [
            "cluster_state:ok",
            f"cluster_slots_assigned:{assigned}",
            f"cluster_slots_ok:{assigned}",
            "cluster_slots_pfail:0",
            "cluster_slots_fail:0",
            f"cluster_known_nodes:{len(self.ranges)}",
            f"cluster_size:{serving}",
            f"cluster_current_epoch:{len(self.ranges)}",
            f"cluster_my_epoch:{self.mine.epoch}",
            "cluster_stats_messages_sent:0",
            "cluster_stats_messages_received:0",
            "total_cluster_links_buffer_limit_exceeded:0",
        ]
        return Verbatim("".join(line + "\r\n" for line in lines).encode())

    def slots(self) -> Reply:
        return [
            [r.first, r.last, [r.member.host.encode(), r.member.port, r.cluster_id.encode(), {}]]
            for r in self.ranges
            if r.last >= r.first
        ]

    def shards(self) -> Reply:
        shards: list[Reply] = []
        for r in self.ranges:
            host = r.member.host.encode()
            node: dict[Reply, Reply] = {
                b"id": r.cluster_id.encode(),
                b"port": r.member.port,
                b"ip": host,
                b"endpoint": host,
                b"role": b"master",
                b"replication-offset": 0,
                b"health": b"online",
            }
            slots: list[Reply] = [r.first, r.last] if r.last >= r.first else []
            shards.append({b"slots": slots, b"nodes": [node]})
        return shards

    def nodes(self) -> Reply:
        lines = []
        for r in self.ranges:
            flags = "myself,master" if r is self.mine else "master"
            address = f"{r.member.host}:{r.member.port}@0"
            line = f"{r.cluster_id} {address} {flags} - 0 0 {r.epoch} connected"
            if r.last > r.first:
                line += f" {r.first}-{r.last}"
            elif r.last == r.first:
                line += f" {r.first}"
            lines.append(line + "\n")
        return Verbatim("".join(lines).encode())
