"""Membership cores in a simulated cluster: convergence, failure detection, partitions."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from a3redis.core.membership import Status
from tests.sim.membership_net import SimNetwork

ALIVE = Status.ALIVE


def _start_in_order(net: SimNetwork, order: list[int], all_seeds: bool) -> None:
    for index in order:
        seeds = [i for i in order if i != index] if all_seeds else [order[0]]
        if index == order[0] and not all_seeds:
            seeds = []
        net.add(index, seeds)
        net.round()


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(3, 50),
    seed=st.integers(0, 2**32),
    all_seeds=st.booleans(),
    data=st.data(),
)
def test_any_start_order_converges_to_all_alive_in_log_rounds(
    size: int, seed: int, all_seeds: bool, data: st.DataObject
) -> None:
    order = data.draw(st.permutations(list(range(1, size + 1))))
    net = SimNetwork(seed)
    _start_in_order(net, order, all_seeds)
    expected = {f"node-{i}": ALIVE for i in range(1, size + 1)}
    budget = 2 * math.ceil(math.log2(size)) + 4
    for _ in range(budget):
        if net.all_see(expected):
            break
        net.round()
    assert net.all_see(expected), f"not converged after {budget} rounds"


@settings(max_examples=30, deadline=None)
@given(size=st.integers(3, 50), seed=st.integers(0, 2**32), victim=st.integers(1, 50))
def test_a_crash_is_seen_as_dead_by_every_survivor_within_timeout_plus_two_rounds(
    size: int, seed: int, victim: int
) -> None:
    victim_id = f"node-{(victim - 1) % size + 1}"
    net = SimNetwork(seed, failure_timeout=10.0)
    _start_in_order(net, list(range(1, size + 1)), all_seeds=True)
    for _ in range(20):
        net.round()
    net.nodes[victim_id].running = False
    crashed_at = net.now
    survivors = net.running_ids()
    while net.now <= crashed_at + 10.0 + 2:
        net.round()
        if all(net.view(s)[victim_id] is Status.DEAD for s in survivors):
            break
    late = [s for s in survivors if net.view(s)[victim_id] is not Status.DEAD]
    assert not late, f"{late} still see {victim_id} alive {net.now - crashed_at}s after the crash"
    # Nobody else was declared dead along the way.
    for observer in survivors:
        assert all(
            status is ALIVE
            for node_id, status in net.view(observer).items()
            if node_id != victim_id
        )


@settings(max_examples=20, deadline=None)
@given(size=st.integers(3, 12), seed=st.integers(0, 2**32), data=st.data())
def test_partition_marks_the_other_side_dead_and_heal_restores_alive(
    size: int, seed: int, data: st.DataObject
) -> None:
    ids = [f"node-{i}" for i in range(1, size + 1)]
    cut = data.draw(st.integers(1, size - 1))
    left, right = set(ids[:cut]), set(ids[cut:])
    net = SimNetwork(seed)
    _start_in_order(net, list(range(1, size + 1)), all_seeds=True)
    for _ in range(10):
        net.round()

    net.partition(left, right)
    for _ in range(15):
        net.round()
    for observer in left:
        assert all(net.view(observer)[other] is Status.DEAD for other in right)
        assert all(net.view(observer)[same] is ALIVE for same in left)
    for observer in right:
        assert all(net.view(observer)[other] is Status.DEAD for other in left)

    net.heal()
    expected = dict.fromkeys(ids, ALIVE)
    for _ in range(30):
        if net.all_see(expected):
            break
        net.round()
    assert net.all_see(expected), {o: net.view(o) for o in ids}


def test_a_restarted_node_is_alive_again_at_once_with_a_higher_incarnation() -> None:
    net = SimNetwork(seed=7)
    _start_in_order(net, [1, 2, 3], all_seeds=True)
    for _ in range(5):
        net.round()
    before = net.nodes["node-2"].core.me.incarnation
    net.nodes["node-2"].running = False
    for _ in range(15):
        net.round()
    assert net.view("node-1")["node-2"] is Status.DEAD
    net.restart("node-2", seeds=[1, 3])
    for _ in range(3):
        net.round()
    assert net.all_see(dict.fromkeys(["node-1", "node-2", "node-3"], ALIVE))
    assert net.nodes["node-1"].core.get("node-2").incarnation > before  # type: ignore[union-attr]


def test_leave_is_seen_at_once_and_sticks() -> None:
    net = SimNetwork(seed=3)
    _start_in_order(net, [1, 2, 3], all_seeds=True)
    for _ in range(5):
        net.round()
    net.leave("node-3")
    assert net.view("node-1")["node-3"] is Status.LEFT
    assert net.view("node-2")["node-3"] is Status.LEFT
    for _ in range(20):
        net.round()
    assert net.view("node-1")["node-3"] is Status.LEFT


def test_a_peer_with_another_replication_factor_is_refused_and_never_merged() -> None:
    net = SimNetwork(seed=5)
    net.add(1, [2, 3])
    net.add(2, [1, 3])
    net.add(3, [1, 2], rf=5)
    for _ in range(10):
        net.round()
    assert set(net.view("node-1")) == {"node-1", "node-2"}
    assert set(net.view("node-3")) == {"node-3"}
    assert "node-3" in net.nodes["node-1"].core.incompatible
    assert "REPLICATION_FACTOR 5" in net.nodes["node-1"].core.incompatible["node-3"].reason
