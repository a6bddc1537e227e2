"""Fault schedules over a simulated cluster of the sans-IO cores, checked like real histories.

Hypothesis draws a cluster (3-7 nodes, N=3, clock offsets), clients, and a
schedule of client operations, waits, partitions (halves, bridge, majority
ring, one isolated node), heals, crashes, restarts, pauses and resumes;
tests/faults/simcluster.py runs it with fake time, then every fault stops,
the cluster settles, anti-entropy converges and the history checker
(tests/support/history.py) judges what the clients saw and what every
replica holds. A failing schedule shrinks to a minimal one.

`transition_schedules` adds spare nodes that join, decommissions and crashes
of the nodes in transition (tests/faults/test_sim_transitions.py); every
schedule is also checked against simcluster.TransitionInvariants and must
end with every join and decommission done.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from a3redis.core import coordinator
from a3redis.core.batcher import Call, CallQueue
from a3redis.core.consistency import Consistency
from a3redis.core.membership import Role
from a3redis.core.quorum import ReadQuorum, WriteQuorum
from tests.faults.simcluster import SimCluster, SimConfig
from tests.support.history import (
    DELETE,
    GET,
    OK,
    PUT,
    Anomaly,
    check,
    merge_histories,
    render,
    summarize,
)

QUORUM, ONE, ALL = Consistency.QUORUM, Consistency.ONE, Consistency.ALL
KEYS = [f"k{i}".encode() for i in range(5)]
Step = tuple[Any, ...]


@dataclass(frozen=True)
class Schedule:
    nodes: int
    offsets: tuple[int, ...]
    clients: int
    seed: int
    steps: tuple[Step, ...]
    # Nodes that may join (each "join" step starts the next one).
    spares: int = 0

    def describe(self) -> str:
        lines = [
            f"{self.nodes} nodes, {self.spares} spare(s), clock offsets {list(self.offsets)} ms, "
            f"{self.clients} client(s), seed {self.seed}:"
        ]
        lines += [f"  {step}" for step in self.steps]
        return "\n".join(lines)


# ----- strategies ---------------------------------------------------------------------------------

operations = st.tuples(
    st.just("op"),
    st.integers(0, 3),  # client
    st.sampled_from([PUT, PUT, PUT, DELETE, GET, GET, GET]),
    st.integers(0, len(KEYS) - 1),
    st.integers(0, 6),  # coordinator (modulo the node count)
    st.sampled_from([QUORUM] * 6 + [ONE, ALL]),
    st.sampled_from([0.0, 0.0, 0.01, 0.05, 0.3]),  # then wait this long
)
waits = st.tuples(st.just("wait"), st.sampled_from([0.002, 0.02, 0.2, 0.7, 1.5, 3.0, 6.0]))
node_index = st.integers(0, 6)
faults = st.one_of(
    st.tuples(st.just("halves"), st.integers(0, 2**16), st.integers(1, 6)),
    st.tuples(st.just("isolate"), node_index),
    st.tuples(st.just("bridge"), st.integers(0, 2**16)),
    st.tuples(st.just("majority-ring"), st.integers(0, 2**16)),
    st.tuples(st.just("heal")),
    st.tuples(st.just("crash"), node_index),
    st.tuples(st.just("restart"), node_index),
    st.tuples(st.just("pause"), node_index),
    st.tuples(st.just("resume"), node_index),
)


@st.composite
def steps(draw: st.DrawFn) -> Step:
    # Mostly operations, some waits, a fault now and then (one_of would weigh the
    # nine kinds of fault as much as the one kind of operation).
    kind = draw(st.sampled_from(["op"] * 7 + ["wait"] * 2 + ["fault"] * 2))
    strategy = {"op": operations, "wait": waits, "fault": faults}[kind]
    step: Step = draw(strategy)
    return step


@st.composite
def schedules(draw: st.DrawFn, max_steps: int = 60) -> Schedule:
    nodes = draw(st.integers(3, 7))
    count = draw(st.integers(1, max_steps))
    offsets = tuple(
        draw(st.lists(st.sampled_from([0, 0, 0, -5000, 30000]), min_size=nodes, max_size=nodes))
    )
    return Schedule(
        nodes,
        offsets,
        draw(st.integers(1, 4)),
        draw(st.integers(0, 2**16)),
        tuple(draw(st.lists(steps(), min_size=count, max_size=count))),
    )


# Joins and decommissions: a spare starts and joins; a normal member is decommissioned
# (when at least three normal members would remain); a node in transition (or waiting
# for its turn) crashes and restarts with its saved role after a while.
transitions = st.one_of(
    st.tuples(st.just("join")),
    st.tuples(st.just("decommission"), node_index),
    st.tuples(st.just("crash-mover"), node_index, st.sampled_from([0.3, 1.0, 2.5, 6.0])),
)


@st.composite
def transition_steps(draw: st.DrawFn) -> Step:
    kind = draw(st.sampled_from(["op"] * 6 + ["wait"] * 3 + ["fault"] * 2 + ["transition"] * 2))
    strategy = {
        "op": operations,
        "wait": waits,
        "fault": faults,
        "transition": transitions,
    }[kind]
    step: Step = draw(strategy)
    return step


@st.composite
def transition_schedules(draw: st.DrawFn, max_steps: int = 50) -> Schedule:
    """Schedules with spare nodes that join and members that are decommissioned."""
    nodes = draw(st.integers(3, 5))
    spares = draw(st.integers(1, 2))
    count = draw(st.integers(1, max_steps))
    offsets = tuple(
        draw(
            st.lists(
                st.sampled_from([0, 0, 0, -5000, 30000]),
                min_size=nodes + spares,
                max_size=nodes + spares,
            )
        )
    )
    return Schedule(
        nodes,
        offsets,
        draw(st.integers(1, 4)),
        draw(st.integers(0, 2**16)),
        tuple(draw(st.lists(transition_steps(), min_size=count, max_size=count))),
        spares,
    )


# ----- running a schedule -------------------------------------------------------------------------


def apply_fault(cluster: SimCluster, step: Step) -> None:
    n = len(cluster.nodes)
    kind = step[0]
    if kind == "halves":
        order = random.Random(step[1]).sample(range(n), n)
        split = 1 + step[2] % (n - 1)
        cluster.partition([order[:split], order[split:]])
    elif kind == "isolate":
        alone = step[1] % n
        cluster.partition([[alone], [i for i in range(n) if i != alone]])
    elif kind == "bridge":
        order = random.Random(step[1]).sample(range(n), n)
        half = (n - 1) // 2
        left, right = order[:half], order[half + 1 :]
        cluster.cut_pairs([(a, b) for a in left for b in right])
    elif kind == "majority-ring":
        order = random.Random(step[1]).sample(range(n), n)
        # Each node keeps the smallest circle of neighbours that is a majority with itself.
        reach = next(d for d in range(1, n) if 2 * d + 1 > n // 2)
        cluster.cut_pairs(
            [
                (order[i], order[j])
                for i in range(n)
                for j in range(i + 1, n)
                if min(j - i, n - (j - i)) > reach
            ]
        )
    elif kind == "heal":
        cluster.heal()
    else:
        node = cluster.nodes[step[1] % n]
        if kind == "crash":
            node.crash()
        elif kind == "restart" and not node.running and node.started and not node.exited:
            node.start()
        elif kind == "pause":
            node.pause()
        elif kind == "resume":
            node.resume()


# Faults that leave a running node out of touch (it looks dead to the others, and its view
# of the ring goes stale while it still coordinates): a gentle schedule keeps them away from
# ring changes; the all-faults property of test_sim_transitions.py does not.
OUT_OF_TOUCH = ("halves", "isolate", "bridge", "majority-ring", "pause")
TRANSITIONS = ("join", "decommission", "crash-mover")


def ring_changing(cluster: SimCluster) -> bool:
    """Whether a member joins or leaves, waits to, or a view still shows one that did."""
    moving = any(n.own_role() is not Role.NORMAL for n in cluster.members())
    return moving or cluster.in_transition()


def gently(cluster: SimCluster, step: Step) -> bool:
    """Whether `step` may happen in a schedule whose ring changes gently: no node is cut
    off or paused while the ring changes."""
    return step[0] not in OUT_OF_TOUCH or not ring_changing(cluster)


def apply_transition(cluster: SimCluster, step: Step, gentle: bool = False) -> None:
    """A join, decommission or crash of a node in transition. `gentle`: a join or a
    decommission starts once every node is in touch (cuts healed, processes resumed)."""
    kind = step[0]
    if gentle and kind in ("join", "decommission"):
        cluster.heal()
        for node in cluster.members():
            node.resume()
    if kind == "join":
        cluster.join()
    elif kind == "decommission":
        normal = [n for n in cluster.members() if n.own_role() is Role.NORMAL]
        if len(normal) > 3:  # QUORUM stays possible
            cluster.decommission(normal[step[1] % len(normal)])
    elif kind == "crash-mover":
        moving = [n for n in cluster.members() if n.running and n.own_role() is not Role.NORMAL]
        if moving:
            node = moving[step[1] % len(moving)]
            node.crash()

            def restart() -> None:
                if not node.running and not node.exited:
                    node.start()

            cluster.loop.after(step[2], restart)


def run(
    schedule: Schedule, *, gentle_transitions: bool = False, **config: Any
) -> tuple[SimCluster, list[Anomaly]]:
    """Run `schedule` and check it; with `gentle_transitions`, the ring changes gently
    (apply_transition, gently)."""
    cluster = SimCluster(
        SimConfig(nodes=schedule.nodes, offsets_ms=schedule.offsets, **config),
        schedule.seed,
        schedule.clients,
        schedule.spares,
    )
    cluster.start()
    cluster.loop.run_until(5.0)  # members find each other
    for step in schedule.steps:
        if step[0] == "op":
            _, client, kind, key, coordinator, level, pause = step
            cluster.submit(client, kind, KEYS[key], coordinator, level)
            cluster.loop.run_until(cluster.loop.now + pause)
        elif step[0] == "wait":
            cluster.loop.run_until(cluster.loop.now + step[1])
        elif step[0] in TRANSITIONS:
            apply_transition(cluster, step, gentle_transitions)
        elif not gentle_transitions or gently(cluster, step):
            apply_fault(cluster, step)
    return cluster, finish(cluster)


def finish(cluster: SimCluster) -> list[Anomaly]:
    """Stop every fault, let every join and decommission end, converge, and check."""
    anomalies: list[Anomaly] = []
    if not cluster.settle(20.0):
        waiting = [
            f"{n.node_id} {n.membership.role.value}: {n.rebalancer.waiting or '-'}"
            for n in cluster.members()
        ]
        anomalies.append(Anomaly("transition-stuck", "*", "; ".join(waiting)))
    anomalies += [
        Anomaly("transition-invariant", "*", violation)
        for violation in cluster.invariants.violations
    ]
    for _ in range(6):
        if cluster.repair_pass() == 0:
            break
    else:
        anomalies.append(Anomaly("repair-not-converged", "*", "replicas still differ"))
    history = merge_histories([cluster.history])
    anomalies += check(history, cluster.final_state(KEYS), cluster.owners)
    return anomalies


def explain(schedule: Schedule, cluster: SimCluster, anomalies: list[Anomaly]) -> str:
    return f"{render(anomalies)}\n{summarize(cluster.history)}\nschedule:\n{schedule.describe()}"


# ----- properties ---------------------------------------------------------------------------------


@settings(
    max_examples=800,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # No "explain" phase: its tracing makes shrinking many times slower on Python 3.11.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
@given(schedules())
def test_no_schedule_of_faults_loses_an_acknowledged_write_or_serves_a_stale_quorum_read(
    schedule: Schedule,
) -> None:
    cluster, anomalies = run(schedule)
    assert not anomalies, explain(schedule, cluster, anomalies)


@st.composite
def sequential_overwrites(draw: st.DrawFn) -> Schedule:
    """One client, overwriting through coordinators in turn, two of them with skewed clocks."""
    count = draw(st.integers(2, 40))
    ops: list[Step] = []
    for i in range(count):
        kind = draw(st.sampled_from([PUT, PUT, DELETE, GET]))
        wait = draw(st.sampled_from([0.05, 0.5, 2.0]))
        ops.append(("op", 0, kind, draw(st.integers(0, 1)), i % 3, QUORUM, wait))
    offsets = draw(st.permutations([0, -5000, 30000]))
    return Schedule(3, tuple(offsets), 1, draw(st.integers(0, 2**16)), tuple(ops))


@settings(max_examples=60, deadline=None)
@given(sequential_overwrites())
def test_sequential_overwrites_through_skewed_coordinators_are_never_lost(
    schedule: Schedule,
) -> None:
    cluster, anomalies = run(schedule)
    assert not anomalies, explain(schedule, cluster, anomalies)
    not_ok = [op for op in cluster.history if op.outcome != OK]
    assert not not_ok, (
        explain(schedule, cluster, []) + "\n" + "\n".join(op.describe() for op in not_ok)
    )


class _ReadQuorumAfterOneLess(ReadQuorum):
    """A read quorum that decides after R-1 answers (never fewer than one)."""

    def __init__(self, replicas: Sequence[str], required: int) -> None:
        super().__init__(replicas, max(1, required - 1))


class _WriteQuorumAfterOneLess(WriteQuorum):
    """A write quorum that acknowledges after W-1 replicas (never fewer than one)."""

    def __init__(self, replicas: Sequence[str], required: int) -> None:
        super().__init__(replicas, max(1, required - 1))


def _broken_plans(monkeypatch: pytest.MonkeyPatch, which: str) -> None:
    """Break the production coordinator core (a3redis.core.coordinator), which both the
    node and this simulation run: its read plan answers after R-1 replicas, or its
    write plan acknowledges after W-1."""
    if which == "read":
        monkeypatch.setattr(coordinator, "ReadQuorum", _ReadQuorumAfterOneLess)
    else:
        monkeypatch.setattr(coordinator, "WriteQuorum", _WriteQuorumAfterOneLess)


def _search_finds(broken: Callable[[Schedule], bool]) -> Schedule:
    # As the property above searches (generation only: shrinking is slow).
    return find(
        schedules(),
        broken,
        settings=settings(
            max_examples=600,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.generate],
        ),
    )


def _lost_or_stale(schedule: Schedule) -> bool:
    _, anomalies = run(schedule)
    return any(a.kind in ("stale-read", "resurrected-delete", "lost-write") for a in anomalies)


def _caught(monkeypatch: pytest.MonkeyPatch, which: str, by_hand: Schedule) -> list[str]:
    """With the production `which` plan broken: the anomalies `by_hand` (clean with the
    unbroken plan) shows, once the search has also found a losing schedule, which the
    unbroken plan runs clean."""
    assert not run(by_hand)[1]
    with monkeypatch.context() as patch:
        _broken_plans(patch, which)
        kinds = [a.kind for a in run(by_hand)[1]]
        found = _search_finds(_lost_or_stale)
        assert _lost_or_stale(found)
    assert not run(found)[1], f"the schedule found is fine with the production {which} plan"
    return kinds


def test_the_checker_catches_a_read_plan_that_answers_after_one_replica_less(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The simulation and the checker have teeth against the production read plan."""
    # By hand first: a replica cut off from the others answers a read alone.
    by_hand = Schedule(
        3,
        (0, 0, 0),
        2,
        1,
        (
            ("op", 0, PUT, 0, 0, QUORUM, 0.2),
            ("isolate", 2),
            ("op", 0, PUT, 0, 0, QUORUM, 0.2),
            ("op", 1, GET, 0, 2, QUORUM, 0.2),
        ),
    )
    assert _caught(monkeypatch, "read", by_hand) == ["stale-read"]


