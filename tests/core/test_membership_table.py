"""The member table's merge rules and invariants, driven by hypothesis."""

from __future__ import annotations

import contextlib
import copy
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from a3redis.core.membership import (
    GossipMessage,
    IncompatiblePeerError,
    Membership,
    MembershipSettings,
    MemberState,
    MessageError,
    Probe,
    Role,
    Status,
)

IDS = ["node-1", "node-2", "node-3", "node-4"]


def core(node_id: str, incarnation: int = 1) -> Membership:
    me = MemberState(node_id, f"{node_id}:1", f"{node_id}:2", Status.ALIVE, incarnation)
    return Membership(me, "c", 3, MembershipSettings(failure_timeout=5.0))


member_states = st.builds(
    MemberState,
    node_id=st.sampled_from(IDS),
    grpc_addr=st.sampled_from(["a:1", "b:1"]),
    gossip_addr=st.sampled_from(["a:2", "b:2"]),
    status=st.sampled_from(list(Status)),
    incarnation=st.integers(0, 4),
)


# Honest gossip: a node has one address per incarnation (it moves only by restarting,
# which raises its incarnation). An address claim at an equal incarnation is refused
# unless the member itself makes it, so whole entries merge commutatively on honest
# input, and ranks on any input (test_ranks_merge_commutatively_on_any_input).
honest_states = member_states.map(
    lambda m: replace(
        m,
        grpc_addr=f"{m.node_id}-{m.incarnation}:1",
        gossip_addr=f"{m.node_id}-{m.incarnation}:2",
    )
)


@st.composite
def messages(
    draw: st.DrawFn, states_of: st.SearchStrategy[MemberState] = member_states
) -> GossipMessage:
    states = draw(st.lists(states_of, min_size=1, max_size=6, unique_by=lambda m: m.node_id))
    sender = draw(st.sampled_from(states)).node_id
    ages = draw(st.dictionaries(st.sampled_from([s.node_id for s in states]), st.floats(0, 20)))
    return GossipMessage("c", 3, sender, tuple(states), ages)


honest_messages = messages(honest_states)


def table(membership: Membership) -> list[MemberState]:
    return membership.members()


def others(membership: Membership) -> list[MemberState]:
    # A node's own entry is not merged but refuted: only it speaks for itself.
    return [m for m in membership.members() if m.node_id != membership.node_id]


def exchange(membership: Membership, message: GossipMessage) -> None:
    with contextlib.suppress(IncompatiblePeerError):  # a message "from" the observer itself
        membership.on_exchange(message, 1.0)


@settings(max_examples=300)
@given(first=honest_messages, second=honest_messages, observer=st.sampled_from(IDS))
def test_merge_is_commutative_and_idempotent(
    first: GossipMessage, second: GossipMessage, observer: str
) -> None:
    one, two, again = core(observer), core(observer), core(observer)
    exchange(one, first)
    exchange(one, second)
    exchange(two, second)
    exchange(two, first)
    assert others(one) == others(two)
    exchange(again, first)
    snapshot = table(again)
    exchange(again, first)
    assert table(again) == snapshot


@settings(max_examples=300)
@given(first=messages(), second=messages(), observer=st.sampled_from(IDS))
def test_ranks_merge_commutatively_on_any_input(
    first: GossipMessage, second: GossipMessage, observer: str
) -> None:
    one, two = core(observer), core(observer)
    exchange(one, first)
    exchange(one, second)
    exchange(two, second)
    exchange(two, first)
    assert [(m.node_id, m.rank()) for m in others(one)] == [
        (m.node_id, m.rank()) for m in others(two)
    ]


def test_a_message_from_our_own_node_id_is_refused() -> None:
    me = core("node-1")
    impostor = MemberState("node-1", "z:1", "z:2", Status.ALIVE, 99)
    with pytest.raises(IncompatiblePeerError, match="NODE_ID must be unique"):
        me.on_exchange(GossipMessage("c", 3, "node-1", (impostor,)), 0.0)
    assert me.members() == [me.me] and me.me.incarnation == 1


