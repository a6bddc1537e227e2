"""SWIM-style membership: the member table, failure detection and its merge rules.

Rules:
- Members are keyed by a stable node id, never by address; an entry carries
  the node's addresses, status and incarnation.
- Merge: a higher incarnation wins; at equal incarnation the stronger status
  wins (`left > dead > suspect > alive`). At equal incarnation and status a
  different address wins only from the member itself (the message's
  sender): nobody else can move a member's address without a higher
  incarnation. Merging is commutative, associative and idempotent on the
  ranks, and on whole entries for honest input (a node never announces two
  addresses at one incarnation).
- A member's `role` says where it stands in the ring (a3redis.core.transition
  decides what each role means): `normal` (an owner), `starting` (a fresh
  node at its cold-start gate), `waiting` (its turn to join has not come),
  `joining`/`joined` and `retiring`/`leaving`/`departing` (the phases of
  a join and of a decommission). Only the member itself changes its role,
  always with a new incarnation (`set_role`), so the merge above orders
  roles like everything else; a different role at the same incarnation is
  believed only from the member itself. An entry without a role (an older
  release) is `normal`.
- Every message tells us which of our own incarnations its sender has seen
  (`acknowledged`): a member that changes its role waits until every member
  (dead ones too: core.transition, rule 5) has seen the change before it
  acts on it, and meanwhile probes the ones that have not, every round.
- Only a node raises its own incarnation: when it hears itself suspected,
  declared dead (or left while it is running), or at another address, at
  its own incarnation or above, it refutes with incarnation+1. Except at the
  end of a decommission: a `departing` node never refutes, and declared dead
  (or left) takes it as its `left` (core.transition, rule 7).
- Incarnations are integers from 0 to MAX_INCARNATION (2^63-1); nothing
  else is accepted. Refuting never goes past the cap: a node that hears
  itself refuted at MAX_INCARNATION takes MAX_INCARNATION itself, and at
  that one incarnation `alive` outranks every other status, so the
  refutation still wins, nothing overflows and the order stays total. The
  price is paid only at the cap, which honest nodes never approach (a
  start takes the wall-clock second, about 2^31; each refutation adds one)
  and only a forged message can reach: there, gossip can no longer make a
  member suspect, dead or left. The failure detector's own timeout still
  declares a silent member dead on every node, and a node that leaves at
  the cap is seen dead instead of left.
- Liveness evidence is "someone heard from the node directly, `age` seconds
  ago". Every message carries, per member, the age of its sender's freshest
  evidence; receivers keep the freshest (`alive_at`). Ages only grow as they
  are relayed, so evidence is never inflated, and every node dates a crash
  the same way however late the news reaches it.
- Every round probes one live member, round-robin (SWIM); every other
  round the target is one that has answered one of our probes before, so
  members that never answer (phantoms an unauthenticated sender made up,
  however many) cannot starve the failure detector of news of real ones.
- A probe that fails makes an alive peer `suspect`; a member with no
  evidence of life for FAILURE_TIMEOUT becomes `dead`, unless it refutes
  first. Dead members stay (they still own data) and are still probed now
  and then, so a healed partition is noticed.
- A member dead or left for `dead_member_reap` seconds (DEAD_MEMBER_REAP,
  72 h by default, like memberlist's dead-node reclaim) is forgotten: it
  leaves the table and so the ring, and its partitions move to the others,
  as if an operator had removed it. Its id and incarnation are kept for as
  long again (`forgotten`), so gossip from a node that has not forgotten it
  yet cannot bring it back; the member itself comes back by a restart (a
  higher incarnation), or is told it was declared dead and refutes.
- Everything a peer sends is validated before anything changes
  (`decode_message`, `GossipMessage.from_json`): node ids and cluster names
  (a3redis.core.names), addresses, statuses, incarnations, ages, types and
  shapes, the message's size and entry count. A message that fails is
  refused whole with a MessageError naming the field and the limit, never
  echoing the input.
- Tables a peer can grow are bounded: at most MAX_MEMBERS members (a new
  member beyond that is not admitted; a new sender is refused with
  TableFullError) and MAX_INCOMPATIBLE refused peers (least recently heard
  forgotten first, and any not heard from for `dead_member_reap`).
- Peers from another cluster, with another replication factor, other key
  or value limits (MAX_KEY_BYTES/MAX_VALUE_BYTES: a record one accepts the
  other would refuse to replicate) or with our own node id are refused and
  remembered as incompatible, never merged. A release that does not
  announce its limits is not refused for them (a rolling upgrade).
- A restarted node restores the table it saved (`restore`): it knows the
  ring before any peer answers, so it never takes a ring of itself alone
  for the cluster. `joined` says whether we know another ring member.
- Time (`now`, monotonic seconds) and randomness (`random.Random`) are
  arguments; `tick` and the message handlers return what the shell must send.
"""

from __future__ import annotations

import enum
import json
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeGuard

from a3redis.core.names import ADDRESS_RULE, NODE_ID_RULE, is_address, is_node_id

if TYPE_CHECKING:
    import random

