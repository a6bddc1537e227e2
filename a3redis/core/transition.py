"""Ring transitions: who owns what while members join and leave (no I/O).

The rules, in the order a member's life follows them:

1. Roles (gossiped with each member, changed only by the member itself):
   `starting` (a fresh node at its cold-start gate), `waiting` (it will
   join), `joining` -> `joined` (its join), `normal` (an owner), `retiring`
   (it will leave) -> `leaving` -> `departing` (its decommission), then the
   status `left`.
2. Configurations. `old` is the ring before the transition in progress and
   `new` the ring after it: `normal` and `retiring` members are in both,
   `joining`/`joined` members in `new` only, `leaving`/`departing` members
   in `old` only; `starting` and `waiting` members and members that left
   are in neither. A dead member keeps its place (its writes become hints).
3. Reads use `old` until the member in transition has switched (`joined`
   or `departing`), then `new`: always one whole configuration, never a
   mixture. Writes go to the replicas of both and need W acknowledgements
   among the old replicas of the key and W among the new ones, so a write
   acknowledged at any moment of a transition is read back from either.
4. One transition at a time. A member waiting to join (or to leave) starts
   when no member is in transition and no other member waiting has a
   smaller node id. Two that start at once both see each other before
   either switches (each waits for the other's acknowledgement, rule 5):
   the one with the greater node id steps back and waits again.
5. A member acts on a role it announced only once every member has
   acknowledged it (membership.unacknowledged) and `drain` seconds have
   passed since, so that every request coordinated under the previous
   configuration has finished. Dead members are waited for too, as
   Cassandra refuses a range movement while a node is down: a member that
   looks dead may only be cut off, and go on coordinating with the view it
   had (a write through it, acknowledged by replicas of the ring it knows,
   would be missing from the ring the others read). So a join or a
   decommission waits while a member is down; one that is gone for good is
   removed first (rule 8). Not waited for: members that left, and
   `departing` members that are dead (rule 7). A node that comes back (a
   restart, or a pause or starvation longer than FAILURE_TIMEOUT) still
   coordinates nothing before a peer's table has reached it (Readiness). A
   member that sees every other member down waits: it is more likely cut
   off than alone.
6. Streaming: in a join, the joining member copies each partition it gains
   from the owner it displaces, which holds every write acknowledged there
   that the new configuration does not otherwise count; if that owner is
   down (or it displaces none: the ring was smaller than the replication
   factor), from every live old owner, provided enough are live that every
   QUORUM write is among them (else the partition waits). In a
   decommission the leaving member copies each of its partitions to the
   member that gains it (to every remaining owner when none does). Records merge
   by last-write-wins, so a copy never undoes a newer write.
7. Once every partition is in, the member switches (`joined`, or
   `departing`); once that is acknowledged and drained, it becomes `normal`
   (or announces `left` and stops). Only then does a former owner hand off
   and drop what it no longer owns (a3redis.core.ownership). A `departing`
   member that is dead counts as gone: its data is handed over already, and
   its `left` may have been lost on the way. So it never comes back: a
   `departing` member never raises its incarnation (it does not refute, and
   restarts at the incarnation it had, `restart_state`), so a view that saw
   it dead keeps it dead, and one that hears itself declared dead takes it
   as its `left` (core.membership) and finishes at once. (Come back alive,
   it would be in the old configuration again for views that had moved on,
   and a transition begun since would read from replicas it no longer
   counts.) A restart no one noticed goes on where it stopped.
8. Removal. An operator removes a member that is dead for good (its
   disk is lost, or it crashed in its decommission): before it is
   announced `left`, each partition it owned is copied to the member that
   gains it from every live old owner (`removal_transfers`), so the copies
   that count stay at W. A write acknowledged while it was dead never
   counted on it, and every other old owner is also a new owner.
9. Cold start. A fresh node (no saved member table) is `starting` until
   every configured peer has answered, or `join_timeout` has passed since
   one did. Then, if it knows a member that serves a ring (`normal`, or in
   a transition), it waits to join it; otherwise it is `founding`: an owner
   of the new ring with nothing to stream, like the other founders, but
   not serving yet. A founder becomes `normal` (and serves) once it knows
   no member that is still `starting` (or `join_timeout` after it began to
   found): a node that reaches its gate while the founders it knows have
   served nothing yet founds with them, and nodes started together form
   one ring at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from a3redis.core.membership import Membership, MemberState, Role, Status

# Roles of a member in transition, and the ones that have switched (rule 3).
ACTIVE = frozenset({Role.JOINING, Role.JOINED, Role.LEAVING, Role.DEPARTING})
SWITCHED = frozenset({Role.JOINED, Role.DEPARTING})
QUEUED = frozenset({Role.WAITING, Role.RETIRING})
_IN_OLD = frozenset({Role.NORMAL, Role.FOUNDING, Role.RETIRING, Role.LEAVING, Role.DEPARTING})
_IN_NEW = frozenset({Role.NORMAL, Role.FOUNDING, Role.RETIRING, Role.JOINING, Role.JOINED})
# Serving a ring: what a fresh node at its gate looks for (rule 9).
_ESTABLISHED = (_IN_OLD | _IN_NEW) - {Role.FOUNDING}
_LIVE = (Status.ALIVE, Status.SUSPECT)


@dataclass(frozen=True, slots=True)
class Configurations:
    """The ring member sets of the moment (rule 2)."""

    old: frozenset[str]
    new: frozenset[str]
    # Reads use `new` (the member in transition has switched).
    switched: bool

    @property
    def read(self) -> frozenset[str]:
        return self.new if self.switched else self.old

    @property
    def changing(self) -> bool:
        return self.old != self.new


def configurations(members: Iterable[MemberState]) -> Configurations:
    old: set[str] = set()
    new: set[str] = set()
    active = 0
    switched = 0
    for member in members:
        role = member.role
        if member.gone:  # out of every configuration (rule 7)
            continue
        if role in _IN_OLD:
            old.add(member.node_id)
        if role in _IN_NEW:
            new.add(member.node_id)
        if role in ACTIVE:
            active += 1
            switched += role in SWITCHED
    return Configurations(frozenset(old), frozenset(new), active > 0 and switched == active)


def restart_state(
    role: Role, saved_incarnation: int | None, fresh_incarnation: int, left_earlier: bool
) -> tuple[Status, int]:
    """The status and incarnation a member restarts with in its saved role.

    Fresh (above every incarnation used before) but for a `departing` member, which
    keeps the one it had so that no view that saw it dead takes it back (rule 7);
    `left` after a decommission that ended in an earlier run (`left_earlier`: it stays
    out of the ring, and of the acknowledgements others wait for)."""
    if left_earlier:
        return Status.LEFT, fresh_incarnation
    if role is Role.DEPARTING and saved_incarnation is not None:
        return Status.ALIVE, saved_incarnation
    return Status.ALIVE, fresh_incarnation


# ----- rule 4: whose turn -----------------------------------------------------------------


def in_transition(members: Iterable[MemberState]) -> list[MemberState]:
    """Members in transition, by node id (more than one only for a moment, rule 4)."""
    return sorted((m for m in members if m.role in ACTIVE and not m.gone), key=lambda m: m.node_id)


def my_turn(me: MemberState, members: Iterable[MemberState]) -> bool:
    """Whether a queued member may start its transition now."""
    everyone = list(members)
    if in_transition(everyone):
        return False
    queued = [
        m.node_id
        for m in everyone
        if m.role in QUEUED and m.status in _LIVE and m.node_id != me.node_id
    ]
    return all(me.node_id < other for other in queued)


def must_step_back(me: MemberState, members: Iterable[MemberState]) -> bool:
    """Whether a member that started at the same time as another must wait again."""
    if me.role not in (Role.JOINING, Role.LEAVING):
        return False
    return any(m.node_id < me.node_id for m in in_transition(members) if m.node_id != me.node_id)


# ----- rule 5: acknowledged and drained ---------------------------------------------------


class Announcement:
    """When a role we announced may be acted on: acknowledged by every member, then
    `drain` seconds."""

    def __init__(self, drain: float) -> None:
        self.drain = drain
        self._role: Role | None = None
        self._since: int | None = None
        self._acknowledged_at: float | None = None

    def settled(
        self, role: Role, incarnation: int, unacknowledged: Sequence[str], now: float
    ) -> bool:
        if (role, incarnation) != (self._role, self._since):
            self._role, self._since, self._acknowledged_at = role, incarnation, None
        if unacknowledged:
            self._acknowledged_at = None
            return False
        if self._acknowledged_at is None:
            self._acknowledged_at = now
        return now - self._acknowledged_at >= self.drain

    def waiting_for(self, unacknowledged: Sequence[str], now: float) -> str:
        """What the announcement waits for, for status lines."""
        if unacknowledged:
            return "acknowledgement from " + ", ".join(unacknowledged)
        if self._acknowledged_at is None:
            return "acknowledgements"
        left = max(0.0, self.drain - (now - self._acknowledged_at))
        return f"requests of the previous configuration to drain ({left:.1f}s)"


# ----- rule 6: what streams from where ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transfer:
    """One partition to copy: from `sources` (join: to us; leave: from us to `target`)."""

    partition: int
    sources: tuple[str, ...]
    target: str


def join_transfers(
    me: str,
    partitions: int,
    old_owners: Callable[[int], Sequence[str]],
    new_owners: Callable[[int], Sequence[str]],
    is_down: Callable[[str], bool],
    write_quorum: int,
) -> list[Transfer]:
    """The partitions a joining member gains, each with where to copy it from.

    Sources: the old owner it displaces, when that one is up. Otherwise (it is
    down, or the ring was smaller than the replication factor and nobody is
    displaced) every live old owner, and at least `len(old) - W + 1` of them
    (W: `write_quorum`, the W of QUORUM), so that every write that W old
    owners acknowledged is among them; with fewer live, the sources are empty
    and the partition waits.
    """
    transfers: list[Transfer] = []
    for partition in range(partitions):
        gained = new_owners(partition)
        if me not in gained:
            continue
        old = [o for o in old_owners(partition) if o != me]
        displaced = [o for o in old if o not in gained]
        if displaced and not any(is_down(o) for o in displaced):
            sources = displaced
        else:
            live = [o for o in old if not is_down(o)]
            needed = len(old) - min(write_quorum, len(old)) + 1
            sources = live if len(live) >= needed else []
        transfers.append(Transfer(partition, tuple(sources), me))
    return transfers


def _departure_transfers(
    member: str,
    partitions: int,
    old_owners: Callable[[int], Sequence[str]],
    new_owners: Callable[[int], Sequence[str]],
    sources_of: Callable[[Sequence[str], str], tuple[str, ...]],
) -> list[Transfer]:
    """The partitions `member` owned, each to the member(s) gaining it, from `sources_of`
    its old owners. When none gains it (the ring shrinks below the replication factor),
    every remaining owner gets the copy: any of them may lack a write that only the
    departing member acknowledged."""
    transfers: list[Transfer] = []
    for partition in range(partitions):
        old = old_owners(partition)
        if member not in old:
            continue
        new = new_owners(partition)
        gainers = [target for target in new if target not in old] or list(new)
        for target in gainers:
            sources = sources_of(old, target)
            if sources or target not in old:
                transfers.append(Transfer(partition, sources, target))
            # else: the target is the only other old owner left, and holds its own copy
    return transfers


def leave_transfers(
    me: str,
    partitions: int,
    old_owners: Callable[[int], Sequence[str]],
    new_owners: Callable[[int], Sequence[str]],
) -> list[Transfer]:
    """Rule 6: the partitions a leaving member holds, each from it to the member(s) that
    gain it."""
    return _departure_transfers(me, partitions, old_owners, new_owners, lambda _, __: (me,))


def removal_transfers(
    removed: str,
    partitions: int,
    old_owners: Callable[[int], Sequence[str]],
    new_owners: Callable[[int], Sequence[str]],
    is_down: Callable[[str], bool],
) -> list[Transfer]:
    """Rule 8: the partitions a removed member owned, each copied to the member(s)
    gaining it from every live old owner."""

    def live_others(old: Sequence[str], target: str) -> tuple[str, ...]:
        return tuple(o for o in old if o not in (removed, target) and not is_down(o))

    return _departure_transfers(removed, partitions, old_owners, new_owners, live_others)


# ----- the whole life: what a member does next --------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """What the shell does next: announce `role`, stream, announce `left`, or nothing."""

    role: Role | None = None
    stream: bool = False
    leave: bool = False
    # Why the member waits (for status lines); empty when it acts.
    waiting: str = ""


def next_step(
    me: MemberState,
    members: Sequence[MemberState],
    unacknowledged: Sequence[str],
    announcement: Announcement,
    streamed: bool,
    now: float,
) -> Step:
    """Rules 4-7 for our own role: the one thing to do now."""
    role = me.role
    if role in QUEUED:
        if my_turn(me, members):
            return Step(role=Role.JOINING if role is Role.WAITING else Role.LEAVING)
        active = in_transition(members)
        return Step(
            waiting=f"{active[0].node_id} is {active[0].role.value}" if active else "its turn"
        )
    if role not in ACTIVE:
        return Step()
    if must_step_back(me, members):
        return Step(role=Role.WAITING if role is Role.JOINING else Role.RETIRING)
    if _cut_off(me, members):
        # Every other member seems down: more likely we are cut off than they all died,
        # and a step nobody saw would leave them behind.
        return Step(waiting="a live member to see this step (every other member seems down)")
    if not announcement.settled(role, me.incarnation, unacknowledged, now):
        return Step(waiting=announcement.waiting_for(unacknowledged, now))
    if role in (Role.JOINING, Role.LEAVING):
        if not streamed:
            return Step(stream=True)
        return Step(role=Role.JOINED if role is Role.JOINING else Role.DEPARTING)
    if role is Role.JOINED:
        return Step(role=Role.NORMAL)
    return Step(leave=True)


def _cut_off(me: MemberState, members: Sequence[MemberState]) -> bool:
    others = [m for m in members if m.node_id != me.node_id and m.status is not Status.LEFT]
    return bool(others) and not any(m.status in _LIVE for m in others)


# ----- rule 9: cold start -------------------------------------------------------------------


def gate_passed(
    peers_unheard: int, heard_any: bool, started_at: float, now: float, join_timeout: float
) -> bool:
    """Whether a starting node has heard enough of its cluster to take a role."""
    if peers_unheard == 0:
        return True
    return heard_any and now - started_at >= join_timeout


def role_after_gate(me: MemberState, members: Iterable[MemberState]) -> Role:
    """Found the ring (no member serving one is known) or wait to join it."""
    for member in members:
        if (
            member.node_id != me.node_id
            and member.status is not Status.LEFT
            and member.role in _ESTABLISHED
        ):
            return Role.WAITING
    return Role.FOUNDING


def founded(
    me: MemberState, members: Iterable[MemberState], since: float, now: float, join_timeout: float
) -> bool:
    """Whether a founder may serve: no member it knows is still at its gate."""
    return not starting_peers(me, members) or now - since >= join_timeout


def starting_peers(me: MemberState, members: Iterable[MemberState]) -> frozenset[str]:
    """Live members still at their gate: a founder waits for them (rule 9)."""
    return frozenset(
        m.node_id
        for m in members
        if m.node_id != me.node_id and m.role is Role.STARTING and m.status in _LIVE
    )


@dataclass(frozen=True, slots=True)
class TickView:
    """What a member's shell knows at one tick of its rebalancer."""

    me: MemberState
    members: Sequence[MemberState]
    unacknowledged: Sequence[str]
    streamed: bool
    # When we became (or, restarted, found ourselves) a founder; None otherwise.
    founding_since: float | None
    now: float
    join_timeout: float
    # The cold-start gate: configured peers not heard yet, whether any member was
    # heard, when the node started.
    peers_unheard: int
    heard_any: bool
    started_at: float