@given(message=messages())
def test_messages_survive_their_json_form(message: GossipMessage) -> None:
    decoded = GossipMessage.from_json(message.to_json())
    assert decoded.members == message.members
    assert decoded.sender == message.sender
    assert set(decoded.ages) == set(message.ages)
    assert all(abs(decoded.ages[k] - message.ages[k]) < 0.001 for k in message.ages)


@given(
    raw=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_arbitrary_json_is_rejected_with_message_error_or_parsed(raw: object) -> None:
    with contextlib.suppress(MessageError):
        GossipMessage.from_json(raw)


class MemberTables(RuleBasedStateMachine):
    """Several cores exchanging, failing probes and ticking through time."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.rng = random.Random(0)
        self.cores = {node_id: core(node_id) for node_id in IDS[:3]}
        for membership in self.cores.values():
            membership.add_seeds(m.me.gossip_addr for m in self.cores.values())
        self.ranks: dict[tuple[str, str], tuple[int, int]] = {}
        self.left: set[str] = set()

    def _probe(self, source: str, target: str) -> Probe:
        dest = self.cores[target]
        return Probe(dest.me.gossip_addr, target, self.cores[source].message(self.now))

    @rule(a=st.sampled_from(IDS[:3]), b=st.sampled_from(IDS[:3]))
    def exchange(self, a: str, b: str) -> None:
        if a == b:
            return
        probe = self._probe(a, b)
        reply = self.cores[b].on_exchange(probe.message, self.now)
        self.cores[a].on_reply(probe, reply, self.now)

    @rule(a=st.sampled_from(IDS[:3]), b=st.sampled_from(IDS[:3]))
    def probe_fails(self, a: str, b: str) -> None:
        if a != b:
            self.cores[a].on_probe_failed(self._probe(a, b), self.now)

    @rule(a=st.sampled_from(IDS[:3]), seconds=st.floats(0.1, 8.0))
    def tick(self, a: str, seconds: float) -> None:
        self.now += seconds
        self.cores[a].tick(self.now, self.rng)

    @rule(a=st.sampled_from(IDS[:3]), rumour=member_states)
    def hear_a_rumour(self, a: str, rumour: MemberState) -> None:
        """Arbitrary (even false) gossip from a fourth node, e.g. "you are dead"."""
        sender = MemberState("node-4", "d:1", "d:2", Status.ALIVE, 1)
        states = (sender,) if rumour.node_id == "node-4" else (sender, rumour)
        self.cores[a].on_exchange(GossipMessage("c", 3, "node-4", states), self.now)

    @precondition(lambda self: not self.left)
    @rule(a=st.sampled_from(IDS[:3]))
    def leave(self, a: str) -> None:
        self.cores[a].leave(self.now)
        self.left.add(a)

    @invariant()
    def nobody_believes_itself_dead_or_suspect(self) -> None:
        for node_id, membership in self.cores.items():
            expected = Status.LEFT if node_id in self.left else Status.ALIVE
            assert membership.me.status is expected
            assert membership.get(node_id) == membership.me

    @invariant()
    def incarnations_and_ranks_never_go_back(self) -> None:
        for observer, membership in self.cores.items():
            for member in membership.members():
                key = (observer, member.node_id)
                rank = member.rank()
                assert rank >= self.ranks.get(key, rank), (key, rank, self.ranks[key])
                self.ranks[key] = rank


MemberTables.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestMemberTables = MemberTables.TestCase


def test_a_node_hearing_itself_dead_refutes_with_a_higher_incarnation() -> None:
    me = core("node-1", incarnation=7)
    rumour = MemberState("node-1", "x:1", "x:2", Status.DEAD, 9)
    sender = MemberState("node-2", "y:1", "y:2", Status.ALIVE, 1)
    reply = me.on_exchange(GossipMessage("c", 3, "node-2", (sender, rumour)), 0.0)
    mine = next(m for m in reply.members if m.node_id == "node-1")
    assert (mine.status, mine.incarnation) == (Status.ALIVE, 10)
    assert copy.deepcopy(me.me) == mine


@pytest.mark.parametrize("status", [Status.DEAD, Status.LEFT])
def test_a_departing_node_hearing_itself_dead_has_left_and_does_not_come_back(
    status: Status,
) -> None:
    me = core("node-1", incarnation=7)
    me.set_role(Role.DEPARTING)
    mine = me.me.incarnation
    rumour = MemberState("node-1", "x:1", "x:2", status, mine + 2, Role.DEPARTING)
    sender = MemberState("node-2", "y:1", "y:2", Status.ALIVE, 1)
    reply = me.on_exchange(GossipMessage("c", 3, "node-2", (sender, rumour)), 0.0)
    told = next(m for m in reply.members if m.node_id == "node-1")
    # Left, at the rumour's incarnation: it outranks the rumour everywhere.
    assert (told.status, told.incarnation, told.role) == (Status.LEFT, mine + 2, Role.DEPARTING)
    assert me.me == told
    # What a peer that still thinks it alive then hears does not bring it back either.
    later = me.on_exchange(GossipMessage("c", 3, "node-2", (sender,)), 1.0)
    assert next(m for m in later.members if m.node_id == "node-1") == told


def test_a_departing_node_does_not_refute_a_suspicion() -> None:
    """Its incarnation never rises (rule 7): a view that saw it dead keeps it dead."""
    me = core("node-1", incarnation=7)
    me.set_role(Role.DEPARTING)
    mine = me.me
    rumour = MemberState("node-1", "x:1", "x:2", Status.SUSPECT, mine.incarnation, Role.DEPARTING)
    sender = MemberState("node-2", "y:1", "y:2", Status.ALIVE, 1)
    me.on_exchange(GossipMessage("c", 3, "node-2", (sender, rumour)), 0.0)
    assert me.me == mine


@given(
    saved=st.lists(honest_states, max_size=6, unique_by=lambda m: m.node_id),
    gossip=honest_messages,
)
def test_a_restored_table_is_known_at_once_and_merges_like_gossip(
    saved: list[MemberState], gossip: GossipMessage
) -> None:
    restored = core("node-1")
    assert not restored.joined
    restored.restore(saved, 0.0)
    assert restored.joined == any(
        state.node_id != "node-1" and state.status is not Status.LEFT for state in saved
    )
    saved_others = [s for s in saved if s.node_id != "node-1"]
    assert others(restored) == sorted(saved_others, key=lambda m: m.node_id)
    # Restoring merges like gossip: it never rolls back newer news, in either order.
    exchange(restored, gossip)
    late = core("node-1")
    exchange(late, gossip)
    late.restore(saved, 0.0)
    assert others(late) == others(restored)


def test_a_restored_member_that_stays_silent_is_declared_dead() -> None:
    membership = core("node-1")
    membership.restore([MemberState("node-2", "b:1", "b:2", Status.ALIVE, 3)], 100.0)
    rng = random.Random(1)
    probes = membership.tick(100.0, rng)
    assert [p.node_id for p in probes] == ["node-2"]
    membership.on_probe_failed(probes[0], 100.5)
    membership.tick(105.0, rng)
    member = membership.get("node-2")
    assert member is not None and member.status is Status.DEAD


def test_a_node_that_joined_stays_joined_when_the_others_leave() -> None:
    membership = core("node-1")
    peer = MemberState("node-2", "b:1", "b:2", Status.ALIVE, 1)
    membership.on_exchange(GossipMessage("c", 3, "node-2", (peer,)), 1.0)
    assert membership.joined
    membership.on_exchange(
        GossipMessage("c", 3, "node-2", (replace(peer, status=Status.LEFT),)), 2.0
    )
    assert membership.joined  # the ring is rightly its own now
    # Restarted with that table, it waits to hear from someone first.
    restarted = core("node-1", incarnation=2)
    restarted.restore(membership.members(), 0.0)
    assert not restarted.joined