PROTOCOL_VERSION = 1
# Members in one table, this node included; also the most entries a message may carry.
MAX_MEMBERS = 1024
# Peers remembered as incompatible (shown in /membership), least recently heard dropped first.
MAX_INCOMPATIBLE = 64
MAX_INCARNATION = 2**63 - 1
MAX_REPLICATION_FACTOR = 255
# A full table of MAX_MEMBERS entries with the longest ids and addresses is ~0.7 MiB.
MAX_MESSAGE_BYTES = 1024 * 1024
MAX_AGE = 1e9  # seconds; the message text says 1e9
# Longer integer literals are refused before Python converts them (which costs
# quadratic time, and past 4,300 digits raises).
_MAX_NUMBER_DIGITS = 20
_STATUS_RULE = "one of alive, suspect, dead, left"
# Members that have not acknowledged our latest change probed per round, besides the regular target.
ANNOUNCE_FANOUT = 4
_INCARNATION_RULE = f"an integer from 0 to {MAX_INCARNATION} (2^63-1)"


class Status(enum.IntEnum):
    # The order is the merge precedence at equal incarnation (but see _ALIVE_AT_CAP).
    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


# At MAX_INCARNATION a node can no longer refute by raising its incarnation, so
# there `alive` ranks above every other status (see the module rules).
_ALIVE_AT_CAP = 4
_STATUS_NAMES = {status.name.lower(): status for status in Status}


class Role(enum.Enum):
    """Where a member stands in the ring (see a3redis.core.transition for what each means)."""

    NORMAL = "normal"
    STARTING = "starting"
    FOUNDING = "founding"
    WAITING = "waiting"
    JOINING = "joining"
    JOINED = "joined"
    RETIRING = "retiring"
    LEAVING = "leaving"
    DEPARTING = "departing"


_ROLE_NAMES = {role.value: role for role in Role}
_ROLE_RULE = "one of " + ", ".join(_ROLE_NAMES)


class RefusedInput(ValueError):
    """Something a peer sent is refused; nothing changed. `reason` is a metric label."""

    reason = "invalid"

    def __init__(self, text: str, reason: str | None = None) -> None:
        super().__init__(text)
        if reason is not None:
            self.reason = reason


class MessageError(RefusedInput):
    """A gossip message is malformed; it is rejected whole and changes nothing.

    Reasons: `not_json`, `too_large`, `protocol`, `invalid`.
    """


class IncompatiblePeerError(RefusedInput):
    """A peer belongs to another cluster or uses another replication factor."""

    reason = "incompatible"


class TableFullError(RefusedInput):
    """The member table holds MAX_MEMBERS already; a new sender is not admitted."""

    reason = "table_full"


@dataclass(frozen=True, slots=True)
class MemberState:
    """What nodes tell each other about a member."""

    node_id: str
    grpc_addr: str
    gossip_addr: str
    status: Status
    incarnation: int
    role: Role = Role.NORMAL
    # Where the member's Redis-protocol port listens ("" from a release without one).
    resp_addr: str = ""

    @property
    def gone(self) -> bool:
        """Out of the ring for good: it left, or it is dead while `departing` (its data is
        handed over, its `left` may have been lost: core.transition, rule 7)."""
        return self.status is Status.LEFT or (
            self.role is Role.DEPARTING and self.status is Status.DEAD
        )

    def rank(self) -> tuple[int, int]:
        order = int(self.status)
        if self.incarnation >= MAX_INCARNATION and self.status is Status.ALIVE:
            order = _ALIVE_AT_CAP
        return (self.incarnation, order)

    def to_json(self) -> dict[str, Any]:
        body = {
            "id": self.node_id,
            "grpc": self.grpc_addr,
            "gossip": self.gossip_addr,
            "status": self.status.name.lower(),
            "inc": self.incarnation,
            "role": self.role.value,
        }
        if self.resp_addr:
            body["resp"] = self.resp_addr
        return body

    @classmethod
    def from_json(cls, raw: Any, where: str = "member") -> MemberState:
        """A validated entry; MessageError naming `where` and the field otherwise."""
        if not isinstance(raw, dict):
            raise MessageError(f"{where}: must be a JSON object")
        node_id, grpc, gossip = raw.get("id"), raw.get("grpc"), raw.get("gossip")
        status, incarnation = raw.get("status"), raw.get("inc")
        if not is_node_id(node_id):
            raise MessageError(f"{where}.id: must be {NODE_ID_RULE}")
        if not is_address(grpc):
            raise MessageError(f"{where}.grpc: must be {ADDRESS_RULE}")
        if not is_address(gossip):
            raise MessageError(f"{where}.gossip: must be {ADDRESS_RULE}")
        if not isinstance(status, str) or status not in _STATUS_NAMES:
            raise MessageError(f"{where}.status: must be {_STATUS_RULE}")
        if not _is_int(incarnation) or not 0 <= incarnation <= MAX_INCARNATION:
            raise MessageError(f"{where}.inc: must be {_INCARNATION_RULE}")
        role = raw.get("role", Role.NORMAL.value)
        if not isinstance(role, str) or role not in _ROLE_NAMES:
            raise MessageError(f"{where}.role: must be {_ROLE_RULE}")
        resp = raw.get("resp", "")
        if resp != "" and not is_address(resp):
            raise MessageError(f"{where}.resp: must be {ADDRESS_RULE}")
        return cls(
            node_id, grpc, gossip, _STATUS_NAMES[status], incarnation, _ROLE_NAMES[role], resp
        )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


