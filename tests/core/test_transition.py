"""Ring transitions (a3redis.core.transition): configurations, turns, copies, the cold start."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a3redis.core.membership import (
    GossipMessage,
    Membership,
    MemberState,
    MessageError,
    Role,
    Status,
    supersedes,
)
from a3redis.core.quorum import JointWriteQuorum
from a3redis.core.ring import Ring
from a3redis.core.transition import (
    ACTIVE,
    SWITCHED,
    Announcement,
    Readiness,
    TickView,
    configurations,
    founded,
    gate_passed,
    join_transfers,
    leave_transfers,
    must_step_back,
    my_turn,
    next_step,
    removal_transfers,
    restart_state,
    role_after_gate,
    tick,
)
from tests.sim.membership_net import SimNetwork

PARTITIONS = 64


def member(node_id: str, role: Role = Role.NORMAL, status: Status = Status.ALIVE) -> MemberState:
    return MemberState(node_id, f"{node_id}:1", f"{node_id}:2", status, 1, role)


# ----- configurations -----------------------------------------------------------------------


def test_a_joining_member_is_in_the_new_configuration_only_and_reads_stay_old() -> None:
    configs = configurations([member("a"), member("b"), member("j", Role.JOINING)])
    assert configs.old == {"a", "b"}
    assert configs.new == {"a", "b", "j"}
    assert configs.read == configs.old and configs.changing


def test_reads_move_to_the_new_configuration_once_the_member_switched() -> None:
    configs = configurations([member("a"), member("b"), member("j", Role.JOINED)])
    assert configs.read == {"a", "b", "j"} and configs.old == {"a", "b"}


def test_a_leaving_member_is_in_the_old_configuration_only() -> None:
    leaving = configurations([member("a"), member("b"), member("l", Role.LEAVING)])
    assert leaving.old == {"a", "b", "l"} and leaving.new == {"a", "b"}
    assert leaving.read == leaving.old
    departing = configurations([member("a"), member("b"), member("l", Role.DEPARTING)])
    assert departing.read == {"a", "b"}


def test_newcomers_and_members_that_left_are_in_no_configuration() -> None:
    configs = configurations(
        [
            member("a"),
            member("s", Role.STARTING),
            member("w", Role.WAITING),
            member("gone", Role.NORMAL, Status.LEFT),
            member("dead", Role.NORMAL, Status.DEAD),
            member("r", Role.RETIRING),
        ]
    )
    assert configs.old == configs.new == {"a", "dead", "r"}
    assert not configs.changing


def test_reads_use_one_whole_configuration_when_two_members_are_in_transition() -> None:
    # Only one transition runs at a time; if two overlap for a moment, reads stay old
    # until both have switched: never a mixture of the two.
    half = configurations([member("a"), member("j1", Role.JOINED), member("j2", Role.JOINING)])
    assert half.read == {"a"}
    both = configurations([member("a"), member("j1", Role.JOINED), member("j2", Role.JOINED)])
    assert both.read == {"a", "j1", "j2"}


# ----- joint write quorums -----------------------------------------------------------------


def test_a_joint_write_needs_w_in_the_old_and_w_in_the_new_replicas() -> None:
    quorum = JointWriteQuorum(("a", "b", "c"), ("j", "b", "c"), 2)
    assert quorum.replicas == ("a", "b", "c", "j")
    quorum.ack("a")
    quorum.ack("j")
    assert not quorum.succeeded  # one in each list
    quorum.ack("b")
    assert quorum.succeeded and quorum.decided


def test_a_joint_write_fails_once_either_list_cannot_reach_w() -> None:
    quorum = JointWriteQuorum(("a", "b", "c"), ("j", "b", "c"), 2)
    quorum.ack("a")
    quorum.fail("b")
    assert not quorum.decided
    quorum.fail("j")  # the new list has only c left
    assert quorum.impossible and quorum.decided and not quorum.succeeded


# ----- whose turn ----------------------------------------------------------------------------


def test_a_waiting_member_starts_only_when_no_transition_runs_and_it_is_first() -> None:
    w1, w2 = member("w1", Role.WAITING), member("w2", Role.WAITING)
    assert my_turn(w1, [member("a"), w1, w2])
    assert not my_turn(w2, [member("a"), w1, w2])
    assert not my_turn(w1, [member("a"), w1, member("j", Role.JOINING)])
    # A member waiting to leave queues the same way.
    assert not my_turn(member("r", Role.RETIRING), [member("a"), member("j", Role.JOINED)])


def test_of_two_members_that_started_at_once_the_greater_id_steps_back() -> None:
    first, second = member("n1", Role.JOINING), member("n2", Role.JOINING)
    assert must_step_back(second, [first, second])
    assert not must_step_back(first, [first, second])
    # A member that has switched never steps back (rule 4: the other saw it first).
    assert not must_step_back(member("n2", Role.JOINED), [first])


def test_a_transition_waits_for_acknowledgements_then_the_drain() -> None:
    announcement = Announcement(drain=5.0)
    me = member("j", Role.JOINING)
    everyone = [member("a"), me]
    step = next_step(me, everyone, ["a"], announcement, False, 100.0)
    assert not step.stream and "acknowledgement from a" in step.waiting
    assert not next_step(me, everyone, [], announcement, False, 101.0).stream
    assert not next_step(me, everyone, [], announcement, False, 105.9).stream
    assert next_step(me, everyone, [], announcement, False, 106.0).stream
    # Streamed: switch; a new role starts the wait again.
    assert next_step(me, everyone, [], announcement, True, 106.0).role is Role.JOINED
    joined = MemberState("j", "j:1", "j:2", Status.ALIVE, 2, Role.JOINED)
    assert next_step(joined, everyone, [], announcement, True, 106.0).role is None
    assert next_step(joined, everyone, [], announcement, True, 111.0).role is Role.NORMAL


def test_a_decommission_goes_leaving_departing_then_leaves() -> None:
    announcement = Announcement(drain=0.0)
    retiring = member("l", Role.RETIRING)
    assert next_step(retiring, [retiring], [], announcement, False, 0.0).role is Role.LEAVING
    leaving = MemberState("l", "l:1", "l:2", Status.ALIVE, 2, Role.LEAVING)
    assert next_step(leaving, [leaving], [], announcement, False, 1.0).stream
    assert next_step(leaving, [leaving], [], announcement, True, 1.0).role is Role.DEPARTING
    departing = MemberState("l", "l:1", "l:2", Status.ALIVE, 3, Role.DEPARTING)
    assert next_step(departing, [departing], [], announcement, True, 2.0).leave


# ----- what streams from where: the copies that count never fall below W ----------------------


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 6),
    factor=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_after_a_join_every_write_keeps_w_copies_among_its_new_replicas(
    size: int, factor: int, seed: int
) -> None:
    rng = random.Random(seed)
    members = [f"n{i}" for i in range(size)]
    old = Ring(members, factor, PARTITIONS)
    new = Ring([*members, "joiner"], factor, PARTITIONS)
    quorum = factor // 2 + 1
    transfers = {
        t.partition: t
        for t in join_transfers(
            "joiner",
            PARTITIONS,
            old.partition_owners,
            new.partition_owners,
            lambda _: False,
            quorum,
        )
    }
    for partition in range(PARTITIONS):
        before, after = old.partition_owners(partition), new.partition_owners(partition)
        required = min(len(before), factor // 2 + 1)
        # A write acknowledged by `required` of the old replicas, chosen at random.
        acked = set(rng.sample(before, required))
        held = acked & set(after)
        if partition in transfers and acked & set(transfers[partition].sources):
            held.add("joiner")
        assert ("joiner" in after) == (partition in transfers)
        assert len(held) >= required, (partition, before, after, acked)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(2, 6), factor=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_after_a_decommission_every_write_keeps_w_copies_among_its_new_replicas(
    size: int, factor: int, seed: int
) -> None:
    rng = random.Random(seed)
    members = [f"n{i}" for i in range(size)]
    leaver = members[rng.randrange(size)]
    old = Ring(members, factor, PARTITIONS)
    new = Ring([m for m in members if m != leaver], factor, PARTITIONS)
    gains: dict[int, set[str]] = {}
    for t in leave_transfers(leaver, PARTITIONS, old.partition_owners, new.partition_owners):
        assert t.sources == (leaver,)
        gains.setdefault(t.partition, set()).add(t.target)
    for partition in range(PARTITIONS):
        before, after = old.partition_owners(partition), new.partition_owners(partition)
        # A write acknowledged by W of the old replicas (W as the ring could give it).
        quorum = factor // 2 + 1
        acked = set(rng.sample(before, min(quorum, len(before))))
        held = acked & set(after)
        if leaver in acked:
            held |= gains.get(partition, set())
        assert len(held) >= min(quorum, len(after)), (partition, before, after, acked)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(2, 6), factor=st.integers(2, 4), seed=st.integers(0, 2**32 - 1))
def test_after_a_removal_every_quorum_write_keeps_w_copies_among_its_new_replicas(
    size: int, factor: int, seed: int
) -> None:
    rng = random.Random(seed)
    members = [f"n{i}" for i in range(size)]
    removed = members[rng.randrange(size)]
    old = Ring(members, factor, PARTITIONS)
    new = Ring([m for m in members if m != removed], factor, PARTITIONS)
    down = {removed}
    copies: dict[int, list[tuple[tuple[str, ...], str]]] = {}
    for t in removal_transfers(
        removed, PARTITIONS, old.partition_owners, new.partition_owners, down.__contains__
    ):
        assert removed not in t.sources and t.target not in t.sources
        copies.setdefault(t.partition, []).append((t.sources, t.target))
    for partition in range(PARTITIONS):
        before, after = old.partition_owners(partition), new.partition_owners(partition)
        # A QUORUM write (W >= 2) acknowledged by W of the old replicas.
        quorum = factor // 2 + 1
        acked = set(rng.sample(before, min(quorum, len(before))))
        held = acked & set(after)
        for sources, target in copies.get(partition, []):
            if acked & set(sources):
                held.add(target)
        assert len(held) >= min(quorum, len(after)), (partition, before, after, acked)


@settings(max_examples=80, deadline=None)
@given(
    size=st.integers(1, 6),
    factor=st.integers(1, 4),
    down_count=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_with_owners_down_a_join_copies_enough_or_waits(
    size: int, factor: int, down_count: int, seed: int
) -> None:
    rng = random.Random(seed)
    members = [f"n{i}" for i in range(size)]
    down = set(rng.sample(members, min(down_count, size)))
    old = Ring(members, factor, PARTITIONS)
    new = Ring([*members, "j"], factor, PARTITIONS)
    quorum = factor // 2 + 1
    for t in join_transfers(
        "j", PARTITIONS, old.partition_owners, new.partition_owners, down.__contains__, quorum
    ):
        before, after = old.partition_owners(t.partition), new.partition_owners(t.partition)
        displaced = [o for o in before if o not in after]
        assert not set(t.sources) & down
        if displaced and not set(displaced) & down:
            assert t.sources == tuple(displaced)  # one copy, from the owner it replaces
        if not t.sources:
            continue  # it waits for more owners to come back
        # Every QUORUM write keeps W copies among the new replicas once j has copied.
        for acked in itertools.combinations(before, min(quorum, len(before))):
            held = set(acked) & set(after)
            if set(acked) & set(t.sources):
                held.add("j")
            assert len(held) >= min(quorum, len(after)), (t, before, after, acked)


# ----- the whole protocol over simulated gossip -----------------------------------------------


def _drive(
    network: SimNetwork,
    announcements: dict[str, Announcement],
    streamed_after: int,
    stream_steps: dict[str, int],
) -> None:
    """One round of every running node's own decision, as the node's Rebalancer does."""
    for node_id, node in sorted(network.nodes.items()):
        if not node.running:
            continue
        core = node.core
        step = next_step(
            core.me,
            list(core.states()),
            core.unacknowledged(),
            announcements[node_id],
            stream_steps.get(node_id, 0) >= streamed_after,
            network.now,
        )
        if step.role is not None:
            core.set_role(step.role)
            stream_steps[node_id] = 0
        elif step.stream:
            stream_steps[node_id] = stream_steps.get(node_id, 0) + 1


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    joiners=st.integers(1, 3),
    drain_rounds=st.integers(0, 3),
    streamed_after=st.integers(1, 4),
    cut_rounds=st.integers(0, 6),
)
def test_joins_over_gossip_run_one_at_a_time_and_switch_only_once_everyone_saw_them(
    seed: int, joiners: int, drain_rounds: int, streamed_after: int, cut_rounds: int
) -> None:
    network = SimNetwork(seed, replication_factor=2)
    for index in range(1, 4):
        network.add(index, seeds=[1])
    for _ in range(6):
        network.round()
    for index in range(4, 4 + joiners):
        node = network.add(index, seeds=[1, 2])
        node.core.set_role(Role.WAITING)
    announcements = {n: Announcement(drain_rounds * 1.0) for n in network.nodes}
    stream_steps: dict[str, int] = {}
    # node-3 hears nothing for a while, but less than FAILURE_TIMEOUT: it is still a
    # live member, and a transition must wait for it.
    network.partition({"node-3"}, set(network.nodes) - {"node-3"})
    for rounds in range(400):
        if rounds == cut_rounds:
            network.heal()
        network.round()
        _drive(network, announcements, streamed_after, stream_steps)
        views = {n: {m.node_id: m for m in node.core.states()} for n, node in network.nodes.items()}
        # Each member's own word on its role.
        own = {n: node.core.me.role for n, node in network.nodes.items()}
        switched = [n for n, role in own.items() if role in SWITCHED]
        assert len(switched) <= 1, own
        for mover in switched:
            # It switched only after every live node saw it in transition.
            for viewer, view in views.items():
                if viewer != mover:
                    assert view[mover].role in ACTIVE or view[mover].role is Role.NORMAL, (
                        viewer,
                        mover,
                        view[mover].role,
                    )
        # While a member copies, no other has switched: reads never mix two changes.
        copying = [n for n in stream_steps if own[n] is Role.JOINING]
        assert not (copying and switched)
        if all(role is Role.NORMAL for role in own.values()):
            break
    else:
        pytest.fail(f"joins did not finish: {own}")
    for _ in range(20):  # the last NORMAL spreads by plain gossip
        network.round()
    for node in network.nodes.values():
        final = configurations(node.core.states())
        assert final.old == final.new == set(network.nodes)


# ----- the cold start -------------------------------------------------------------------------


def test_the_gate_waits_for_every_configured_peer_or_the_timeout_once_one_answered() -> None:
    assert gate_passed(0, True, 0.0, 0.0, 30.0)
    assert not gate_passed(2, True, 0.0, 29.0, 30.0)
    assert gate_passed(2, True, 0.0, 30.0, 30.0)
    assert not gate_passed(2, False, 0.0, 300.0, 30.0)  # nobody answered: no ring to found


def test_after_the_gate_a_node_founds_the_ring_only_if_no_member_serves_one() -> None:
    me = member("s", Role.STARTING)
    assert role_after_gate(me, [me, member("t", Role.STARTING)]) is Role.FOUNDING
    # Founders that got there first have served nothing yet: found with them.
    assert role_after_gate(me, [me, member("f", Role.FOUNDING)]) is Role.FOUNDING
    assert role_after_gate(me, [me, member("a")]) is Role.WAITING
    assert role_after_gate(me, [me, member("a", Role.NORMAL, Status.DEAD)]) is Role.WAITING
    assert role_after_gate(me, [me, member("j", Role.JOINING)]) is Role.WAITING
    assert role_after_gate(me, [me, member("a", Role.NORMAL, Status.LEFT)]) is Role.FOUNDING


def test_a_founder_serves_once_no_member_it_knows_is_at_its_gate() -> None:
    me = member("f", Role.FOUNDING)
    assert not founded(me, [me, member("s", Role.STARTING)], 0.0, 10.0, 30.0)
    assert founded(me, [me, member("s", Role.STARTING, Status.DEAD)], 0.0, 10.0, 30.0)
    assert founded(me, [me, member("s", Role.FOUNDING)], 0.0, 10.0, 30.0)
    assert founded(me, [me, member("s", Role.STARTING)], 0.0, 30.0, 30.0)
    # Founders are owners of the new ring from the start.
    assert configurations([me, member("g", Role.FOUNDING)]).read == {"f", "g"}


def _membership(node_id: str, role: Role) -> Membership:
    return Membership(member(node_id, role), "c", 3)


def test_a_node_at_its_gate_or_founding_is_not_ready() -> None:
    for role in (Role.STARTING, Role.FOUNDING):
        assert not Readiness(0.0, 30.0).check(_membership("a", role), 1.0)
    assert Readiness(0.0, 30.0).check(Membership(member("solo"), "c", 3), 1.0)


def test_a_restarted_node_waits_to_hear_a_peer_or_the_timeout() -> None:
    readiness = Readiness(started_at=0.0, join_timeout=30.0)
    membership = _membership("a", Role.NORMAL)
    membership.restore([member("b")], 0.0)
    assert not readiness.check(membership, 29.0)
    assert readiness.check(membership, 30.0)


def test_roles_travel_in_gossip_and_only_the_member_changes_its_own() -> None:
    a, b = _membership("a", Role.NORMAL), _membership("b", Role.WAITING)
    b.set_role(Role.JOINING)
    message = b.message(0.0)
    a.on_exchange(message, 0.0)
    seen = a.get("b")
    assert seen is not None and seen.role is Role.JOINING
    # A third party's claim of another role at the same incarnation is not believed.
    forged = MemberState(
        "b", seen.grpc_addr, seen.gossip_addr, Status.ALIVE, seen.incarnation, Role.JOINED
    )
    c = _membership("c", Role.NORMAL)
    a.on_exchange(
        type(message)("c", 3, "c", (c.me, forged)),
        1.0,
    )
    after = a.get("b")
    assert after is not None and after.role is Role.JOINING
    # b learns that a saw its new role from a's answer.
    assert "a" not in b.unacknowledged() or not b.acknowledged("a")
    b.on_reply(_probe_of(b, a), a.message(2.0), 2.0)
    assert b.acknowledged("a")


def test_every_member_but_those_gone_must_acknowledge_a_role_dead_ones_too() -> None:
    """Rule 5: a member that looks dead may only be cut off, coordinating with its view."""
    mover = _membership("m", Role.NORMAL)
    mover.restore(
        [
            member("alive"),
            member("suspect", status=Status.SUSPECT),
            member("dead", status=Status.DEAD),
            member("dead-waiting", Role.WAITING, Status.DEAD),
            member("left", status=Status.LEFT),
            member("departed", Role.DEPARTING, Status.DEAD),
        ],
        0.0,
    )
    mover.set_role(Role.LEAVING)
    waited = ["alive", "dead", "dead-waiting", "suspect"]
    assert mover.unacknowledged() == waited
    everyone = list(mover.states())
    step = next_step(mover.me, everyone, waited, Announcement(drain=0.0), False, 1.0)
    assert step.waiting == "acknowledgement from " + ", ".join(waited)


def _probe_of(sender: Membership, target: Membership):  # type: ignore[no-untyped-def]
    from a3redis.core.membership import Probe

    return Probe(target.me.gossip_addr, target.node_id, sender.message(0.0))


def test_every_role_round_trips_through_json() -> None:
    for role, status in itertools.product(Role, Status):
        state = MemberState("n", "h:1", "h:2", status, 7, role)
        assert MemberState.from_json(state.to_json()) == state
    legacy = member("n").to_json()
    del legacy["role"]
    assert MemberState.from_json(legacy).role is Role.NORMAL


def test_a_departing_member_that_is_dead_is_gone_even_if_its_left_was_lost() -> None:
    configs = configurations([member("a"), member("b"), member("l", Role.DEPARTING, Status.DEAD)])
    assert configs.old == configs.new == configs.read == {"a", "b"}
    assert not configs.changing
    # Dead while it still copies (leaving): it keeps its place until it resumes or is removed.
    leaving = configurations([member("a"), member("l", Role.LEAVING, Status.DEAD)])
    assert leaving.old == {"a", "l"} and leaving.changing


def test_a_departing_member_restarts_at_its_incarnation_and_every_other_role_above() -> None:
    """Rule 7: a view that saw the departing member dead keeps it so (dead outranks alive
    at one incarnation), so it never stands in a configuration again beside a transition
    begun since; a fresh incarnation would bring it back."""
    assert restart_state(Role.DEPARTING, 7, 100, False) == (Status.ALIVE, 7)
    for role in Role:
        if role is not Role.DEPARTING:
            assert restart_state(role, 7, 100, False) == (Status.ALIVE, 100)
    assert restart_state(Role.DEPARTING, None, 100, False) == (Status.ALIVE, 100)
    # A node whose decommission ended earlier, started again, stays out of every table.
    assert restart_state(Role.STARTING, 7, 100, True) == (Status.LEFT, 100)
    seen_dead = MemberState("l", "l:1", "l:2", Status.DEAD, 7, Role.DEPARTING)
    for incarnation, expected in ((7, Status.DEAD), (100, Status.ALIVE)):
        restarted = MemberState("l", "l:1", "l:2", Status.ALIVE, incarnation, Role.DEPARTING)
        kept = restarted if supersedes(restarted, seen_dead, own_word=True) else seen_dead
        assert kept.status is expected
        after = configurations([member("a", Role.LEAVING), member("b"), member("c"), kept])
        assert ("l" in after.read) is (expected is Status.ALIVE)


def _peer_message(node_id: str, *, ready: bool, role: Role = Role.NORMAL) -> GossipMessage:
    return GossipMessage("c", 3, node_id, (member(node_id, role),), ready=ready)


def test_a_restarted_node_is_ready_on_a_serving_peers_table_not_on_a_restarted_one() -> None:
    readiness = Readiness(started_at=0.0, join_timeout=30.0)
    membership = _membership("a", Role.NORMAL)
    membership.restore([member("b"), member("c")], 0.0)
    # b restarted too: its table may be as old as ours.
    membership.on_exchange(_peer_message("b", ready=False), 1.0)
    assert not readiness.check(membership, 1.0)
    # c serves: its table is the cluster's.
    membership.on_exchange(_peer_message("c", ready=True), 2.0)
    assert readiness.check(membership, 2.0) and membership.coordinating
    assert membership.message(2.0).ready


def test_members_restarted_together_are_ready_once_each_heard_every_live_one() -> None:
    readiness = Readiness(started_at=0.0, join_timeout=30.0)
    membership = _membership("a", Role.NORMAL)
    membership.restore([member("b"), member("c")], 0.0)
    membership.on_exchange(_peer_message("b", ready=False), 1.0)
    assert not readiness.check(membership, 1.0)
    membership.on_exchange(_peer_message("c", ready=False), 1.5)
    assert readiness.check(membership, 1.5)


def test_a_node_paused_longer_than_the_failure_timeout_waits_for_a_peers_table() -> None:
    readiness = Readiness(started_at=0.0, join_timeout=30.0)
    membership = Membership(member("a"), "c", 3)  # failure_timeout 10 s
    membership.restore([member("b")], 0.0)
    membership.on_exchange(_peer_message("b", ready=True), 0.5)
    rng = random.Random(0)
    membership.tick(1.0, rng)
    assert readiness.check(membership, 1.5)
    # SIGSTOP for a minute: the first request after it, before any tick, is refused...
    assert not readiness.check(membership, 61.0)
    membership.tick(61.2, rng)  # ...and so is every one until a peer's table arrives
    assert not readiness.check(membership, 61.5)
    membership.on_exchange(_peer_message("b", ready=True), 62.0)
    assert readiness.check(membership, 62.0)
    # Alone in its table, a node is never out of touch.
    solo = Membership(member("s"), "c", 1)
    solo.tick(0.0, rng)
    solo.tick(100.0, rng)
    assert not solo.out_of_touch(100.0)


def test_a_member_that_sees_every_other_member_down_takes_no_step() -> None:
    announcement = Announcement(drain=0.0)
    departing = MemberState("l", "l:1", "l:2", Status.ALIVE, 3, Role.DEPARTING)
    others = [member("a", status=Status.DEAD), member("b", status=Status.DEAD)]
    step = next_step(departing, [departing, *others], [], announcement, True, 5.0)
    assert not step.leave and "every other member seems down" in step.waiting
    alive = [member("a"), member("b", status=Status.DEAD)]
    assert next_step(departing, [departing, *alive], [], announcement, True, 5.0).leave


def test_the_ready_flag_travels_in_gossip_and_an_older_release_counts_as_ready() -> None:
    message = _peer_message("b", ready=False)
    assert GossipMessage.from_json(message.to_json()).ready is False
    legacy = message.to_json()
    del legacy["ready"]
    assert GossipMessage.from_json(legacy).ready is True
    legacy["ready"] = "yes"
    with pytest.raises(MessageError, match="ready: must be true or false"):
        GossipMessage.from_json(legacy)


def _view(me: MemberState, others: list[MemberState], **changes: object) -> TickView:
    fields: dict[str, object] = {
        "me": me,
        "members": [me, *others],
        "unacknowledged": [],
        "streamed": False,
        "founding_since": None,
        "now": 100.0,
        "join_timeout": 30.0,
        "peers_unheard": 0,
        "heard_any": True,
        "started_at": 90.0,
    }
    fields.update(changes)
    return TickView(**fields)  # type: ignore[arg-type]


def test_a_tick_at_the_gate_waits_for_its_peers_then_founds_or_queues() -> None:
    me = member("a", Role.STARTING)
    drain = Announcement(1.0)
    waiting = tick(_view(me, [], peers_unheard=1), drain)
    assert waiting.step.role is None and waiting.step.waiting == "configured peers to answer"
    founding = tick(_view(me, [member("b", Role.STARTING)]), drain)
    assert founding.step.role is Role.FOUNDING and founding.founding_since == 100.0
    assert founding.note.startswith("founding the ring")
    queued = tick(_view(me, [member("b")]), drain)
    assert queued.step.role is Role.WAITING and queued.founding_since is None


def test_a_founder_waits_for_starting_peers_and_a_restarted_one_starts_its_clock() -> None:
    me = member("a", Role.FOUNDING)
    drain = Announcement(1.0)
    restarted = tick(_view(me, [member("b", Role.STARTING)]), drain)
    assert restarted.step.waiting == "founders still at their gate"
    assert restarted.founding_since == 100.0
    still = tick(_view(me, [member("b", Role.STARTING)], founding_since=80.0), drain)
    assert still.step.role is None and still.founding_since == 80.0
    timed_out = tick(_view(me, [member("b", Role.STARTING)], founding_since=60.0), drain)
    assert timed_out.step.role is Role.NORMAL
    alone = tick(_view(me, [member("b", Role.FOUNDING)], founding_since=99.0), drain)
    assert alone.step.role is Role.NORMAL


def test_a_tick_of_a_normal_member_is_next_step() -> None:
    me = member("a")
    drain = Announcement(1.0)
    view = _view(me, [member("b")])
    assert tick(view, drain).step == next_step(me, view.members, [], drain, False, 100.0)