@dataclass(frozen=True, slots=True)
class Tick:
    """The one thing a tick does (a `Step`), and what the shell keeps for the next."""

    step: Step
    founding_since: float | None
    # A line for the log when the step begins something an operator should see.
    note: str = ""


def tick(view: TickView, announcement: Announcement) -> Tick:
    """Rules 4-9 for our own role at one tick: the cold-start gate, founding, then
    `next_step`. (A member that has left, or was parked by an operator, does not tick.)"""
    me, now = view.me, view.now
    if me.role is Role.STARTING:
        if not gate_passed(
            view.peers_unheard, view.heard_any, view.started_at, now, view.join_timeout
        ):
            return Tick(Step(waiting="configured peers to answer"), view.founding_since)
        role = role_after_gate(me, view.members)
        if role is Role.FOUNDING:
            founding = "founding the ring (no member serving a ring is known)"
            return Tick(Step(role=role), now, founding)
        return Tick(Step(role=role), None, "a ring exists: waiting for our turn to join it")
    if me.role is Role.FOUNDING:
        since = now if view.founding_since is None else view.founding_since  # restarted founding
        if founded(me, view.members, since, now, view.join_timeout):
            return Tick(Step(role=Role.NORMAL), None)
        return Tick(Step(waiting="founders still at their gate"), since)
    step = next_step(me, view.members, view.unacknowledged, announcement, view.streamed, now)
    return Tick(step, view.founding_since)


