"""SWIM-style membership: the member table, failure detection and its merge rules.

Rules:
- Members are keyed by a stable node id, never by address; an entry carries
  the node's addresses, status and incarnation.
- Merge: a higher incarnation wins; at equal incarnation the stronger status
  wins (`left > dead > suspect > alive`). Merging is commutative, associative
  and idempotent on the shared fields.
- Only a node raises its own incarnation: when it hears itself suspected,
  declared dead (or left while it is running), it refutes with incarnation+1.
- Liveness evidence is "someone heard from the node directly, `age` seconds
  ago". Every message carries, per member, the age of its sender's freshest
  evidence; receivers keep the freshest (`alive_at`). Ages only grow as they
  are relayed, so evidence is never inflated, and every node dates a crash
  the same way however late the news reaches it.
- A probe that fails makes an alive peer `suspect`; a member with no
  evidence of life for FAILURE_TIMEOUT becomes `dead`, unless it refutes
  first. Dead members stay (they still own data) and are still probed now
  and then, so a healed partition is noticed.
- Peers from another cluster, with another replication factor or with our
  own node id are refused and remembered as incompatible, never merged.
- A restarted node restores the table it saved (`restore`): it knows the
  ring before any peer answers, so it never takes a ring of itself alone
  for the cluster. `joined` says whether we know another ring member.
- Time (`now`, monotonic seconds) and randomness (`random.Random`) are
  arguments; `tick` and the message handlers return what the shell must send.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import random

PROTOCOL_VERSION = 1
MAX_MEMBERS = 10_000


class Status(enum.IntEnum):
    # The order is the merge precedence at equal incarnation.
    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


@dataclass(frozen=True, slots=True)
class MemberState:
    """What nodes tell each other about a member."""

    node_id: str
    grpc_addr: str
    gossip_addr: str
    status: Status
    incarnation: int

    def rank(self) -> tuple[int, int]:
        return (self.incarnation, int(self.status))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.node_id,
            "grpc": self.grpc_addr,
            "gossip": self.gossip_addr,
            "status": self.status.name.lower(),
            "inc": self.incarnation,
        }

    @classmethod
    def from_json(cls, raw: Any) -> MemberState:
        if not isinstance(raw, dict):
            raise MessageError("a member must be an object")
        node_id, grpc, gossip = raw.get("id"), raw.get("grpc"), raw.get("gossip")
        status, incarnation = raw.get("status"), raw.get("inc")
        for name, value in (("id", node_id), ("grpc", grpc), ("gossip", gossip)):
            if not isinstance(value, str) or not 0 < len(value) <= 256:
                raise MessageError(f"member field {name!r} must be a non-empty string")
        if not isinstance(status, str) or status.upper() not in Status.__members__:
            raise MessageError(f"member status {status!r} is not one of alive, suspect, dead, left")
        if not isinstance(incarnation, int) or isinstance(incarnation, bool) or incarnation < 0:
            raise MessageError("member field 'inc' must be a non-negative integer")
        assert isinstance(node_id, str) and isinstance(grpc, str) and isinstance(gossip, str)
        return cls(node_id, grpc, gossip, Status[status.upper()], incarnation)


def supersedes(new: MemberState, old: MemberState | None) -> bool:
    """Whether gossip about `new` replaces what we believe (`old`)."""
    if old is None:
        return True
    if new.rank() != old.rank():
        return new.rank() > old.rank()
    # Same incarnation and status: addresses may still differ (a node that
    # restarted elsewhere always has a higher incarnation, so this is only a
    # tie-break that keeps merge deterministic).
    return (new.grpc_addr, new.gossip_addr) > (old.grpc_addr, old.gossip_addr)


class MessageError(ValueError):
    """A gossip message is malformed; it is rejected whole and changes nothing."""


class IncompatiblePeerError(ValueError):
    """A peer belongs to another cluster or uses another replication factor."""


@dataclass(frozen=True, slots=True)
class GossipMessage:
    cluster: str
    replication_factor: int
    sender: str
    members: tuple[MemberState, ...]
    # Seconds since the sender's freshest evidence that each member was alive.
    ages: Mapping[str, float] = field(default_factory=dict)
    protocol: int = PROTOCOL_VERSION

    def to_json(self) -> dict[str, Any]:
        members = []
        for member in self.members:
            entry = member.to_json()
            age = self.ages.get(member.node_id)
            if age is not None:
                entry["age"] = round(age, 3)
            members.append(entry)
        return {
            "protocol": self.protocol,
            "cluster": self.cluster,
            "replication_factor": self.replication_factor,
            "sender": self.sender,
            "members": members,
        }

    @classmethod
    def from_json(cls, raw: Any) -> GossipMessage:
        if not isinstance(raw, dict):
            raise MessageError("a gossip message must be a JSON object")
        cluster, factor, sender = (
            raw.get("cluster"),
            raw.get("replication_factor"),
            raw.get("sender"),
        )
        members, protocol = raw.get("members"), raw.get("protocol")
        if protocol != PROTOCOL_VERSION:
            raise MessageError(f"unsupported gossip protocol {protocol!r}")
        if not isinstance(cluster, str) or not cluster:
            raise MessageError("'cluster' must be a non-empty string")
        if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
            raise MessageError("'replication_factor' must be a positive integer")
        if not isinstance(sender, str) or not sender:
            raise MessageError("'sender' must be a non-empty string")
        if not isinstance(members, list) or len(members) > MAX_MEMBERS:
            raise MessageError(f"'members' must be a list of at most {MAX_MEMBERS}")
        states = tuple(MemberState.from_json(member) for member in members)
        if sender not in {state.node_id for state in states}:
            raise MessageError("the sender must list itself among the members")
        ages: dict[str, float] = {}
        for state, member in zip(states, members, strict=True):
            age = member.get("age")
            if age is None:
                continue
            if not isinstance(age, int | float) or isinstance(age, bool) or not 0 <= age < 1e9:
                raise MessageError("member field 'age' must be a non-negative number")
            ages[state.node_id] = float(age)
        return cls(cluster, factor, sender, states, ages)


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


@dataclass(slots=True)
class _Local:
    """What this node alone knows about a member (never gossiped)."""

    alive_at: float  # the freshest evidence that the member was alive
    changed_at: float  # when we adopted the current status


@dataclass(frozen=True, slots=True)
class MembershipSettings:
    failure_timeout: float = 10.0
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
    incompatible: dict[str, Incompatible] = field(default_factory=dict)
    _joined: bool = False

    def __post_init__(self) -> None:
        self._members[self.me.node_id] = self.me

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

    def seeds_pending(self) -> list[str]:
        return sorted(self._seeds)

    def message(self, now: float) -> GossipMessage:
        ages = {node_id: max(0.0, now - local.alive_at) for node_id, local in self._local.items()}
        ages[self.node_id] = 0.0
        return GossipMessage(
            self.cluster, self.replication_factor, self.node_id, tuple(self._members.values()), ages
        )

    # ----- configuration ----------------------------------------------------------------------

    def add_seeds(self, gossip_addrs: Iterable[str]) -> None:
        known = {member.gossip_addr for member in self._members.values()}
        for addr in gossip_addrs:
            if addr != self.me.gossip_addr and addr not in known:
                self._seeds.setdefault(addr, _Seed())

    def restore(self, states: Iterable[MemberState], now: float) -> None:
        """Members saved by an earlier run, known again before any peer answers.

        Each keeps its saved status and incarnation (gossip corrects both) and
        is presumed heard from `now`: the failure detector then finds out, as
        for any member, whether it still answers.
        """
        for state in states:
            known = self._members.get(state.node_id)
            if state.node_id != self.node_id and supersedes(state, known):
                self._set(state, now)
            if state.node_id != self.node_id and state.status is not Status.LEFT:
                self._joined = True

    # ----- time -------------------------------------------------------------------------------

    def tick(self, now: float, rng: random.Random) -> list[Probe]:
        """Advance timers; return this round's probes."""
        for node_id, local in self._local.items():
            member = self._members[node_id]
            silent = now - local.alive_at >= self.settings.failure_timeout
            if silent and member.status in (Status.ALIVE, Status.SUSPECT):
                self._set(replace(member, status=Status.DEAD), now)
        message = self.message(now)
        probes: list[Probe] = []
        target = self._next_target(rng, {Status.ALIVE, Status.SUSPECT})
        if target is not None:
            probes.append(Probe(target.gossip_addr, target.node_id, message))
        dead = [m for m in self._members.values() if m.status is Status.DEAD]
        if dead and rng.random() < self.settings.dead_probe_chance:
            choice = rng.choice(sorted(dead, key=lambda m: m.node_id))
            if target is None or choice.node_id != target.node_id:
                probes.append(Probe(choice.gossip_addr, choice.node_id, message))
        for addr, seed in sorted(self._seeds.items()):
            if now >= seed.next_try:
                # The seed's next try is pushed back now; a success removes it.
                seed.next_try = now + max(seed.backoff, self.settings.seed_retry_min)
                probes.append(Probe(addr, None, message))
        return probes

    def _next_target(self, rng: random.Random, statuses: set[Status]) -> MemberState | None:
        # SWIM's round-robin over a shuffled order bounds the time to probe everyone.
        for _ in range(2):
            while self._probe_order:
                member = self._members.get(self._probe_order.pop())
                if member is not None and member.status in statuses:
                    return member
            candidates = sorted(
                node_id
                for node_id, member in self._members.items()
                if node_id != self.node_id and member.status in statuses
            )
            rng.shuffle(candidates)
            self._probe_order = candidates
        return None

    # ----- messages ---------------------------------------------------------------------------

    def check_compatible(self, message: GossipMessage, gossip_addr: str) -> None:
        reasons = []
        if message.sender == self.node_id:
            # Two processes with one NODE_ID would corrupt each other's ranges.
            reasons.append(f"it uses our node id {self.node_id!r} (NODE_ID must be unique)")
        if message.cluster != self.cluster:
            reasons.append(f"cluster {message.cluster!r} != ours {self.cluster!r}")
        if message.replication_factor != self.replication_factor:
            reasons.append(
                f"REPLICATION_FACTOR {message.replication_factor} != ours {self.replication_factor}"
            )
        if reasons:
            reason = "; ".join(reasons)
            self.incompatible[message.sender] = Incompatible(message.sender, gossip_addr, reason)
            raise IncompatiblePeerError(reason)

    def on_exchange(self, message: GossipMessage, now: float) -> GossipMessage:
        """A peer pushed its table to us: merge it and answer with ours (pull)."""
        sender = next(m for m in message.members if m.node_id == message.sender)
        self.check_compatible(message, sender.gossip_addr)
        self._merge(message, now)
        return self.message(now)

    def on_reply(self, probe: Probe, reply: GossipMessage, now: float) -> None:
        """The answer to one of our probes."""
        sender = next(m for m in reply.members if m.node_id == reply.sender)
        if sender.node_id == self.node_id and sender.gossip_addr == self.me.gossip_addr:
            # A seed that is this very node (listed in its own PEERS): forget it.
            self._seeds.pop(probe.gossip_addr, None)
            return
        self.check_compatible(reply, sender.gossip_addr)
        self._seeds.pop(probe.gossip_addr, None)
        self._merge(reply, now)

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

    def remove(self, node_id: str, now: float) -> MemberState:
        """An operator removes a dead member from the ring for good (gossiped as `left`)."""
        member = self._members.get(node_id)
        if member is None:
            raise KeyError(f"no member {node_id!r}")
        if node_id == self.node_id or member.status in (Status.ALIVE, Status.SUSPECT):
            raise ValueError(
                f"{node_id} is {member.status.name.lower()}: only a dead node can be removed "
                "(stop it, or let it leave with SIGTERM)"
            )
        removed = replace(member, status=Status.LEFT)
        self._set(removed, now)
        return removed

    def leave(self, now: float) -> list[Probe]:
        """Announce that we leave on purpose; return the messages to send to everyone."""
        self.me = replace(self.me, status=Status.LEFT)
        self._members[self.node_id] = self.me
        message = self.message(now)
        return [
            Probe(member.gossip_addr, member.node_id, message)
            for member in self.members()
            if member.node_id != self.node_id and member.status in (Status.ALIVE, Status.SUSPECT)
        ]

    # ----- merging ----------------------------------------------------------------------------

    def _merge(self, message: GossipMessage, now: float) -> None:
        self._joined = True
        for state in message.members:
            if state.node_id == self.node_id:
                self._about_me(state)
                continue
            current = self._members.get(state.node_id)
            if supersedes(state, current):
                self._set(state, now, first_seen=now - message.ages.get(state.node_id, 0.0))
        # Evidence of life: the sender itself (we just heard from it), then the
        # sender's own evidence about the others, aged on the way.
        self._evidence(message.sender, now)
        for node_id, age in message.ages.items():
            if node_id != self.node_id and node_id in self._local:
                self._evidence(node_id, now - age)
        self._seeds = {
            addr: seed
            for addr, seed in self._seeds.items()
            if addr != self._members[message.sender].gossip_addr
        }

    def _about_me(self, state: MemberState) -> None:
        if self.me.status is Status.LEFT:
            return
        if state.status is not Status.ALIVE and state.incarnation >= self.me.incarnation:
            # Refute: only we may speak for ourselves, with a fresh incarnation.
            self.me = replace(self.me, status=Status.ALIVE, incarnation=state.incarnation + 1)
            self._members[self.node_id] = self.me
        elif state.incarnation > self.me.incarnation:
            self.me = replace(self.me, incarnation=state.incarnation + 1)
            self._members[self.node_id] = self.me

    def _evidence(self, node_id: str, alive_at: float) -> None:
        local = self._local[node_id]
        local.alive_at = max(local.alive_at, alive_at)

    def _set(self, state: MemberState, now: float, first_seen: float | None = None) -> None:
        previous = self._members.get(state.node_id)
        self._members[state.node_id] = state
        local = self._local.get(state.node_id)
        if local is None:
            # A member we just learned of is dated by the sender's evidence.
            alive_at = now if first_seen is None else first_seen
            local = self._local[state.node_id] = _Local(alive_at=alive_at, changed_at=now)
        if previous is None or previous.status is not state.status:
            local.changed_at = now


def summary(members: Iterable[MemberState]) -> Mapping[str, int]:
    counts = {status.name.lower(): 0 for status in Status}
    for member in members:
        counts[member.status.name.lower()] += 1
    return counts
