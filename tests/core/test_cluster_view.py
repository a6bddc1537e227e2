"""The renderers of `cluster status` and `cluster ring`: pure functions of gathered data."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from a3redis.core.ring import Ring
from a3redis.tools.cluster_status import (
    ClusterStatus,
    ForgottenMember,
    MemberStatus,
    RingInfo,
    key_owners_json,
    ring_shares,
    runs,
    status_text,
    transition_progress,
)

RING = RingInfo("node-1", ("node-1", "node-2", "node-3"), 2, 64)


@given(st.sets(st.integers(0, 200)))
def test_runs_cover_exactly_the_numbers(numbers: set[int]) -> None:
    found = runs(sorted(numbers))
    assert {n for first, last in found for n in range(first, last + 1)} == numbers
    # Maximal runs: neighbours are never adjacent.
    assert all(b[0] > a[1] + 1 for a, b in itertools.pairwise(found))


def test_ring_shares_count_the_ring_the_nodes_use() -> None:
    ring = Ring(RING.members, 2, 64)
    shares = ring_shares(ring)
    assert [s.node_id for s in shares] == ["node-1", "node-2", "node-3"]
    for s in shares:
        assert s.partitions == len(ring.partitions_of(s.node_id))
        assert s.share == ring.shares()[s.node_id]
    assert sum(s.primary for s in shares) == 64


def test_key_owners_are_the_preference_list() -> None:
    members = {f"node-{n}": {"addr": f"h:{n}", "status": "alive"} for n in (1, 2, 3)}
    for key in (b"a", b"b", b"user:1"):
        body = key_owners_json(RING, key, members, key.decode())
        expected = Ring(RING.members, 2, 64).preference_list(key)
        assert [o["node_id"] for o in body["owners"]] == list(expected)
        assert [o["grpc_addr"] for o in body["owners"]] == [f"h:{n[-1]}" for n in expected]


def test_status_text_shows_unreachable_members_and_repair_age() -> None:
    rows = [
        MemberStatus("node-1", "h:1", "h:11", "alive", 7, True, 10, 0.5, 3, 1000.0, True),
        MemberStatus("node-2", "h:2", "h:12", "alive", 8, False, error="refused"),
        MemberStatus("node-3", None, "h:13", "incompatible", None, False),
    ]
    text = status_text(ClusterStatus("node-1", RING, rows), now=1090.0)
    lines = text.splitlines()
    assert lines[1].split() == [
        "node-1",
        "h:1",
        "h:11",
        "alive",
        "normal",
        "7",
        "10",
        "50.0%",
        "90s",
        "ago",
    ]
    assert lines[2].split()[3:5] == ["alive", "(unreachable)"]
    assert lines[3].split()[3] == "incompatible"  # another cluster: not asked, not unreachable
    assert "note: node-2: refused" in text


def test_status_text_announces_when_a_dead_member_will_be_and_was_forgotten() -> None:
    ring = RingInfo(
        "node-1",
        ("node-1", "node-2"),
        2,
        64,
        (ForgottenMember("node-9", "dead", 1000.0 - 3 * 3600),),
        72 * 3600.0,
    )
    rows = [
        MemberStatus("node-1", "h:1", "h:11", "alive", 7, True, 10, 0.5, 3, 1000.0, True),
        MemberStatus(
            "node-2", "h:2", "h:12", "dead", 8, False, since=1000.0 - 7200, forget_in=64800.0
        ),
    ]
    text = status_text(ClusterStatus("node-1", ring, rows), now=1000.0)
    assert (
        "note: node-2 has been dead for 2.0h; it will be forgotten (taken out of the ring, "
        "its partitions moved to the others) in 18.0h (DEAD_MEMBER_REAP)"
    ) in text
    assert "note: node-9 was forgotten 3.0h ago after being dead for DEAD_MEMBER_REAP" in text


def test_status_text_shows_roles_and_the_progress_of_a_join_and_a_removal() -> None:
    joining = transition_progress(
        {
            "role": "joining",
            "partitions": 3050,
            "partitions_done": 1180,
            "keys_streamed": 30267,
            "waiting_for": None,
            "removing": None,
        }
    )
    assert joining == "joining: partitions 1180/3050, 30267 keys copied"
    removing = transition_progress(
        {
            "role": "normal",
            "removing": {
                "node_id": "node-5",
                "partitions": 40,
                "partitions_done": 8,
                "keys_copied": 900,
            },
        }
    )
    assert removing == "removing node-5: partitions 8/40, 900 keys copied"
    assert transition_progress({"role": "normal", "removing": None}) is None
    members = [
        MemberStatus("node-1", "a:1", "a:2", "alive", 3, True, progress=removing),
        MemberStatus("node-4", "d:1", "d:2", "alive", 1, True, role="joining", progress=joining),
    ]
    text = status_text(ClusterStatus("node-1", RING, members), now=1000.0)
    assert text.splitlines()[0].split()[4] == "ROLE"
    assert text.splitlines()[2].split()[4] == "joining"
    assert f"note: node-4 is {joining}" in text
    assert f"note: node-1 is {removing}" in text
