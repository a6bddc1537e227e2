"""Keys that expire, under partitions and clock offsets, in the simulated cluster.

Hypothesis draws schedules of puts with and without TTLs, deletes and reads
through coordinators whose clocks are off by up to -5 s / +30 s, partitions
and heals. After the faults stop and the replicas converge, every node reads
every key at QUORUM. The history checker (tests/support/history.py) then
checks what it checks for every schedule (no acknowledged write lost, no
stale QUORUM read: an older value coming back after its newer write expired
is a stale read) and `check_expiry`: no value is read after it expired by
every clock, none reads as missing before any clock reached its expiry, and
a value comes back with the expiry its write was acknowledged with.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from a3redis.core import expiry
from a3redis.core.consistency import Consistency
from a3redis.core.record import Record
from tests.faults.simcluster import EPOCH_MS, SimCluster, SimConfig
from tests.faults.test_simulation import KEYS, Schedule, Step, apply_fault
from tests.support.history import (
    DELETE,
    GET,
    PUT,
    Anomaly,
    check,
    check_expiry,
    merge_histories,
    render,
    summarize,
)

QUORUM = Consistency.QUORUM
OFFSETS = (0, 0, -5000, 30000)

operations = st.tuples(
    st.just("op"),
    st.integers(0, 2),  # client
    st.sampled_from([PUT, PUT, DELETE, GET, GET]),
    st.integers(0, len(KEYS) - 1),
    st.integers(0, 4),  # coordinator
    st.sampled_from([QUORUM] * 4 + [Consistency.ONE]),
    st.sampled_from([0.0, 0.05, 0.5]),  # then wait this long
    st.sampled_from([0, 0, 300, 2_000, 8_000]),  # the put's TTL in ms (0: none)
)
waits = st.tuples(st.just("wait"), st.sampled_from([0.2, 1.5, 6.0, 20.0]))
faults = st.one_of(
    st.tuples(st.just("halves"), st.integers(0, 2**16), st.integers(1, 4)),
    st.tuples(st.just("isolate"), st.integers(0, 4)),
    st.tuples(st.just("heal")),
)


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    nodes = draw(st.integers(3, 5))
    kinds = draw(st.lists(st.sampled_from(["op"] * 6 + ["wait"] * 2 + ["fault"]), max_size=30))
    strategies = {"op": operations, "wait": waits, "fault": faults}
    steps: tuple[Step, ...] = tuple(draw(strategies[kind]) for kind in kinds)
    offsets = tuple(draw(st.lists(st.sampled_from(OFFSETS), min_size=nodes, max_size=nodes)))
    return Schedule(nodes, offsets, 3, draw(st.integers(0, 2**16)), steps)


def run(schedule: Schedule) -> tuple[SimCluster, list[Anomaly]]:
    cluster = SimCluster(
        SimConfig(nodes=schedule.nodes, offsets_ms=schedule.offsets),
        schedule.seed,
        schedule.clients,
    )
    cluster.start()
    cluster.loop.run_until(5.0)
    for step in schedule.steps:
        if step[0] == "op":
            _, client, kind, key, coordinator, level, pause, ttl_ms = step
            cluster.submit(
                client, kind, KEYS[key], coordinator, level, ttl_ms if kind == PUT else 0
            )
            cluster.loop.run_until(cluster.loop.now + pause)
        elif step[0] == "wait":
            cluster.loop.run_until(cluster.loop.now + step[1])
        else:
            apply_fault(cluster, step)
    cluster.settle(20.0)  # heal, restart, let gossip, hints and repair run
    for _ in range(6):
        if cluster.repair_pass() == 0:
            break
    # After the heal: every node reads every key (nothing expired may come back).
    for number in range(len(cluster.nodes)):
        for key in KEYS:
            cluster.submit(number, GET, key, number, QUORUM)
    cluster.loop.run_until(cluster.loop.now + 10.0)
    history = merge_histories([cluster.history])
    anomalies = check(history, cluster.final_state(KEYS), cluster.owners)
    low, high = min(schedule.offsets), max(schedule.offsets)
    anomalies += check_expiry(history, lambda t: EPOCH_MS + int(t * 1000), low, high)
    return cluster, anomalies


def explain(schedule: Schedule, cluster: SimCluster, anomalies: list[Anomaly]) -> str:
    return f"{render(anomalies)}\n{summarize(cluster.history)}\nschedule:\n{schedule.describe()}"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules())
def test_expiring_keys_are_never_read_after_expiry_and_never_come_back(
    schedule: Schedule,
) -> None:
    cluster, anomalies = run(schedule)
    assert not anomalies, explain(schedule, cluster, anomalies)


# A schedule written out: a TTL put through a coordinator 30 s fast while one replica is
# cut off, the key overwritten without a TTL before that, and reads from every clock.
BY_HAND = Schedule(
    3,
    (30000, 0, -5000),
    2,
    7,
    (
        ("op", 0, PUT, 0, 1, QUORUM, 0.05, 0),
        ("isolate", 2),
        ("op", 0, PUT, 0, 0, QUORUM, 0.05, 300),
        ("op", 1, GET, 0, 1, QUORUM, 0.5, 0),
        ("wait", 31.0),
        ("op", 1, GET, 0, 1, QUORUM, 0.05, 0),
        ("heal",),
        ("wait", 6.0),
        ("op", 1, GET, 0, 2, Consistency.ONE, 0.05, 0),
    ),
)


def test_a_written_out_schedule_reads_the_ttl_put_then_finds_it_expired_everywhere() -> None:
    cluster, anomalies = run(BY_HAND)
    assert not anomalies, explain(BY_HAND, cluster, anomalies)
    reads = [op for op in cluster.history if op.kind == GET and op.key == "k0"]
    assert reads[0].value == "c0-2" and reads[0].expires_at_ms > 0
    # Every read after 31 s (past the expiry by every clock) finds it missing, never c0-1.
    assert all(op.value is None for op in reads[1:]), [op.describe() for op in reads]


@pytest.mark.parametrize("broken", ["never-expires", "older-version-shows"])
def test_the_checker_catches_a_read_that_judges_expiry_wrongly(
    monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    """Break the one read decision the node and the simulator share (core.expiry.visible)."""

    def never_expires(record: Record | None, now_ms: int) -> Record | None:
        return record

    def older_version_shows(record: Record | None, now_ms: int) -> Record | None:
        # An expired record reads as a plain tombstone of no known write.
        shown = real(record, now_ms)
        if shown is not None and shown is not record:
            return Record(shown.key, None, shown.version._replace(logical=99))
        return shown

    real = expiry.visible
    wrong = never_expires if broken == "never-expires" else older_version_shows
    monkeypatch.setattr("tests.faults.simcluster.visible", wrong)
    _, anomalies = run(BY_HAND)
    kinds = {a.kind for a in anomalies}
    assert kinds & {"expired-read", "phantom"}, render(anomalies)