# Wider than any node accepts (config: keys up to 65,535 bytes, values up to 16 MiB).
MAX_ANNOUNCED_LIMIT = 2**32


def _limits_from_json(raw: dict[str, Any]) -> tuple[int, int] | None:
    """The sender's (MAX_KEY_BYTES, MAX_VALUE_BYTES), both or neither (older releases)."""
    key, value = raw.get("max_key_bytes"), raw.get("max_value_bytes")
    if key is None and value is None:
        return None
    for name, number in (("max_key_bytes", key), ("max_value_bytes", value)):
        if not _is_int(number) or not 0 <= number <= MAX_ANNOUNCED_LIMIT:
            raise MessageError(f"{name}: must be an integer from 0 to {MAX_ANNOUNCED_LIMIT}")
    assert _is_int(key) and _is_int(value)
    return key, value


def supersedes(new: MemberState, old: MemberState | None, *, own_word: bool = False) -> bool:
    """Whether gossip about `new` replaces what we believe (`old`).

    `own_word`: `new` comes from the member itself (it is the message's sender).
    """
    if old is None:
        return True
    if new.rank() != old.rank():
        return new.rank() > old.rank()
    # Same incarnation and status: the same news, unless the addresses or the role
    # differ. A node that moves or changes its role announces a higher incarnation,
    # so such a claim at the same incarnation is a forgery unless the member says it.
    return own_word and (new.grpc_addr, new.gossip_addr, new.resp_addr, new.role) != (
        old.grpc_addr,
        old.gossip_addr,
        old.resp_addr,
        old.role,
    )


@dataclass(frozen=True, slots=True)
class GossipMessage:
    cluster: str
    replication_factor: int
    sender: str
    members: tuple[MemberState, ...]
    # Seconds since the sender's freshest evidence that each member was alive.
    ages: Mapping[str, float] = field(default_factory=dict)
    protocol: int = PROTOCOL_VERSION
    # The sender's (MAX_KEY_BYTES, MAX_VALUE_BYTES); None from a release that does not say.
    limits: tuple[int, int] | None = None
    # Whether the sender coordinates requests (it knows its ring now); a release that
    # does not say is taken to.
    ready: bool = True

    def to_json(self) -> dict[str, Any]:
        members = []
        for member in self.members:
            entry = member.to_json()
            age = self.ages.get(member.node_id)
            if age is not None:
                entry["age"] = round(age, 3)
            members.append(entry)
        body: dict[str, Any] = {
            "protocol": self.protocol,
            "cluster": self.cluster,
            "replication_factor": self.replication_factor,
            "sender": self.sender,
            "members": members,
        }
        if self.limits is not None:
            body["max_key_bytes"], body["max_value_bytes"] = self.limits
        body["ready"] = self.ready
        return body

    @classmethod
    def from_json(cls, raw: Any) -> GossipMessage:
        """A validated message, or MessageError naming the first field that is wrong."""
        if not isinstance(raw, dict):
            raise MessageError("body: must be a JSON object")
        cluster, factor, sender = (
            raw.get("cluster"),
            raw.get("replication_factor"),
            raw.get("sender"),
        )
        members, protocol = raw.get("members"), raw.get("protocol")
        if not _is_int(protocol) or protocol != PROTOCOL_VERSION:
            raise MessageError(
                f"protocol: must be {PROTOCOL_VERSION} (the gossip protocol this node speaks)",
                "protocol",
            )
        if not is_node_id(cluster):
            raise MessageError(f"cluster: must be {NODE_ID_RULE}")
        if not _is_int(factor) or not 1 <= factor <= MAX_REPLICATION_FACTOR:
            raise MessageError(
                f"replication_factor: must be an integer from 1 to {MAX_REPLICATION_FACTOR}"
            )
        if not is_node_id(sender):
            raise MessageError(f"sender: must be {NODE_ID_RULE}")
        limits = _limits_from_json(raw)
        if not isinstance(members, list) or not 0 < len(members) <= MAX_MEMBERS:
            raise MessageError(f"members: must be a list of 1 to {MAX_MEMBERS} (MAX_MEMBERS)")
        states: list[MemberState] = []
        ages: dict[str, float] = {}
        seen: set[str] = set()
        for index, member in enumerate(members):
            where = f"members[{index}]"
            state = MemberState.from_json(member, where)
            if state.node_id in seen:
                raise MessageError(f"{where}.id: {state.node_id} is listed twice")
            seen.add(state.node_id)
            states.append(state)
            age = member.get("age")
            if age is None:
                continue
            if (
                not isinstance(age, int | float)
                or isinstance(age, bool)
                or not math.isfinite(age)
                or not 0 <= age < MAX_AGE
            ):
                raise MessageError(f"{where}.age: must be a number of seconds from 0 to 1e9")
            ages[state.node_id] = float(age)
        if sender not in seen:
            raise MessageError("members: the sender must list itself among the members")
        ready = raw.get("ready", True)
        if not isinstance(ready, bool):
            raise MessageError("ready: must be true or false")
        return cls(cluster, factor, sender, tuple(states), ages, limits=limits, ready=ready)


