"""The history checker, on hand-made histories that it must and must not flag."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a3redis.core.hlc import Version
from tests.support.history import (
    DELETE,
    FAIL,
    GET,
    OK,
    PUT,
    UNKNOWN,
    Anomaly,
    Observed,
    Op,
    check,
    check_repair_reports,
    classify,
    dump_history,
    load_history,
    merge_histories,
    render,
)

NODES = ("node-1", "node-2", "node-3")


def v(wall: int, node: str = "node-1") -> Version:
    return Version(wall, 0, node)


def put(
    key: str,
    value: str,
    start: float,
    end: float,
    version: Version | None,
    outcome: str = OK,
    code: str = "OK",
    level: str = "QUORUM",
) -> Op:
    return Op("c", PUT, key, value, start, end, outcome, version, level, code)


def delete(
    key: str,
    start: float,
    end: float,
    version: Version | None,
    outcome: str = OK,
    code: str = "OK",
) -> Op:
    return Op("c", DELETE, key, None, start, end, outcome, version, "QUORUM", code)


def get(
    key: str,
    start: float,
    end: float,
    value: str | None,
    version: Version | None,
    level: str = "QUORUM",
) -> Op:
    return Op("r", GET, key, value, start, end, OK, version, level)


def everywhere(**records: Observed | None) -> dict[str, dict[str, Observed | None]]:
    return {node: dict(records) for node in NODES}


def owners(key: str) -> Sequence[str]:
    return NODES


def kinds(history: list[Op], final: dict[str, dict[str, Observed | None]]) -> list[str]:
    return sorted(a.kind for a in check(merge_histories([history]), final, owners))


# ----- classification ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "outcome"),
    [
        ("OK", "", OK),
        ("INVALID_ARGUMENT", "key too long", FAIL),
        ("FAILED_PRECONDITION", "ALL needs 3", FAIL),
        ("ABORTED", "lost last-write-wins", UNKNOWN),
        ("UNAVAILABLE", "QUORUM needs 2 replicas, 1 reachable (x down); nothing was written", FAIL),
        ("UNAVAILABLE", "needed 2 replica acknowledgements, got 1; may have been applied", UNKNOWN),
        ("UNAVAILABLE", "127.0.0.2:50051: timed out connecting", UNKNOWN),
        ("DEADLINE_EXCEEDED", "no answer", UNKNOWN),
        ("INTERNAL", "boom", UNKNOWN),
    ],
)
def test_only_definite_errors_count_as_not_applied(code: str, message: str, outcome: str) -> None:
    assert classify(code, message) == outcome


# ----- histories that are fine ---------------------------------------------------------------


def test_sequential_writes_and_reads_are_fine() -> None:
    history = [
        put("k", "a", 0, 1, v(10)),
        get("k", 2, 3, "a", v(10)),
        put("k", "b", 4, 5, v(20)),
        get("k", 6, 7, "b", v(20)),
    ]
    assert kinds(history, everywhere(k=Observed("b", v(20)))) == []


def test_a_write_superseded_by_a_later_unknown_write_is_not_lost() -> None:
    history = [
        put("k", "a", 0, 1, v(10)),
        put("k", "b", 2, 5, None, UNKNOWN, "DEADLINE_EXCEEDED"),
        get("k", 6, 7, "b", v(30, "node-2")),
    ]
    assert kinds(history, everywhere(k=Observed("b", v(30, "node-2")))) == []


def test_concurrent_writes_and_a_read_overlapping_a_write_are_fine() -> None:
    history = [
        put("k", "a", 0, 1, v(10)),
        put("k", "b", 2, 6, v(20, "node-2")),
        put("k", "c", 3, 5, v(15, "node-3")),  # acknowledged, then lost to the concurrent "b"
        get("k", 4, 4.5, "a", v(10)),  # began before either completed
        get("k", 7, 8, "b", v(20, "node-2")),
    ]
    assert kinds(history, everywhere(k=Observed("b", v(20, "node-2")))) == []


def test_deletes_seen_as_tombstones_and_failed_or_unknown_writes_unseen_are_fine() -> None:
    history = [
        put("k", "a", 0, 1, v(10)),
        delete("k", 2, 3, v(20)),
        get("k", 4, 5, None, v(20)),
        put("k", "x", 6, 7, None, FAIL, "ABORTED"),
        put("k", "y", 8, 9, None, FAIL, "UNAVAILABLE"),
        put("k", "z", 10, 11, None, UNKNOWN, "DEADLINE_EXCEEDED"),
        get("k", 12, 13, None, v(20)),
    ]
    assert kinds(history, everywhere(k=Observed(None, v(20)))) == []


def test_a_stale_read_at_one_or_of_a_one_write_is_not_flagged() -> None:
    history = [
        put("k", "a", 0, 1, v(10)),
        put("k", "b", 2, 3, v(20), level="ONE"),
        get("k", 4, 5, "a", v(10)),  # QUORUM read, but "b" was written at ONE
        put("k", "c", 6, 7, v(30)),
        get("k", 8, 9, "a", v(10), level="ONE"),
    ]
    assert kinds(history, everywhere(k=Observed("c", v(30)))) == []


def test_an_unknown_delete_may_explain_a_tombstone() -> None:
    history = [
        put("k", "a", 0, 1, v(10)),
        delete("k", 2, 4, None, UNKNOWN, "DEADLINE_EXCEEDED"),
        get("k", 5, 6, None, v(15)),
    ]
    assert kinds(history, everywhere(k=Observed(None, v(15)))) == []


def test_keys_never_written_may_be_absent() -> None:
    history = [get("k", 0, 1, None, None), put("j", "a", 0, 1, None, UNKNOWN, "DEADLINE_EXCEEDED")]
    assert kinds(history, everywhere()) == []


# ----- histories that must be flagged --------------------------------------------------------


def test_a_lost_acknowledged_write_is_flagged_with_its_minimal_history() -> None:
    history = [
        put("k", "a", 0, 1, v(10)),
        put("k", "b", 2, 3, v(20)),
        put("other", "o", 0, 1, v(5)),
    ]
    final = everywhere(k=Observed("a", v(10)), other=Observed("o", v(5)))
    anomalies = check(merge_histories([history]), final, owners)
    assert [a.kind for a in anomalies] == ["lost-write"]
    text = render(anomalies)
    assert "'b'" in text and "20.0@node-1" in text and "final node-2: 'a' 10.0@node-1" in text
    assert "'o'" not in text  # only the key that shows the anomaly


def test_an_acknowledged_write_missing_everywhere_is_lost() -> None:
    assert kinds([put("k", "a", 0, 1, v(10))], everywhere()) == ["lost-write"]


def test_a_stale_quorum_read_is_flagged() -> None:
    history = [
        put("k", "a", 0, 1, v(10)),
        put("k", "b", 2, 3, v(20)),
        get("k", 4, 5, "a", v(10)),
    ]
    assert kinds(history, everywhere(k=Observed("b", v(20)))) == ["stale-read"]


def test_a_read_of_nothing_after_an_acknowledged_write_is_flagged() -> None:
    history = [put("k", "a", 0, 1, v(10)), get("k", 2, 3, None, None)]
    assert kinds(history, everywhere(k=Observed("a", v(10)))) == ["stale-read"]


def test_a_deleted_key_that_comes_back_is_flagged_in_reads_and_in_the_end() -> None:
    history = [
        put("k", "a", 0, 1, v(10)),
        delete("k", 2, 3, v(20)),
        get("k", 4, 5, "a", v(10)),
    ]
    assert kinds(history, everywhere(k=Observed("a", v(10)))) == [
        "resurrected-delete",
        "resurrected-delete",
    ]


def test_a_value_from_a_refused_write_is_flagged() -> None:
    history = [
        put("k", "a", 0, 1, v(10)),
        put("k", "x", 2, 3, None, FAIL, "UNAVAILABLE"),
        get("k", 4, 5, "x", v(5)),
    ]
    final = everywhere(k=Observed("x", v(30)))
    assert kinds(history, final) == ["failed-write-visible", "failed-write-visible"]


def test_an_aborted_write_may_be_read_but_must_not_win() -> None:
    history = [
        put("k", "a", 0, 1, v(30)),
        put("k", "x", 2, 3, None, UNKNOWN, "ABORTED"),
        get("k", 4, 5, "x", v(20), level="ONE"),  # a replica that stored it before it lost
    ]
    assert kinds(history, everywhere(k=Observed("a", v(30)))) == []
    assert kinds(history, everywhere(k=Observed("x", v(20)))) == [
        "aborted-write-won",
        "lost-write",
    ]


def test_a_tombstone_is_blamed_on_an_aborted_delete_only_when_nothing_else_explains_it() -> None:
    aborted = dataclasses.replace(
        delete("k", 2, 3, None, UNKNOWN, "ABORTED"), coordinator="127.0.0.4:50051"
    )
    timed_out = delete("k", 2, 4, None, UNKNOWN, "DEADLINE_EXCEEDED")
    final = everywhere(k=Observed(None, v(20, "node-4")))
    assert kinds([put("k", "a", 0, 1, v(10)), aborted], final) == ["aborted-write-won"]
    # Either delete could have written it: the innocent explanation is taken.
    assert kinds([put("k", "a", 0, 1, v(10)), aborted, timed_out], final) == []
    # A version names its coordinator: a delete sent to another node did not make it.
    node_of = {"127.0.0.4:50051": "node-3", "127.0.0.5:50051": "node-4"}
    history = merge_histories([[put("k", "a", 0, 1, v(10)), aborted]])
    assert sorted(a.kind for a in check(history, final, owners, node_of)) == ["phantom"]


def test_values_nobody_wrote_and_wrong_versions_are_flagged() -> None:
    history = [put("k", "a", 0, 1, v(10)), get("k", 2, 3, "zzz", v(50))]
    assert kinds(history, everywhere(k=Observed("a", v(10)))) == ["phantom"]
    history = [put("k", "a", 0, 1, v(10)), get("k", 2, 3, "a", v(11))]
    assert kinds(history, everywhere(k=Observed("a", v(10)))) == ["version-mismatch"]
    assert kinds([put("k", "a", 0, 1, v(10))], everywhere(k=Observed(None, v(20)))) == ["phantom"]


def test_an_expired_put_ends_as_a_tombstone_of_its_version_and_only_a_put_with_a_ttl() -> None:
    """Local reads after the test answer an expired put as missing, with its version."""
    expiring = replace(put("k", "a", 0, 1, v(10)), ttl_ms=500, expires_at_ms=510)
    assert kinds([expiring], everywhere(k=Observed(None, v(10)))) == []
    assert kinds([put("k", "a", 0, 1, v(10))], everywhere(k=Observed(None, v(10)))) == [
        "phantom",
        "version-mismatch",
    ]


def test_divergent_replicas_are_flagged() -> None:
    final = everywhere(k=Observed("a", v(10)))
    final["node-3"]["k"] = None
    assert kinds([put("k", "a", 0, 1, v(10))], final) == ["divergent-replicas"]


def test_repair_reports_must_show_nothing_left_to_do() -> None:
    clean = {"peer": "node-2", "leaves": 0, "keys_pulled": 0, "keys_pushed": 0, "skipped": ""}
    assert check_repair_reports({"node-1": [clean]}) == []
    dirty = dict(clean, leaves=2, keys_pushed=1)
    skipped = dict(clean, skipped="unreachable")
    found = check_repair_reports({"node-1": [dirty], "node-2": [skipped]})
    assert [a.kind for a in found] == ["repair-not-converged", "repair-skipped"]


def test_histories_round_trip_through_json(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    history = [put("k", "a", 0, 1, v(10)), delete("k", 1, 2, None, UNKNOWN, "DEADLINE_EXCEEDED")]
    dump_history(tmp_path / "h.json", history)
    assert load_history(tmp_path / "h.json") == history


# ----- a property: a correct register never trips the checker; losing a write always does ----


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([PUT, DELETE, GET]), st.sampled_from(["a", "b"])), max_size=30
    ),
    st.data(),
)
def test_a_linearizable_register_passes_and_a_dropped_last_write_fails(
    steps: list[tuple[str, str]], data: st.DataObject
) -> None:
    state: dict[str, Observed] = {}
    history: list[Op] = []
    for n, (kind, key) in enumerate(steps):
        t = float(n)
        version = v(100 + n, NODES[n % 3])
        if kind == PUT:
            history.append(put(key, f"v{n}", t, t + 0.5, version))
            state[key] = Observed(f"v{n}", version)
        elif kind == DELETE:
            history.append(delete(key, t, t + 0.5, version))
            state[key] = Observed(None, version)
        else:
            current = state.get(key)
            history.append(
                get(
                    key,
                    t,
                    t + 0.5,
                    None if current is None else current.value,
                    None if current is None else current.version,
                )
            )
    final = {node: dict(state) for node in NODES}
    assert check(merge_histories([history]), final, owners) == []
    writes = [op for op in history if op.kind in (PUT, DELETE)]
    if writes:
        last = writes[-1]
        earlier = [op for op in writes if op.key == last.key and op is not last]
        dropped: dict[str, Observed] = dict(state)
        if earlier:
            previous = earlier[-1]
            assert previous.version is not None
            dropped[last.key] = Observed(previous.value, previous.version)
        else:
            del dropped[last.key]
        found: list[Anomaly] = check(
            merge_histories([history]), {node: dict(dropped) for node in NODES}, owners
        )
        assert {a.kind for a in found} & {"lost-write", "resurrected-delete"}