def test_the_checker_catches_a_write_plan_that_acknowledges_after_one_replica_less(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The simulation and the checker have teeth against the production write plan."""
    # By hand first: a write that only the isolated coordinator stored is acknowledged.
    by_hand = Schedule(
        3,
        (0, 0, 0),
        2,
        1,
        (
            ("op", 0, PUT, 0, 0, QUORUM, 0.2),
            ("isolate", 2),
            ("op", 0, PUT, 0, 2, QUORUM, 0.2),
            ("op", 1, GET, 0, 0, QUORUM, 2.0),  # answered before the cut heals
        ),
    )
    assert "stale-read" in _caught(monkeypatch, "write", by_hand)


_answered = CallQueue.answered


def _answers_from_the_call_start(
    queue: CallQueue[Any, Any, Any], call: Call[Any, Any], results: list[Any]
) -> Iterator[tuple[Any, list[Any]]]:
    """CallQueue.answered with a slip: each submission gets the answers of the call's
    first items, its own offset in the call forgotten."""
    entries = [(waiter, 0, count, size) for waiter, _, count, size in call.entries]
    return _answered(queue, Call(call.queue, call.items, entries), results)


def _answers_to_the_first_only(
    queue: CallQueue[Any, Any, Any], call: Call[Any, Any], results: list[Any]
) -> Iterator[tuple[Any, list[Any]]]:
    """CallQueue.answered with a slip: only the call's first submission is settled."""
    return itertools.islice(_answered(queue, call, results), 1)


def test_the_checker_catches_a_peer_batcher_that_fans_an_answer_out_wrongly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The simulation has teeth against the production peer batcher (a3redis.core.batcher),
    which both the node's peer links and this simulation's run: a call shared by several
    submissions must hand each its own answers, and settle every one."""
    # By hand: four clients read two keys at ALL at once through node-2, which holds
    # neither, so each replica gets the later reads in one shared call.
    by_hand = Schedule(
        4,
        (0,) * 4,
        4,
        1,
        (
            ("op", 0, PUT, 2, 1, QUORUM, 0.0),
            ("op", 1, PUT, 3, 1, QUORUM, 0.2),
            ("op", 0, GET, 2, 1, ALL, 0.0),
            ("op", 1, GET, 3, 1, ALL, 0.0),
            ("op", 2, GET, 2, 1, ALL, 0.0),
            ("op", 3, GET, 3, 1, ALL, 0.2),
        ),
    )
    cluster, anomalies = run(by_hand)
    assert not anomalies and all(op.outcome == OK for op in cluster.history)
    assert "node-2" not in {*cluster.owners("k2"), *cluster.owners("k3")}
    with monkeypatch.context() as patch:
        # Another key's record is refused, so the read counts the key as absent.
        patch.setattr(CallQueue, "answered", _answers_from_the_call_start)
        _, anomalies = run(by_hand)
        assert "stale-read" in [a.kind for a in anomalies]
    with monkeypatch.context() as patch:
        # The checker cannot blame an answer that never came; a fault-free cluster can.
        patch.setattr(CallQueue, "answered", _answers_to_the_first_only)
        cluster, _ = run(by_hand)
        assert [op.code for op in cluster.history if op.outcome != OK] == [
            "DEADLINE_EXCEEDED",
            "DEADLINE_EXCEEDED",
        ]


def test_a_restarted_node_acknowledges_only_writes_it_can_place() -> None:
    """A node restarted where it cannot reach its peers must not take writes for other keys.

    Found by this suite: a node that restarted with a ring of only the members it had
    heard of, at first itself, stored a ONE write for any key on itself alone and
    acknowledged it; once it learned the ring, the key's real replicas never got the
    write (anti-entropy compares only shared partitions) and it was lost. The saved
    member table fixes it.
    """
    schedule = Schedule(
        5,
        (0,) * 5,
        1,
        1,
        (
            ("crash", 4),
            ("wait", 6.0),  # node-5 is dead everywhere
            ("isolate", 4),
            ("restart", 4),
            ("wait", 0.1),
            *[("op", 0, PUT, key, 4, ONE, 0.05) for key in range(len(KEYS))],
            ("heal",),
        ),
    )
    cluster, anomalies = run(schedule)
    assert not anomalies, explain(schedule, cluster, anomalies)


def test_an_aborted_write_may_be_read_until_the_newer_version_arrives_but_never_wins() -> None:
    """Why ABORTED is "unknown", not "fail", in the checker (history.classify).

    node-1's clock runs 30 s ahead. Cut off, it takes a ONE write (version T+30 s).
    Healed, another client writes ALL through node-2 (version T): node-2 and node-3
    store it, node-1 holds the newer version, so the write is ABORTED. A QUORUM read
    through node-2 (which reads from node-3 before node-1) does not reach node-1 and
    answers with the aborted value; after repair the newer version is everywhere.
    """
    schedule = Schedule(
        3,
        (30000, 0, 0),
        3,
        1,
        (
            ("isolate", 0),
            ("op", 0, PUT, 0, 0, ONE, 0.1),
            ("heal",),
            ("op", 1, PUT, 0, 1, ALL, 0.1),
            ("isolate", 0),
            ("op", 2, GET, 0, 1, QUORUM, 0.1),
        ),
    )
    cluster, anomalies = run(schedule)
    assert not anomalies, explain(schedule, cluster, anomalies)
    newer, aborted, read = sorted(cluster.history, key=lambda op: op.invoked)
    assert aborted.code == "ABORTED" and read.value == aborted.value, explain(schedule, cluster, [])
    assert {n.observed(KEYS[0]) for n in cluster.nodes} == {
        cluster.nodes[0].observed(KEYS[0])
    } and cluster.nodes[0].observed(KEYS[0]).value == newer.value  # type: ignore[union-attr]