class Readiness:
    """When this node may coordinate requests (rules 5 and 9).

    A node at its gate or still founding is not. A node that knows other
    members (configured peers, or a saved table) waits until a peer that
    coordinates requests has sent it its table, or every member it believes
    alive has (they restarted together: no newer table exists), or, with a
    saved table to go on, `join_timeout` after it started. Once ready it stays
    so, except while `out_of_touch` (it was paused or starved for
    FAILURE_TIMEOUT: the others may have moved on without it) until a peer's
    table reaches it again.
    """

    def __init__(self, started_at: float, join_timeout: float) -> None:
        self.started_at = started_at
        self.join_timeout = join_timeout
        self.ready = False

    def check(self, membership: Membership, now: float) -> bool:
        if not self.ready:
            self.ready = self._first_time(membership, now)
            membership.coordinating = self.ready
        return self.ready and not membership.out_of_touch(now)

    def _first_time(self, membership: Membership, now: float) -> bool:
        if membership.role in (Role.STARTING, Role.FOUNDING):
            return False
        others = any(m.node_id != membership.node_id for m in membership.states())
        if not others or membership.heard_ready:
            return True
        if membership.heard and membership.heard_from_every_live_member():
            return True
        restored = membership.joined
        return restored and now - self.started_at >= self.join_timeout
