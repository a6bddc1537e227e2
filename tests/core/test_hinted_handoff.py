"""Hinted handoff's rules (core.hinted_handoff), without files, clocks or calls."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from a3redis.core.hinted_handoff import Deliver, Drop, Hints
from a3redis.core.membership import (
    GossipMessage,
    Membership,
    MembershipSettings,
    MemberState,
    Status,
)
from a3redis.core.record import Record, supersedes
from tests.core.strategies import MACHINE_SETTINGS, records
from tests.support.records import rec

WINDOW_MS = 60_000
NOW = 10_000_000


@dataclass
class Members:
    """The member table as the rules read it: statuses, and ids membership forgot."""

    statuses: dict[str, Status] = field(default_factory=dict)
    forgotten: set[str] = field(default_factory=set)

    def get(self, node_id: str) -> MemberState | None:
        status = self.statuses.get(node_id)
        return None if status is None else MemberState(node_id, "g:1", "h:1", status, 1)

    def is_forgotten(self, node_id: str) -> bool:
        return node_id in self.forgotten


def alive(*node_ids: str) -> Members:
    return Members({node_id: Status.ALIVE for node_id in node_ids})


# ----- holding ------------------------------------------------------------------------------------


def test_only_the_newest_record_per_key_is_held_and_only_fresh_ones_are_returned() -> None:
    hints = Hints(WINDOW_MS)
    assert hints.hold("node-2", [rec(b"a", b"v", NOW - 5), rec(b"b", b"v", NOW - 4)]) == [
        rec(b"a", b"v", NOW - 5),
        rec(b"b", b"v", NOW - 4),
    ]
    # A newer a is fresh; an older b and the very same a again are not.
    fresh = hints.hold("node-2", [rec(b"a", None, NOW - 1), rec(b"b", b"v", NOW - 9)])
    assert fresh == [rec(b"a", None, NOW - 1)]
    assert hints.hold("node-2", [rec(b"a", None, NOW - 1)]) == []
    assert hints.held("node-2") == {b"a": rec(b"a", None, NOW - 1), b"b": rec(b"b", b"v", NOW - 4)}


def test_a_batch_holding_one_key_twice_keeps_its_newest_record_whatever_the_order() -> None:
    hints = Hints(WINDOW_MS)
    newer, older = rec(b"a", b"v", NOW - 1), rec(b"a", b"v", NOW - 2)
    assert hints.hold("node-2", [newer, older]) == [newer]
    assert hints.held("node-2") == {b"a": newer}


def test_hints_are_held_per_replica() -> None:
    hints = Hints(WINDOW_MS)
    hints.hold("node-2", [rec(b"a", b"v", NOW - 1)])
    assert hints.hold("node-3", [rec(b"a", b"v", NOW - 5)]) == [rec(b"a", b"v", NOW - 5)]
    assert hints.pending() == {"node-2": 1, "node-3": 1}


def test_restored_files_keep_the_newest_record_per_key() -> None:
    hints = Hints(WINDOW_MS)
    hints.restore(
        "node-2", [rec(b"a", b"v", NOW - 1), rec(b"a", b"v", NOW - 3), rec(b"b", b"v", NOW - 2)]
    )
    assert hints.held("node-2") == {b"a": rec(b"a", b"v", NOW - 1), b"b": rec(b"b", b"v", NOW - 2)}


# ----- the window ---------------------------------------------------------------------------------


def test_hints_older_than_the_window_are_dropped_and_counted() -> None:
    hints = Hints(WINDOW_MS)
    hints.hold(
        "node-2", [rec(b"old", b"v", NOW - WINDOW_MS - 1), rec(b"edge", b"v", NOW - WINDOW_MS)]
    )
    hints.hold("node-3", [rec(b"old", b"v", NOW - 2 * WINDOW_MS), rec(b"new", b"v", NOW)])
    assert hints.expire(NOW) == 2
    assert hints.held("node-2") == {b"edge": rec(b"edge", b"v", NOW - WINDOW_MS)}
    assert hints.held("node-3") == {b"new": rec(b"new", b"v", NOW)}
    assert hints.expire(NOW) == 0


def test_a_zero_window_drops_every_hint_from_the_past() -> None:
    hints = Hints(0)
    hints.hold("node-2", [rec(b"a", b"v", NOW - 1)])
    assert hints.expire(NOW) == 1
    assert hints.pending() == {}


# ----- what a round does --------------------------------------------------------------------------


def test_an_alive_replica_gets_a_snapshot_of_its_hints_in_bounded_batches() -> None:
    hints = Hints(WINDOW_MS, batch=3)
    held = [rec(b"k%d" % i, b"v", NOW) for i in range(7)]
    hints.hold("node-2", held)
    (step,) = hints.due(alive("node-2"))
    assert isinstance(step, Deliver) and step.replica == "node-2"
    assert [len(batch) for batch in step.batches] == [3, 3, 1]
    assert [r for batch in step.batches for r in batch] == held
    # Planning a delivery removes nothing: only an answer does.
    assert hints.pending() == {"node-2": 7}


def test_hints_wait_while_their_replica_is_suspect_dead_or_not_known_yet() -> None:
    hints = Hints(WINDOW_MS)
    for replica in ("node-2", "node-3", "node-4"):
        hints.hold(replica, [rec(b"a", b"v", NOW)])
    members = Members({"node-2": Status.SUSPECT, "node-3": Status.DEAD})
    assert hints.due(members) == []
    assert hints.pending() == {"node-2": 1, "node-3": 1, "node-4": 1}


def test_hints_go_with_a_replica_that_left_or_was_forgotten_and_are_never_delivered() -> None:
    hints = Hints(WINDOW_MS)
    hints.hold("node-2", [rec(b"a", b"v", NOW), rec(b"b", b"v", NOW)])
    hints.hold("ghost", [rec(b"a", b"v", NOW)])
    members = Members({"node-2": Status.LEFT}, forgotten={"ghost"})
    assert hints.due(members) == [
        Drop("node-2", 2, "it left the ring"),
        Drop("ghost", 1, "it was forgotten (DEAD_MEMBER_REAP)"),
    ]
    assert hints.pending() == {}
    assert hints.due(alive("node-2", "ghost")) == []


def test_a_replica_with_no_hints_left_is_forgotten_so_its_file_goes() -> None:
    hints = Hints(WINDOW_MS)
    hints.hold("node-2", [rec(b"a", b"v", NOW - 2 * WINDOW_MS)])
    hints.expire(NOW)
    assert hints.due(Members({"node-2": Status.DEAD})) == [Drop("node-2", 0, "")]
    assert hints.due(Members({"node-2": Status.DEAD})) == []


def test_the_real_member_table_drives_the_rounds() -> None:
    membership = Membership(
        MemberState("node-1", "a:1", "a:2", Status.ALIVE, 1), "c", 3, MembershipSettings()
    )
    membership.on_exchange(
        GossipMessage("c", 3, "node-2", (MemberState("node-2", "b:1", "b:2", Status.ALIVE, 1),)),
        0.0,
    )
    hints = Hints(WINDOW_MS)
    hints.hold("node-2", [rec(b"a", b"v", NOW)])
    assert hints.due(membership) == [Deliver("node-2", [[rec(b"a", b"v", NOW)]])]


# ----- what a delivery acknowledges ---------------------------------------------------------------


def test_a_delivered_batch_removes_only_the_hints_not_superseded_meanwhile() -> None:
    hints = Hints(WINDOW_MS)
    hints.hold("node-2", [rec(b"a", b"v", NOW - 2), rec(b"b", b"v", NOW - 2)])
    (step,) = hints.due(alive("node-2"))
    assert isinstance(step, Deliver)
    # A newer write for a arrives while the batch is in flight.
    hints.hold("node-2", [rec(b"a", b"v", NOW - 1)])
    assert hints.delivered("node-2", step.batches[0]) == 1
    assert hints.held("node-2") == {b"a": rec(b"a", b"v", NOW - 1)}


def test_an_equal_record_held_again_is_not_taken_for_the_one_sent() -> None:
    hints = Hints(WINDOW_MS)
    hints.hold("node-2", [rec(b"a", b"v", NOW - 2)])
    (step,) = hints.due(alive("node-2"))
    assert isinstance(step, Deliver)
    hints.forget("node-2")
    hints.hold("node-2", [rec(b"a", b"v", NOW - 2)])
    # Not the very record sent: the replica may not have had this one.
    assert hints.delivered("node-2", step.batches[0]) == 0
    assert hints.pending() == {"node-2": 1}


def test_a_delivery_for_a_replica_dropped_meanwhile_changes_nothing() -> None:
    hints = Hints(WINDOW_MS)
    hints.hold("node-2", [rec(b"a", b"v", NOW)])
    (step,) = hints.due(alive("node-2"))
    assert isinstance(step, Deliver)
    assert hints.forget("node-2") == 1
    assert hints.delivered("node-2", step.batches[0]) == 0
    assert hints.pending() == {}


# ----- files --------------------------------------------------------------------------------------


def test_a_file_is_rewritten_after_a_delivery_removed_hints_from_it() -> None:
    hints = Hints(WINDOW_MS)
    hints.hold("node-2", [rec(b"a", b"v", NOW), rec(b"b", b"v", NOW)])
    hints.appended("node-2", 2)
    assert hints.stale_files() == []
    (step,) = hints.due(alive("node-2"))
    assert isinstance(step, Deliver)
    hints.delivered("node-2", step.batches[0][:1])
    assert hints.stale_files() == ["node-2"]
    assert hints.live("node-2") == [rec(b"b", b"v", NOW)]
    hints.rewritten("node-2", 1)
    assert hints.stale_files() == []


def test_a_file_is_rewritten_once_it_holds_far_more_than_its_live_hints() -> None:
    hints = Hints(WINDOW_MS, rewrite_slack=10)
    hints.restore("node-2", [rec(b"a", b"v", NOW - 20 + i) for i in range(12)])
    # One live hint: 12 records in the file is the most before a rewrite.
    assert hints.stale_files() == []
    hints.hold("node-2", [rec(b"a", b"v", NOW)])
    hints.appended("node-2", 1)
    assert hints.stale_files() == ["node-2"]
    hints.rewritten("node-2", 1)
    assert hints.stale_files() == []


def test_forgetting_a_replica_forgets_its_file() -> None:
    hints = Hints(WINDOW_MS, rewrite_slack=0)
    hints.restore(
        "node-2", [rec(b"a", b"v", NOW - 2), rec(b"a", b"v", NOW - 1), rec(b"a", b"v", NOW)]
    )
    assert hints.stale_files() == ["node-2"]
    assert hints.forget("node-2") == 1
    hints.hold("node-2", [rec(b"b", b"v", NOW)])
    hints.appended("node-2", 1)
    assert hints.stale_files() == []


# ----- any interleaving ---------------------------------------------------------------------------

REPLICAS = ("node-2", "node-3")


class HoldAndDeliver(RuleBasedStateMachine):
    """Holds, deliveries answered in any order or lost, against the newest record ever held."""

    def __init__(self) -> None:
        super().__init__()
        self.hints = Hints(window_ms=2**62, batch=2)
        self.newest: dict[tuple[str, bytes], Record] = {}
        self.acknowledged: dict[str, list[Record]] = {replica: [] for replica in REPLICAS}
        self.in_flight: list[tuple[str, list[Record]]] = []

    @rule(replica=st.sampled_from(REPLICAS), batch=st.lists(records, max_size=5))
    def hold(self, replica: str, batch: list[Record]) -> None:
        running = self.hints.held(replica)
        fresh = self.hints.hold(replica, batch)
        # Fresh: each record newer than everything held or held before it in the batch.
        expected = []
        for record in batch:
            if supersedes(record, running.get(record.key)):
                running[record.key] = record
                expected.append(record)
            slot = (replica, record.key)
            if supersedes(record, self.newest.get(slot)):
                self.newest[slot] = record
        assert fresh == expected

    @rule()
    def plan_a_round(self) -> None:
        for step in self.hints.due(alive(*REPLICAS)):
            if isinstance(step, Drop):
                assert step.count == 0  # every replica is alive: only emptied ones go
                continue
            assert all(1 <= len(batch) <= 2 for batch in step.batches)
            self.in_flight += [(step.replica, batch) for batch in step.batches]

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        replica, batch = self.in_flight.pop(data.draw(st.integers(0, len(self.in_flight) - 1)))
        self.hints.delivered(replica, batch)
        self.acknowledged[replica] += batch

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def lose(self, data: st.DataObject) -> None:
        self.in_flight.pop(data.draw(st.integers(0, len(self.in_flight) - 1)))

    @invariant()
    def the_newest_record_per_key_is_held_or_was_delivered(self) -> None:
        # (Once the newest was delivered, an older write may be held again: harmless.)
        for (replica, key), newest in self.newest.items():
            held = self.hints.held(replica).get(key)
            assert held == newest or newest in self.acknowledged[replica]

    @invariant()
    def nothing_but_hints_held(self) -> None:
        for replica in REPLICAS:
            for key, record in self.hints.held(replica).items():
                assert record.key == key and (replica, key) in self.newest


TestHoldAndDeliver = HoldAndDeliver.TestCase
TestHoldAndDeliver.settings = settings(max_examples=300, stateful_step_count=30, **MACHINE_SETTINGS)


@given(st.lists(records, max_size=30), st.integers(1, 5))
def test_a_round_delivers_every_hint_exactly_once_in_batches(
    held: list[Record], batch: int
) -> None:
    hints = Hints(window_ms=2**62, batch=batch)
    hints.hold("node-2", held)
    steps = hints.due(alive("node-2"))
    if not held:
        assert steps == [Drop("node-2", 0, "")]
        return
    (step,) = steps
    assert isinstance(step, Deliver)
    assert all(1 <= len(b) <= batch for b in step.batches)
    sent = [r for b in step.batches for r in b]
    assert sent == list(hints.held("node-2").values())
    for b in step.batches:
        hints.delivered("node-2", b)
    assert hints.pending() == {}