def decode_message(body: bytes) -> GossipMessage:
    """A gossip message from an HTTP body: bounded in size, UTF-8 JSON, then validated."""
    if len(body) > MAX_MESSAGE_BYTES:
        raise MessageError(
            f"body: {len(body)} bytes; the limit is {MAX_MESSAGE_BYTES}", "too_large"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MessageError("body: must be UTF-8 JSON", "not_json") from None
    try:
        raw = json.loads(text, parse_int=_bounded_int, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        # The decoder's own message names a position, never the input.
        raise MessageError(
            f"body: not JSON ({error.msg} at line {error.lineno} column {error.colno})",
            "not_json",
        ) from None
    except RecursionError:
        raise MessageError("body: JSON nested too deeply", "not_json") from None
    return GossipMessage.from_json(raw)


def _bounded_int(literal: str) -> int:
    if len(literal.lstrip("-")) > _MAX_NUMBER_DIGITS:
        raise MessageError(f"body: a number has more than {_MAX_NUMBER_DIGITS} digits")
    return int(literal)


def _no_constant(literal: str) -> float:
    raise MessageError("body: NaN and Infinity are not numbers here")


@dataclass(frozen=True, slots=True)
class Probe:
    """An exchange the shell must perform: POST `message` to `gossip_addr`."""

    gossip_addr: str
    node_id: str | None  # None for a seed whose identity we do not know yet
    message: GossipMessage


@dataclass(frozen=True, slots=True)
class Incompatible:
    node_id: str
    gossip_addr: str
    reason: str
    heard_at: float = 0.0  # when it last sent us (or answered with) gossip


@dataclass(frozen=True, slots=True)
class Forgotten:
    """A member taken out of the table after DEAD_MEMBER_REAP, remembered for as long again."""

    state: MemberState  # as it was when it was forgotten
    at: float  # when (monotonic seconds)


@dataclass(slots=True)
class _Local:
    """What this node alone knows about a member (never gossiped)."""

    alive_at: float  # the freshest evidence that the member was alive
    changed_at: float  # when we adopted the current status


@dataclass(frozen=True, slots=True)
class MembershipSettings:
    failure_timeout: float = 10.0
    # Seconds a member may stay dead or left before it is forgotten (DEAD_MEMBER_REAP).
    dead_member_reap: float = 72 * 3600.0
    seed_retry_min: float = 1.0
    seed_retry_max: float = 16.0
    # Probe a dead member with this probability per tick, besides the regular target:
    # every round, since dead members are few and a healed partition or a resumed
    # process is then noticed within a round or two instead of after several.
    dead_probe_chance: float = 1.0


@dataclass(slots=True)
class _Seed:
    next_try: float = 0.0
    backoff: float = 0.0
    failures: int = 0


_GONE = (Status.DEAD, Status.LEFT)


@dataclass
class Membership:
    me: MemberState
    cluster: str
    replication_factor: int
    settings: MembershipSettings = field(default_factory=MembershipSettings)
    _members: dict[str, MemberState] = field(default_factory=dict)
    _local: dict[str, _Local] = field(default_factory=dict)
    _seeds: dict[str, _Seed] = field(default_factory=dict)
    _probe_order: list[str] = field(default_factory=list)
    # Members that answered one of our probes, and the round-robin order over them.
    _answered: set[str] = field(default_factory=set)
    _answered_order: list[str] = field(default_factory=list)
    _rounds: int = 0
    incompatible: OrderedDict[str, Incompatible] = field(default_factory=OrderedDict)
    _forgotten: OrderedDict[str, Forgotten] = field(default_factory=OrderedDict)
    _newly_forgotten: list[MemberState] = field(default_factory=list)
    _joined: bool = False
    _heard: bool = False
    # Members whose messages we merged since we started, and whether one of them said
    # it coordinates requests (a3redis.core.transition.Readiness).
    _heard_from: set[str] = field(default_factory=set)
    _heard_ready: bool = False
    # Whether we coordinate requests (set by the shell's Readiness; told to peers).
    coordinating: bool = False
    # When `tick` last ran, and whether it found it had not run for FAILURE_TIMEOUT
    # (we were paused or starved: the others may have moved on without us).
    _last_tick: float | None = None
    _stale: bool = False
    # Per member: the highest incarnation of ours its messages listed (what it has seen of us).
    _seen_me: dict[str, int] = field(default_factory=dict)
    # The incarnation at which we took our current role.
    _role_since: int = -1
    # Bumped on every change to the table: a shell compares it instead of the table.
    version: int = 0
    # New members not admitted because the table was full.
    members_refused: int = 0
    # Claims about this node at MAX_INCARNATION (only a forgery gets there).
    claims_at_cap: int = 0
    # Our (MAX_KEY_BYTES, MAX_VALUE_BYTES): a peer that announces others is refused,
    # since a record one of us accepts the other would refuse to replicate.
    limits: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self._members[self.me.node_id] = self.me
        self._role_since = self.me.incarnation

    # ----- queries ----------------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self.me.node_id

    def members(self) -> list[MemberState]:
        return sorted(self._members.values(), key=lambda m: m.node_id)

    def states(self) -> Iterable[MemberState]:
        """Every member in no particular order (cheaper than `members` on hot paths)."""
        return self._members.values()

    def get(self, node_id: str) -> MemberState | None:
        return self._members.get(node_id)

    def alive_at(self, node_id: str) -> float | None:
        local = self._local.get(node_id)
        return None if local is None else local.alive_at

    def status_age(self, node_id: str, now: float) -> float | None:
        """Seconds since we adopted the member's current status (None for us, or unknown)."""
        local = self._local.get(node_id)
        return None if local is None else max(0.0, now - local.changed_at)

    def forget_in(self, node_id: str, now: float) -> float | None:
        """Seconds until a dead or left member is forgotten; None for any other."""
        member, age = self._members.get(node_id), self.status_age(node_id, now)
        if member is None or member.status not in _GONE or age is None:
            return None
        return max(0.0, self.settings.dead_member_reap - age)

    def forgotten(self) -> list[Forgotten]:
        """Members forgotten recently (within DEAD_MEMBER_REAP), oldest first."""
        return list(self._forgotten.values())

    def is_forgotten(self, node_id: str) -> bool:
        """Whether `node_id` was forgotten (and is not back)."""
        return node_id in self._forgotten and node_id not in self._members

    def take_forgotten(self) -> list[MemberState]:
        """Members forgotten since the last call (for the shell to log)."""
        taken, self._newly_forgotten = self._newly_forgotten, []
        return taken

    @property
    def joined(self) -> bool:
        """Whether we know the cluster: we merged a peer's table since we started, or
        restored a saved table naming another ring member.

        Members saved as left do not count: a whole cluster stopped with SIGTERM saves
        everyone else as left, and its first node back must not take the ring for
        itself alone before it hears that the others are back. Once joined, a node
        stays joined: if every other member then leaves, the ring is rightly its own.
        """
        return self._joined

    def out_of_touch(self, now: float) -> bool:
        """Whether we may have been away (paused, starved) long enough for the others to
        declare us dead and move on: then we coordinate nothing until a peer's table
        reaches us. A node alone in its table is never out of touch."""
        away = self._stale or (
            self._last_tick is not None and now - self._last_tick > self.settings.failure_timeout
        )
        return away and any(
            m.node_id != self.node_id and m.status is not Status.LEFT
            for m in self._members.values()
        )

    @property
    def heard_ready(self) -> bool:
        """Whether a peer that coordinates requests sent us its table since we started."""
        return self._heard_ready

    def heard_from_every_live_member(self) -> bool:
        """Whether every member we believe alive (or suspect) has sent us its table since
        we started: then no newer table than theirs and ours exists."""
        return all(
            m.node_id in self._heard_from
            for m in self._members.values()
            if m.node_id != self.node_id and m.status in (Status.ALIVE, Status.SUSPECT)
        )

    @property
    def heard(self) -> bool:
        """Whether we merged a peer's table since we started (a saved table does not count)."""
        return self._heard

    def seeds_pending(self) -> list[str]:
        return sorted(self._seeds)

    def message(self, now: float) -> GossipMessage:
        ages = {node_id: max(0.0, now - local.alive_at) for node_id, local in self._local.items()}
        ages[self.node_id] = 0.0
        return GossipMessage(
            self.cluster,
            self.replication_factor,
            self.node_id,
            tuple(self._members.values()),
            ages,
            limits=self.limits,
            ready=self.coordinating,
        )

    # ----- configuration ----------------------------------------------------------------------

    def add_seeds(self, gossip_addrs: Iterable[str]) -> None:
        known = {member.gossip_addr for member in self._members.values()}
        for addr in gossip_addrs:
            if addr != self.me.gossip_addr and addr not in known:
                self._seeds.setdefault(addr, _Seed())

    def restore(
        self,
        states: Iterable[MemberState],
        now: float,
        status_ages: Mapping[str, float] | None = None,
    ) -> None:
        """Members saved by an earlier run, known again before any peer answers.

        Each keeps its saved status and incarnation (gossip corrects both) and
        is presumed heard from `now`: the failure detector then finds out, as
        for any member, whether it still answers. `status_ages` (seconds per
        node id) says how long a dead or left member had been so, so the
        count towards forgetting it goes on across restarts.
        """
        for state in states:
            if state.node_id == self.node_id:
                continue
            known = self._members.get(state.node_id)
            if known is None and len(self._members) >= MAX_MEMBERS:
                self.members_refused += 1
                continue
            if supersedes(state, known):
                self._set(state, now)
                age = (status_ages or {}).get(state.node_id)
                if age is not None and state.status in _GONE:
                    self._local[state.node_id].changed_at = now - max(0.0, age)
            if state.status is not Status.LEFT:
                self._joined = True

    # ----- our role -----------------------------------------------------------------------------

    @property
    def role(self) -> Role:
        return self.me.role

    def set_role(self, role: Role) -> None:
        """Take a new role, announced with a new incarnation (only we speak for ourselves)."""
        if role is self.me.role:
            return
        raised = min(self.me.incarnation + 1, MAX_INCARNATION)
        self.me = replace(self.me, role=role, incarnation=raised)
        self._members[self.node_id] = self.me
        self._role_since = raised
        self.version += 1

    def acknowledged(self, node_id: str) -> bool:
        """Whether `node_id`'s messages have shown our current role."""
        return self._seen_me.get(node_id, -1) >= self._role_since

    def unacknowledged(self) -> list[str]:
        """Members that have not yet shown our current role.

        Dead members count (one may only be cut off, coordinating with the view it
        had: a3redis.core.transition, rule 5); not those that left, nor `departing`
        members that are dead (gone, rule 7).
        """
        return sorted(
            member.node_id
            for member in self._members.values()
            if member.node_id != self.node_id
            and not member.gone
            and not self.acknowledged(member.node_id)
        )

    # ----- time -------------------------------------------------------------------------------

    def tick(self, now: float, rng: random.Random) -> list[Probe]:
        """Advance timers (failure detection, forgetting); return this round's probes."""
        if self._last_tick is not None and now - self._last_tick > self.settings.failure_timeout:
            self._stale = True
        self._last_tick = now
        for node_id, local in self._local.items():
            member = self._members[node_id]
            silent = now - local.alive_at >= self.settings.failure_timeout
            if silent and member.status in (Status.ALIVE, Status.SUSPECT):
                self._set(replace(member, status=Status.DEAD), now)
        self._reap(now)
        message = self.message(now)
        probes: list[Probe] = []
        self._rounds += 1
        live = {Status.ALIVE, Status.SUSPECT}
        target = self._next_target(rng, live, answered=True) if self._rounds % 2 == 0 else None
        if target is None:
            target = self._next_target(rng, live)
        if target is not None:
            probes.append(Probe(target.gossip_addr, target.node_id, message))
        dead = [m for m in self._members.values() if m.status is Status.DEAD]
        if dead and rng.random() < self.settings.dead_probe_chance:
            choice = rng.choice(sorted(dead, key=lambda m: m.node_id))
            if target is None or choice.node_id != target.node_id:
                probes.append(Probe(choice.gossip_addr, choice.node_id, message))
        if self.me.role is not Role.NORMAL:
            # A change of role waits for every member to see it (dead ones too): tell them now.
            targeted = {probe.node_id for probe in probes}
            waiting = [n for n in self.unacknowledged() if n not in targeted]
            rng.shuffle(waiting)
            for node_id in waiting[:ANNOUNCE_FANOUT]:
                member = self._members[node_id]
                probes.append(Probe(member.gossip_addr, node_id, message))
        for addr, seed in sorted(self._seeds.items()):
            if now >= seed.next_try:
                # The seed's next try is pushed back now; a success removes it.
                seed.next_try = now + max(seed.backoff, self.settings.seed_retry_min)
                probes.append(Probe(addr, None, message))
        return probes

    def _reap(self, now: float) -> None:
        reap_after = self.settings.dead_member_reap
        expired = [
            node_id
            for node_id, local in self._local.items()
            if self._members[node_id].status in _GONE and now - local.changed_at >= reap_after
        ]
        for node_id in expired:
            state = self._members.pop(node_id)
            del self._local[node_id]
            self._answered.discard(node_id)
            self._seen_me.pop(node_id, None)
            self._heard_from.discard(node_id)
            self._forgotten.pop(node_id, None)
            self._forgotten[node_id] = Forgotten(state, now)
            self._newly_forgotten.append(state)
            self.version += 1
        while len(self._forgotten) > MAX_MEMBERS:
            self._forgotten.popitem(last=False)
        while self._forgotten:
            oldest = next(iter(self._forgotten.values()))
            if now - oldest.at < reap_after:
                break
            self._forgotten.popitem(last=False)
        del self._newly_forgotten[:-MAX_MEMBERS]
        # A refused peer that went quiet is forgotten as well (kept in order of last word).
        while self.incompatible:
            quietest = next(iter(self.incompatible.values()))
            if now - quietest.heard_at < reap_after:
                break
            self.incompatible.popitem(last=False)

    def _next_target(
        self, rng: random.Random, statuses: set[Status], *, answered: bool = False
    ) -> MemberState | None:
        # SWIM's round-robin over a shuffled order bounds the time to probe everyone.
        order = self._answered_order if answered else self._probe_order
        for _ in range(2):
            while order:
                member = self._members.get(order.pop())
                if member is not None and member.status in statuses:
                    return member
            candidates = sorted(
                node_id
                for node_id, member in self._members.items()
                if node_id != self.node_id
                and member.status in statuses
                and (not answered or node_id in self._answered)
            )
            rng.shuffle(candidates)
            order[:] = candidates
        return None

    # ----- messages ---------------------------------------------------------------------------

    def check_compatible(self, message: GossipMessage, gossip_addr: str, now: float) -> None:
        reasons = []
        if message.sender == self.node_id:
            # Two processes with one NODE_ID would corrupt each other's ranges.
            reasons.append(f"it uses our node id {self.node_id} (NODE_ID must be unique)")
        if message.cluster != self.cluster:
            reasons.append(f"cluster {message.cluster} != ours {self.cluster}")
        if message.replication_factor != self.replication_factor:
            reasons.append(
                f"REPLICATION_FACTOR {message.replication_factor} != ours {self.replication_factor}"
            )
        if message.limits is not None and self.limits is not None and message.limits != self.limits:
            (their_key, their_value), (our_key, our_value) = message.limits, self.limits
            reasons.append(
                f"MAX_KEY_BYTES/MAX_VALUE_BYTES {their_key}/{their_value} "
                f"!= ours {our_key}/{our_value}"
            )
        if reasons:
            reason = "; ".join(reasons)
            self.incompatible.pop(message.sender, None)
            self.incompatible[message.sender] = Incompatible(
                message.sender, gossip_addr, reason, now
            )
            while len(self.incompatible) > MAX_INCOMPATIBLE:
                self.incompatible.popitem(last=False)
            raise IncompatiblePeerError(reason)

    def on_exchange(self, message: GossipMessage, now: float) -> GossipMessage:
        """A peer pushed its table to us: merge it and answer with ours (pull).

        A sender we forgot, still at the incarnation it was forgotten at, is
        not taken back; the answer tells it how we last saw it, so that it
        refutes with a higher incarnation and is welcome at its next exchange.
        """
        sender = _sender_state(message)
        self.check_compatible(message, sender.gossip_addr, now)
        self._check_room(sender)
        gone = self._forgotten.get(sender.node_id)
        self._merge(message, now)
        reply = self.message(now)
        if (
            gone is not None
            and sender.node_id not in self._members
            and len(reply.members) < MAX_MEMBERS
        ):
            reply = replace(reply, members=(*reply.members, gone.state))
        return reply

    def on_reply(self, probe: Probe, reply: GossipMessage, now: float) -> None:
        """The answer to one of our probes."""
        sender = _sender_state(reply)
        if sender.node_id == self.node_id and sender.gossip_addr == self.me.gossip_addr:
            # A seed that is this very node (listed in its own PEERS): forget it.
            self._seeds.pop(probe.gossip_addr, None)
            return
        self.check_compatible(reply, sender.gossip_addr, now)
        self._check_room(sender)
        self._seeds.pop(probe.gossip_addr, None)
        self._merge(reply, now)
        if sender.node_id in self._members and probe.node_id in (None, sender.node_id):
            self._answered.add(sender.node_id)

    def on_probe_failed(self, probe: Probe, now: float) -> bool:
        """A probe got no answer. Returns True the first time a seed fails (to log once)."""
        seed = self._seeds.get(probe.gossip_addr)
        if probe.node_id is None:
            if seed is None:
                return False
            seed.failures += 1
            seed.backoff = min(
                max(seed.backoff * 2, self.settings.seed_retry_min), self.settings.seed_retry_max
            )
            seed.next_try = now + seed.backoff
            return seed.failures == 1
        member = self._members.get(probe.node_id)
        if member is not None and member.status is Status.ALIVE:
            self._set(replace(member, status=Status.SUSPECT), now)
        return False

    def check_removable(self, node_id: str) -> MemberState:
        """The member an operator may remove, or KeyError / ValueError saying why not."""
        member = self._members.get(node_id)
        if member is None:
            raise KeyError(f"no member {node_id!r}")
        if node_id == self.node_id or member.status in (Status.ALIVE, Status.SUSPECT):
            raise ValueError(
                f"{node_id} is {member.status.name.lower()}: only a dead node can be removed "
                "(a live node leaves with its data: `a3redis cluster decommission`)"
            )
        return member

    def remove(self, node_id: str, now: float) -> MemberState:
        """An operator removes a dead member from the ring for good (gossiped as `left`)."""
        member = self.check_removable(node_id)
        removed = replace(member, status=Status.LEFT)
        self._set(removed, now)
        return removed

    def stop(self, now: float) -> list[Probe]:
        """Announce that we stop (a restart, or a shutdown): we stay in the ring as a dead
        member, so our partitions do not move and our writes become hints; return the
        messages to send to everyone."""
        return self._announce(Status.DEAD, now)

    def leave(self, now: float) -> list[Probe]:
        """Announce that we leave the ring for good (the end of a decommission)."""
        return self._announce(Status.LEFT, now)

    def _announce(self, status: Status, now: float) -> list[Probe]:
        self.me = replace(self.me, status=status)
        self._members[self.node_id] = self.me
        self.version += 1
        message = self.message(now)
        return [
            Probe(member.gossip_addr, member.node_id, message)
            for member in self.members()
            if member.node_id != self.node_id and member.status in (Status.ALIVE, Status.SUSPECT)
        ]

    # ----- merging ----------------------------------------------------------------------------

    def _learnable(self, state: MemberState) -> bool:
        """Whether news of an unknown member may add it: not if we forgot it at that
        incarnation or a later one (a node that has not forgotten it yet is relaying)."""
        gone = self._forgotten.get(state.node_id)
        return gone is None or state.incarnation > gone.state.incarnation

    def _check_room(self, sender: MemberState) -> None:
        """Refuse a new sender when the table is full, before anything changes."""
        if (
            sender.node_id not in self._members
            and self._learnable(sender)
            and len(self._members) >= MAX_MEMBERS
        ):
            self.members_refused += 1
            raise TableFullError(
                f"the member table is full (MAX_MEMBERS={MAX_MEMBERS}): "
                f"{sender.node_id} is not admitted"
            )

    def _merge(self, message: GossipMessage, now: float) -> None:
        self._joined = self._heard = True
        self._stale = False
        self._heard_ready = self._heard_ready or message.ready
        for state in message.members:
            if state.node_id == self.node_id:
                self._seen_by(message.sender, state.incarnation)
                self._about_me(state)
                continue
            current = self._members.get(state.node_id)
            if current is None:
                if not self._learnable(state):
                    continue
                if len(self._members) >= MAX_MEMBERS:
                    self.members_refused += 1
                    continue
            if supersedes(state, current, own_word=state.node_id == message.sender):
                self._set(state, now, first_seen=now - message.ages.get(state.node_id, 0.0))
        # Evidence of life: the sender itself (we just heard from it), then the
        # sender's own evidence about the others, aged on the way.
        if message.sender in self._members:
            self._heard_from.add(message.sender)
        if message.sender in self._local:
            self._evidence(message.sender, now)
        for node_id, age in message.ages.items():
            if node_id != self.node_id and node_id in self._local:
                self._evidence(node_id, now - age)
        sender_addr = _sender_state(message).gossip_addr
        self._seeds = {addr: seed for addr, seed in self._seeds.items() if addr != sender_addr}

    def _seen_by(self, sender: str, incarnation: int) -> None:
        # Only members are remembered (the table bounds this one), and never past
        # what we have announced (a forged future incarnation acknowledges nothing).
        if (
            sender in self._members
            and self._seen_me.get(sender, -1) < incarnation <= self.me.incarnation
        ):
            self._seen_me[sender] = incarnation

    def _about_me(self, state: MemberState) -> None:
        if self.me.status in _GONE:
            return  # we are stopping or have left: nothing to refute
        me = self.me
        if me.role is Role.DEPARTING:
            # At the end of our decommission we never refute (core.transition, rule 7):
            # a view that saw us dead counts us gone and may have moved on, and alive
            # again we would stand in configurations that no longer hold us. Declared
            # dead, we have left.
            if state.status in _GONE and state.incarnation >= me.incarnation:
                self.me = replace(me, status=Status.LEFT, incarnation=state.incarnation)
                self._members[self.node_id] = self.me
                self.version += 1
            return
        disputed = state.status is not Status.ALIVE or (
            state.grpc_addr,
            state.gossip_addr,
            state.resp_addr,
        ) != (me.grpc_addr, me.gossip_addr, me.resp_addr)
        if state.incarnation > me.incarnation or (disputed and state.incarnation >= me.incarnation):
            # Refute: only we may speak for ourselves, with a fresh incarnation,
            # never past the cap (where alive outranks every other status).
            raised = min(state.incarnation + 1, MAX_INCARNATION)
            if raised > me.incarnation:
                self.me = replace(me, status=Status.ALIVE, incarnation=raised)
                self._members[self.node_id] = self.me
                self.version += 1
            if state.incarnation >= MAX_INCARNATION:
                self.claims_at_cap += 1

    def _evidence(self, node_id: str, alive_at: float) -> None:
        local = self._local[node_id]
        local.alive_at = max(local.alive_at, alive_at)

    def _set(self, state: MemberState, now: float, first_seen: float | None = None) -> None:
        previous = self._members.get(state.node_id)
        self._members[state.node_id] = state
        self.version += 1
        local = self._local.get(state.node_id)
        if local is None:
            self._forgotten.pop(state.node_id, None)
            # A member we just learned of is dated by the sender's evidence.
            alive_at = now if first_seen is None else first_seen
            local = self._local[state.node_id] = _Local(alive_at=alive_at, changed_at=now)
        if previous is None or previous.status is not state.status:
            local.changed_at = now


def _sender_state(message: GossipMessage) -> MemberState:
    # from_json guarantees the sender lists itself; a message built in code must too.
    return next(m for m in message.members if m.node_id == message.sender)


def summary(members: Iterable[MemberState]) -> Mapping[str, int]:
    counts = {status.name.lower(): 0 for status in Status}
    for member in members:
        counts[member.status.name.lower()] += 1
    return counts
