"""The coordinator's plans, driven by hand as the node's shell and the simulator drive them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a3redis.core.consistency import Consistency
from a3redis.core.coordinator import (
    Coordinator,
    ReadPlan,
    WritePlan,
    held_here_alone,
    next_start,
)
from a3redis.core.errors import (
    ErrorKind,
    NotJoinedError,
    RequestError,
    UnavailableError,
    UnsatisfiableError,
    WriteRejectedError,
)
from a3redis.core.hlc import HybridLogicalClock, Version
from a3redis.core.record import ApplyOutcome, Record
from a3redis.core.validation import InvalidRequestError, Limits
from tests.support.topology import FakeTopology

WALL = 1_800_000_000_000
STORED, SUPERSEDED, REJECTED = ApplyOutcome.STORED, ApplyOutcome.SUPERSEDED, ApplyOutcome.REJECTED


def coordinator(topology: FakeTopology, node_id: str = "n1") -> Coordinator:
    return Coordinator(HybridLogicalClock(node_id), Limits(), topology)


def v(wall: int, node: str = "n9") -> Version:
    return Version(WALL + wall, 0, node)


# ----- placement ------------------------------------------------------------------------------


def test_a_node_that_has_not_joined_refuses_and_says_nothing_was_written() -> None:
    topology = FakeTopology(["n1", "n2", "n3"])
    topology.joining = True
    with pytest.raises(NotJoinedError, match="nothing was written") as refused:
        coordinator(topology).place([b"k"], Consistency.QUORUM)
    assert refused.value.kind is ErrorKind.UNAVAILABLE


def test_local_places_every_key_here_even_before_joining() -> None:
    topology = FakeTopology(["n1", "n2", "n3"])
    topology.joining = True
    assert coordinator(topology).place([b"a", b"b"], Consistency.LOCAL) == [(("n1",), 1)] * 2


def test_a_level_the_ring_can_never_meet_is_unsatisfiable() -> None:
    with pytest.raises(UnsatisfiableError, match="ALL needs 3 of 3 replicas"):
        coordinator(FakeTopology(["n1", "n2"])).place([b"k"], Consistency.ALL)


def test_a_level_the_live_replicas_cannot_meet_is_unavailable_and_names_the_down() -> None:
    topology = FakeTopology(["n1", "n2", "n3"], down=("n2", "n3"))
    with pytest.raises(UnavailableError, match=r"1 reachable \(n2, n3 down\)"):
        coordinator(topology).place([b"k"], Consistency.QUORUM)
    assert coordinator(topology).place([b"k"], Consistency.ONE)[0][1] == 1


# ----- writes ---------------------------------------------------------------------------------


def test_a_write_succeeds_once_w_replicas_acknowledged_and_not_before() -> None:
    plan = coordinator(FakeTopology(["n1", "n2", "n3"])).plan_write(
        [(b"k", b"v")], Consistency.QUORUM, None, WALL
    )
    assert plan.local == [0] and sorted(plan.peers) == ["n2", "n3"] and not plan.unreachable
    plan.acknowledged("n1", [0], [STORED])
    assert not plan.decided
    plan.acknowledged("n2", [0], [ApplyOutcome.DUPLICATE])
    assert plan.decided
    assert plan.result() == [plan.records[0].version]


def test_versions_are_stamped_after_the_client_version_and_only_once_placed() -> None:
    topology = FakeTopology(["n1", "n2", "n3"])
    node = coordinator(topology)
    seen = Version(WALL + 5_000, 7, "n2")
    plan = node.plan_write([(b"k", b"v")], Consistency.QUORUM, seen, WALL)
    assert plan.records[0].version > seen
    topology.joining = True
    before = node.clock.now(WALL)
    with pytest.raises(NotJoinedError):
        node.plan_write([(b"k", b"v")], Consistency.QUORUM, None, WALL)
    # The refused request stamped nothing: the next version follows `before` directly.
    assert node.clock.now(WALL) == Version(before.wall_ms, before.logical + 1, "n1")


def test_a_client_version_beyond_the_skew_bound_is_refused_not_observed() -> None:
    node = coordinator(FakeTopology(["n1", "n2", "n3"]))
    with pytest.raises(InvalidRequestError):
        node.plan_write([(b"k", b"v")], Consistency.QUORUM, Version(2**63, 0, "n2"), WALL)
    assert node.clock.now(WALL).wall_ms == WALL


def test_a_write_that_lost_last_write_wins_is_rejected_not_unavailable() -> None:
    plan = coordinator(FakeTopology(["n1", "n2", "n3"])).plan_write(
        [(b"k", b"v")], Consistency.QUORUM, None, WALL
    )
    plan.acknowledged("n1", [0], [STORED])
    plan.acknowledged("n2", [0], [SUPERSEDED])
    plan.acknowledged("n3", [0], [SUPERSEDED])
    assert plan.decided
    with pytest.raises(WriteRejectedError) as lost:
        plan.result()
    assert lost.value.kind is ErrorKind.CONFLICT


def test_a_refused_or_failed_replica_counts_against_the_write_and_its_records_are_hinted() -> None:
    plan = coordinator(FakeTopology(["n1", "n2", "n3"])).plan_write(
        [(b"k", b"v")], Consistency.ALL, None, WALL
    )
    plan.acknowledged("n1", [0], [STORED])
    assert plan.failed("n2", plan.peers["n2"]) == plan.records
    assert plan.decided  # ALL can no longer be met
    with pytest.raises(UnavailableError, match=r"got 1 \(failed: n2\)"):
        plan.result()
    other = coordinator(FakeTopology(["n1", "n2", "n3"])).plan_write(
        [(b"k", b"v")], Consistency.ALL, None, WALL
    )
    other.acknowledged("n2", [0], [REJECTED])
    assert other.decided


def test_replicas_known_down_fail_at_once_and_get_their_records_as_hints() -> None:
    topology = FakeTopology(["n1", "n2", "n3"], down=("n3",))
    plan = coordinator(topology).plan_write(
        [(b"a", b"1"), (b"b", b"2")], Consistency.QUORUM, None, WALL
    )
    assert plan.unreachable == {"n3": plan.records}
    assert "n3" not in plan.peers
    plan.acknowledged("n1", [0, 1], [STORED, STORED])
    assert not plan.decided
    plan.acknowledged("n2", [0, 1], [STORED, STORED])
    assert plan.decided and len(plan.result()) == 2


def test_a_batch_is_decided_only_when_every_key_is() -> None:
    topology = FakeTopology(["n1", "n2", "n3", "n4", "n5"])
    plan = coordinator(topology).plan_write(
        [(bytes([i]), b"v") for i in range(20)], Consistency.QUORUM, None, WALL
    )
    peers = sorted(plan.peers)
    plan.acknowledged(peers[0], plan.peers[peers[0]], [STORED] * len(plan.peers[peers[0]]))
    for replica in peers[1:]:
        assert not plan.decided
        plan.acknowledged(replica, plan.peers[replica], [STORED] * len(plan.peers[replica]))
    assert plan.decided or plan.local is not None
    if plan.local is not None:
        plan.acknowledged("n1", plan.local, [STORED] * len(plan.local))
    assert plan.decided and len(plan.result()) == 20


# ----- writes of several requests in one plan --------------------------------------------------

_OUTCOMES = st.sampled_from([STORED, ApplyOutcome.DUPLICATE, SUPERSEDED, REJECTED, None])


def _answer(plan: WritePlan, part: int) -> tuple[str, str]:
    """A decided part's answer as a client sees it: success, or the error's class and text."""
    try:
        plan.result(part)
    except RequestError as failure:
        return type(failure).__name__, str(failure)
    return "ok", ""


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 4), min_size=1, max_size=6),
    level=st.sampled_from([Consistency.ONE, Consistency.QUORUM, Consistency.ALL]),
    down=st.sets(st.sampled_from(["n2", "n3", "n4", "n5"]), max_size=2),
    events=st.lists(st.tuples(st.sampled_from(["n1", "n2", "n3", "n4", "n5"]), _OUTCOMES)),
)
def test_requests_sharing_a_plan_are_each_decided_as_if_planned_alone(
    sizes: list[int], level: Consistency, down: set[str], events: list[tuple[str, object]]
) -> None:
    """The shell gathers the writes several clients start together into one plan (rule
    3): each request must get the answer, at the moment, that a plan of its own would."""
    topology = FakeTopology(["n1", "n2", "n3", "n4", "n5"], down=tuple(sorted(down)))
    keys = [b"key-%d" % i for i in range(sum(sizes))]
    ends = [sum(sizes[: i + 1]) for i in range(len(sizes))]
    starts = [end - size for end, size in zip(ends, sizes, strict=True)]
    try:
        shared = coordinator(topology).plan_write(
            [(k, b"v") for k in keys], level, None, WALL, None, ends
        )
    except RequestError as refused:
        # Some request's keys cannot be placed at this level. The shell then plans each
        # request alone (Keyspace._plan_gathered), so only the requests at fault fail.
        failures = []
        for start, end in zip(starts, ends, strict=True):
            try:
                coordinator(topology).plan_write(
                    [(k, b"v") for k in keys[start:end]], level, None, WALL
                )
            except RequestError as alone_refused:
                failures.append(type(alone_refused))
        assert type(refused) in failures
        return
    if shared.only_here:  # nothing to count: the store's answer (stored_here) is each part's
        return
    alone = [
        coordinator(topology).plan_write([(k, b"v") for k in keys[start:end]], level, None, WALL)
        for start, end in zip(starts, ends, strict=True)
    ]
    shared_when: dict[int, tuple[int, tuple[str, str]]] = {}
    alone_when: dict[int, tuple[int, tuple[str, str]]] = {}

    def note(moment: int) -> None:
        for part in shared.take_decided():
            assert part not in shared_when, "a part was named decided twice"
            shared_when[part] = (moment, _answer(shared, part))
        for part, plan in enumerate(alone):
            if plan.decided and part not in alone_when:
                alone_when[part] = (moment, _answer(plan, 0))

    note(0)
    # Each event: one replica answers (or fails) for every record it holds in the plan.
    for moment, (replica, outcome) in enumerate(events, 1):
        indexes = shared.local if replica == "n1" else shared.peers.get(replica)
        if not indexes:
            continue
        if outcome is None:
            shared.failed(replica, indexes)
        else:
            shared.acknowledged(replica, indexes, [outcome] * len(indexes))  # type: ignore[list-item]
        for plan in alone:
            own = plan.local if replica == "n1" else plan.peers.get(replica)
            if own:
                if outcome is None:
                    plan.failed(replica, own)
                else:
                    plan.acknowledged(replica, own, [outcome] * len(own))  # type: ignore[list-item]
        note(moment)
    assert shared_when == alone_when
    undecided = [part for part, plan in enumerate(alone) if not plan.decided]
    assert shared.take_undecided() == undecided
    assert shared.take_undecided() == [] and shared.take_decided() == []


def test_a_shared_plan_answers_each_request_its_own_versions_when_only_here_holds_them() -> None:
    node = coordinator(FakeTopology(["n1"], factor=1))
    plan = node.plan_write(
        [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], Consistency.QUORUM, None, WALL, None, [1, 1, 3]
    )
    assert plan.only_here and plan.parts == 3
    versions = [record.version for record in plan.records]
    assert plan.stored_here([True, False, True], 0) == versions[:1]
    assert plan.stored_here([True, False, True], 1) == []
    with pytest.raises(WriteRejectedError):
        plan.stored_here([True, False, True], 2)


@pytest.mark.parametrize("ends", [[], [1, 2], [2, 1, 3], [3, 4]])
def test_parts_must_split_the_records_in_order(ends: list[int]) -> None:
    node = coordinator(FakeTopology(["n1", "n2", "n3"]))
    with pytest.raises(ValueError, match="do not split"):
        node.plan_write(
            [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], Consistency.ONE, None, WALL, None, ends
        )


# ----- reads ----------------------------------------------------------------------------------


def _read_answer(plan: ReadPlan, part: int) -> tuple[str, object]:
    """A decided part's answer as a client sees it: the records, or the error's class and
    text."""
    try:
        return "ok", plan.result(WALL, part)
    except RequestError as failure:
        return type(failure).__name__, str(failure)


class _Reader:
    """Drives one read plan as the shell does: each replica asked has its keys out until
    it answers or fails; a failure asks the spares the plan names."""

    def __init__(self, plan: ReadPlan) -> None:
        self.plan = plan
        self.out: dict[str, list[int]] = {r: list(i) for r, i in plan.asks.items()}

    def event(self, replica: str, holds: bool | None) -> None:
        indexes = self.out.pop(replica, [])
        if not indexes:
            return
        if holds is None:
            for spare, more in self.plan.failed(replica, indexes).items():
                self.out.setdefault(spare, []).extend(more)
            return
        keys = self.plan.keys
        answers = [
            Record(keys[i], replica.encode(), Version(WALL - int(replica[1:]), 0, replica))
            if holds
            else None
            for i in indexes
        ]
        self.plan.answered(replica, indexes, answers, WALL)


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 4), min_size=1, max_size=6),
    level=st.sampled_from([Consistency.ONE, Consistency.QUORUM, Consistency.ALL]),
    down=st.sets(st.sampled_from(["n2", "n3", "n4", "n5"]), max_size=2),
    events=st.lists(
        st.tuples(
            st.sampled_from(["n1", "n2", "n3", "n4", "n5"]), st.sampled_from([True, False, None])
        )
    ),
)
def test_requests_sharing_a_read_plan_are_each_decided_as_if_planned_alone(
    sizes: list[int], level: Consistency, down: set[str], events: list[tuple[str, bool | None]]
) -> None:
    """The shell gathers the reads several clients start together into one plan (rule 4),
    each placed first: each request must get the answer, at the moment, that a plan of
    its own would, and a request that cannot be placed is refused alone."""
    topology = FakeTopology(["n1", "n2", "n3", "n4", "n5"], down=tuple(sorted(down)))
    node = coordinator(topology)
    requests: list[list[bytes]] = []
    keys: list[bytes] = []
    placements: list[tuple[tuple[str, ...], int]] = []
    ends: list[int] = []
    for number, size in enumerate(sizes):
        own = [b"key-%d-%d" % (number, i) for i in range(size)]
        try:
            placed = node.place(own, level)
        except RequestError as refused:
            with pytest.raises(type(refused)):
                coordinator(topology).plan_read(own, level)
            continue
        if held_here_alone(placed, node.node_id):  # answered at once, from this node's copy
            assert coordinator(topology).plan_read(own, level).only_here
            continue
        requests.append(own)
        keys += own
        placements += placed
        ends.append(len(keys))
    if not requests:
        return
    shared = _Reader(node.plan_reads(keys, placements, ends))
    alone = [_Reader(coordinator(topology).plan_read(own, level)) for own in requests]
    assert not shared.plan.only_here
    shared_when: dict[int, tuple[int, tuple[str, object]]] = {}
    alone_when: dict[int, tuple[int, tuple[str, object]]] = {}

    def note(moment: int) -> None:
        for part in shared.plan.take_decided():
            assert part not in shared_when, "a part was named decided twice"
            shared_when[part] = (moment, _read_answer(shared.plan, part))
        for part, reader in enumerate(alone):
            if reader.plan.decided and part not in alone_when:
                alone_when[part] = (moment, _read_answer(reader.plan, 0))

    note(0)
    for moment, (replica, holds) in enumerate(events, 1):
        for reader in (shared, *alone):
            reader.event(replica, holds)
        note(moment)
    assert shared_when == alone_when
    undecided = [part for part, reader in enumerate(alone) if not reader.plan.decided]
    assert shared.plan.take_undecided() == undecided
    assert shared.plan.take_undecided() == [] and shared.plan.take_decided() == []


def test_a_read_asks_r_replicas_our_own_copy_first_and_keeps_the_rest_as_spares() -> None:
    plan = coordinator(FakeTopology(["n1", "n2", "n3"])).plan_read([b"k"], Consistency.QUORUM)
    assert next(iter(plan.asks)) == "n1" and len(plan.asks) == 2
    assert not plan.only_here


def test_each_node_reads_from_the_peers_after_it_by_name_first_wrapping_around() -> None:
    topology = FakeTopology(["n1", "n2", "n3", "n4"], factor=4)
    replicas = ("n4", "n1", "n3", "n2")
    assert coordinator(topology, "n1").read_order(replicas) == ["n1", "n2", "n3", "n4"]
    assert coordinator(topology, "n3").read_order(replicas) == ["n3", "n4", "n1", "n2"]
    assert coordinator(topology, "n4").read_order(replicas) == ["n4", "n1", "n2", "n3"]
    # Not a replica itself: the same order, without it.
    assert coordinator(topology, "n2").read_order(("n3", "n1", "n4")) == ["n3", "n4", "n1"]
    # So with three nodes, each peer is the first choice of one coordinator.
    firsts = {
        coordinator(FakeTopology(["n1", "n2", "n3"]), me).read_order(("n1", "n2", "n3"))[1]
        for me in ("n1", "n2", "n3")
    }
    assert firsts == {"n1", "n2", "n3"}


def test_a_lagging_peer_is_read_last_and_a_down_one_not_at_all() -> None:
    topology = FakeTopology(["n1", "n2", "n3", "n4"], factor=4)
    topology.lagging.add("n2")
    assert coordinator(topology).read_order(("n1", "n2", "n3", "n4")) == ["n1", "n3", "n4", "n2"]
    topology.down.add("n3")
    plan = coordinator(topology).plan_read([b"k"], Consistency.QUORUM)  # R = 3 of 4
    assert list(plan.asks) == ["n1", "n4", "n2"]
    topology.lagging.clear()
    plan = coordinator(topology).plan_read([b"k"], Consistency.QUORUM)
    assert list(plan.asks) == ["n1", "n2", "n4"]


def test_a_read_answers_the_newest_of_the_first_r_answers_and_the_clock_passes_it() -> None:
    node = coordinator(FakeTopology(["n1", "n2", "n3"]))
    plan = node.plan_read([b"k"], Consistency.QUORUM)
    old, new = Record(b"k", b"old", v(1)), Record(b"k", b"new", v(2))
    (peer,) = (r for r in plan.asks if r != "n1")
    assert plan.answered("n1", [0], [old], WALL) == []
    assert not plan.decided
    plan.answered(peer, [0], [new], WALL)
    assert plan.decided
    assert plan.result(WALL) == [new]
    assert node.clock.now(WALL) > new.version


def test_a_failed_replica_is_replaced_by_a_spare_and_a_spare_gone_down_is_skipped() -> None:
    topology = FakeTopology(["n1", "n2", "n3", "n4"], factor=4)
    plan = coordinator(topology).plan_read([b"k"], Consistency.QUORUM)  # R = 3 of 4
    asked = [r for r in plan.asks if r != "n1"]
    (spare,) = {"n2", "n3", "n4"} - set(asked)
    topology.down.add(spare)
    assert plan.failed(asked[0], [0]) == {}
    assert plan.decided  # 2 of 4 failed: R = 3 can no longer be met
    with pytest.raises(UnavailableError, match="needed 3 replica answers"):
        plan.result(WALL)

    topology.down.clear()
    plan = coordinator(topology).plan_read([b"k"], Consistency.QUORUM)
    asked = [r for r in plan.asks if r != "n1"]
    (spare,) = {"n2", "n3", "n4"} - set(asked)
    assert plan.failed(asked[0], [0]) == {spare: [0]}


def test_a_peer_answer_for_another_key_counts_as_not_there() -> None:
    plan = coordinator(FakeTopology(["n1", "n2", "n3"])).plan_read([b"k"], Consistency.ALL)
    forged = Record(b"other", b"x", v(9))
    plan.answered("n1", [0], [None], WALL)
    refused = plan.answered("n2", [0], [forged], WALL)
    assert [error.reason for error in refused] == ["wrong_key"]
    plan.answered("n3", [0], [None], WALL)
    assert plan.result(WALL) == [None]


def test_read_repair_is_planned_once_every_asked_replica_answered_and_only_once() -> None:
    plan = coordinator(FakeTopology(["n1", "n2", "n3"])).plan_read([b"k"], Consistency.QUORUM)
    new = Record(b"k", b"new", v(2))
    (peer,) = (r for r in plan.asks if r != "n1")
    plan.answered(peer, [0], [new], WALL)
    assert plan.take_repairs() is None
    plan.answered("n1", [0], [None], WALL)
    assert plan.take_repairs() == {"n1": [new]}
    assert plan.take_repairs() is None


def test_a_write_only_this_node_holds_is_its_store_answer_with_no_quorum_counted() -> None:
    node = coordinator(FakeTopology(["n1"], factor=1))
    plan = node.plan_write([(b"a", b"1"), (b"b", b"2")], Consistency.QUORUM, None, WALL)
    assert plan.only_here and not plan.peers and plan.local is None and not plan.quorums
    assert plan.stored_here([True, True]) == [r.version for r in plan.records]
    with pytest.raises(WriteRejectedError, match="newer version"):
        plan.stored_here([True, False])
    local = coordinator(FakeTopology(["n1", "n2", "n3"])).plan_write(
        [(b"k", b"v")], Consistency.LOCAL, None, WALL
    )
    assert local.only_here


def test_a_one_node_ring_reads_only_here() -> None:
    plan = coordinator(FakeTopology(["n1"], factor=1)).plan_read([b"k"], Consistency.ALL)
    assert plan.only_here and not plan.asks


# ----- scans ----------------------------------------------------------------------------------


def test_scan_merge_keeps_the_newest_per_key_hides_deleted_and_stops_at_the_cutoff() -> None:
    node = coordinator(FakeTopology(["n1", "n2", "n3"]))
    mine = [Record(b"a", b"1", v(1)), Record(b"b", b"1", v(1)), Record(b"d", b"1", v(1))]
    theirs = [Record(b"a", b"2", v(2)), Record(b"b", None, v(2)), Record(b"c", b"1", v(1))]
    live, following, refused = node.merge_scan(
        [("n1", mine, None), ("n2", theirs, b"c")], limit=10, wall=WALL
    )
    assert [(r.key, r.value) for r in live] == [(b"a", b"2"), (b"c", b"1")]
    assert following == next_start(b"c") and not refused


def test_scan_merge_refuses_a_peer_record_beyond_the_skew_bound() -> None:
    node = coordinator(FakeTopology(["n1", "n2", "n3"]))
    ahead = Record(b"a", b"x", Version(WALL + 10**9, 0, "n2"))
    live, following, refused = node.merge_scan([("n2", [ahead], None)], limit=10, wall=WALL)
    assert live == [] and following is None and [m for m, _ in refused] == ["n2"]


def test_scan_members_needs_enough_live_owners_of_every_partition() -> None:
    topology = FakeTopology(["n1", "n2", "n3"], down=("n3",))
    node = coordinator(topology)
    assert node.scan_members(Consistency.QUORUM) == ["n1", "n2"]
    with pytest.raises(UnavailableError, match="live replicas of every partition"):
        node.scan_members(Consistency.ALL)
