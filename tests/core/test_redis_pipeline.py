"""Pipelines planned as batched steps, and their replies (a3redis.core.redis_pipeline)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a3redis.core import redis_commands as rc
from a3redis.core.consistency import Consistency
from a3redis.core.errors import RequestError, TimedOutError, UnavailableError
from a3redis.core.hlc import Version
from a3redis.core.record import Record
from a3redis.core.redis_pipeline import (
    Plan,
    ReadStep,
    ServerStep,
    StepResult,
    WriteStep,
    object_info,
    plan,
    plan_in_batches,
    protocol_runs,
    substring,
)
from a3redis.core.redis_session import ServerSettings, Session
from a3redis.core.resp_values import OK, PONG, ErrorReply, Reply, Status
from a3redis.core.validation import Limits

WALL_MS = 1_700_000_000_000
VERSION = Version(WALL_MS, 0, "node-1")


def new_session(**settings: object) -> Session:
    return Session(ServerSettings("0.1.0", **settings), 1, "127.0.0.1:1", WALL_MS)  # type: ignore[arg-type]


def requests(*texts: str) -> list[list[bytes]]:
    return [text.encode().split() for text in texts]


def planned(session: Session, *texts: str) -> Plan:
    return plan(session, requests(*texts), WALL_MS)


class FakeStore:
    """Runs a plan's steps in order, as the shell would, over a dict of records."""

    def __init__(self, values: dict[bytes, bytes | None] | None = None) -> None:
        self.records = {key: Record(key, value, VERSION) for key, value in (values or {}).items()}
        self.served: list[rc.ServerCommand] = []

    def run(
        self, steps: Sequence[object], fail: dict[int, RequestError] | None = None
    ) -> list[StepResult]:
        results: list[StepResult] = []
        for index, step in enumerate(steps):
            if fail and index in fail:
                results.append(fail[index])
            elif isinstance(step, ReadStep):
                results.append([self.records.get(key) for key in step.keys])
            elif isinstance(step, WriteStep):
                for key, value in step.writes:
                    self.records[key] = Record(key, value, VERSION)  # None: a tombstone
                results.append([VERSION] * len(step.writes))
            else:
                assert isinstance(step, ServerStep)
                self.served.append(step.command)
                results.append(Status("SERVED"))
        return results

    def value(self, key: bytes) -> bytes | None:
        record = self.records.get(key)
        return None if record is None else record.value


def answered(session: Session, store: FakeStore, *texts: str) -> list[Reply]:
    pipeline = planned(session, *texts)
    return pipeline.replies(store.run(pipeline.steps))


def kinds(pipeline: Plan) -> list[str]:
    return [type(step).__name__ for step in pipeline.steps]


# ----- grouping ------------------------------------------------------------------------------


def test_consecutive_key_reads_share_one_read_of_their_distinct_keys() -> None:
    pipeline = planned(
        new_session(),
        "GET a",
        "MGET b a c",
        "EXISTS d a",
        "TYPE e",
        "STRLEN a",
        "GETRANGE f 0 1",
        "TOUCH g b",
    )
    assert pipeline.steps == [ReadStep((b"a", b"b", b"c", b"d", b"e", b"f", b"g"), None)]


def test_consecutive_writes_share_one_write_where_the_last_write_of_a_key_wins() -> None:
    store = FakeStore()
    session = new_session()
    pipeline = planned(session, "SET a 1", "SET a 2", "MSET b 3 a 4", "SET c 5")
    assert pipeline.steps == [WriteStep(((b"a", b"4"), (b"b", b"3"), (b"c", b"5")), None)]
    assert pipeline.replies(store.run(pipeline.steps)) == [OK, OK, OK, OK]
    assert store.value(b"a") == b"4"


def test_reads_and_writes_keep_their_order_in_steps() -> None:
    store = FakeStore({b"a": b"old"})
    session = new_session()
    pipeline = planned(session, "GET a", "SET a new", "GET a", "DEL a", "GET a")
    assert kinds(pipeline) == [
        "ReadStep",
        "WriteStep",
        "ReadStep",
        "ReadStep",  # what DEL needs to count
        "WriteStep",
        "ReadStep",
    ]
    assert pipeline.replies(store.run(pipeline.steps)) == [b"old", OK, b"new", 1, None]


def test_session_commands_between_reads_do_not_split_the_batch() -> None:
    pipeline = planned(new_session(), "GET a", "PING", "CLIENT SETNAME x", "GET b")
    assert pipeline.steps == [ReadStep((b"a", b"b"), None)]
    store = FakeStore({b"b": b"2"})
    assert pipeline.replies(store.run(pipeline.steps)) == [None, PONG, OK, b"2"]


def test_a_change_of_read_level_splits_reads_and_each_step_carries_its_level() -> None:
    pipeline = planned(
        new_session(),
        "GET a",
        "A3.CONSISTENCY WRITE all",  # not the reads' level: no split
        "GET b",
        "A3.CONSISTENCY READ all",
        "GET c",
        "READONLY",
        "GET d",
        "READWRITE",
        "GET e",
    )
    assert pipeline.steps == [
        ReadStep((b"a", b"b"), None),
        ReadStep((b"c",), Consistency.ALL),
        ReadStep((b"d",), Consistency.ONE),
        ReadStep((b"e",), Consistency.ALL),  # READWRITE goes back to the level before READONLY
    ]


def test_a_change_of_write_level_splits_writes() -> None:
    pipeline = planned(new_session(), "SET a 1", "A3.CONSISTENCY WRITE all", "SET b 2")
    assert pipeline.steps == [
        WriteStep(((b"a", b"1"),), None),
        WriteStep(((b"b", b"2"),), Consistency.ALL),
    ]


def test_a_batch_never_exceeds_max_batch_keys() -> None:
    session = new_session(limits=Limits(max_batch_keys=3))
    pipeline = planned(session, "GET a", "MGET b c", "GET d", "MGET e f g")
    assert pipeline.steps == [
        ReadStep((b"a", b"b", b"c"), None),
        ReadStep((b"d",), None),
        ReadStep((b"e", b"f", b"g"), None),
    ]
    too_many = planned(session, "MGET a b c d")
    assert too_many.steps == []
    assert too_many.replies([]) == [ErrorReply("ERR batch has 4 keys; the limit is 3 per call")]


def test_server_commands_are_steps_of_their_own_in_order() -> None:
    store = FakeStore()
    session = new_session(allow_flush=True)
    pipeline = planned(
        session, "GET a", "SCAN 0", "GET b", "SET c 1", "FLUSHALL", "INFO", "CONFIG GET save"
    )
    assert kinds(pipeline) == [
        "ReadStep",
        "ServerStep",
        "ReadStep",
        "WriteStep",
        "ServerStep",
        "ServerStep",
        "ServerStep",
    ]
    assert pipeline.replies(store.run(pipeline.steps))[1] == Status("SERVED")
    assert store.served == [
        rc.Scan(0, None, 10, None),
        rc.Flush("flushall", None),
        rc.Info(()),
        rc.ConfigGet((b"save",)),
    ]


def test_server_steps_carry_the_session_s_levels() -> None:
    pipeline = planned(new_session(), "A3.CONSISTENCY READ local WRITE one", "KEYS *")
    assert pipeline.steps == [ServerStep(rc.Keys(b"*"), Consistency.LOCAL, Consistency.ONE)]


def test_flush_is_refused_unless_the_node_allows_it() -> None:
    pipeline = planned(new_session(), "FLUSHALL", "flushdb async")
    assert pipeline.steps == []
    replies = pipeline.replies([])
    for reply, name in zip(replies, ("FLUSHALL", "FLUSHDB"), strict=True):
        assert isinstance(reply, ErrorReply)
        assert reply.text.startswith(f"ERR {name} is disabled")
        assert "ALLOW_FLUSH=1" in reply.text


# ----- DEL counts ----------------------------------------------------------------------------


def test_del_reads_the_keys_it_cannot_settle_at_the_write_level_before_writing() -> None:
    session = new_session()
    pipeline = planned(session, "A3.CONSISTENCY WRITE all", "SET a 1", "DEL a b c", "DEL b")
    assert pipeline.steps == [
        ReadStep((b"b", b"c"), Consistency.ALL),
        WriteStep(((b"a", None), (b"b", None), (b"c", None)), Consistency.ALL),
    ]
    store = FakeStore({b"b": b"x"})
    assert pipeline.replies(store.run(pipeline.steps))[1:] == [OK, 2, 0]


def test_del_counts_a_key_named_twice_once_and_a_tombstone_as_missing() -> None:
    store = FakeStore({b"a": b"1", b"gone": None})
    assert answered(new_session(), store, "DEL a a gone nothing") == [1]
    assert store.value(b"a") is None


def test_del_after_set_of_the_same_key_in_the_batch_needs_no_read() -> None:
    pipeline = planned(new_session(), "SET a 1", "UNLINK a")
    assert kinds(pipeline) == ["WriteStep"]
    assert pipeline.replies(FakeStore().run(pipeline.steps)) == [OK, 1]


def test_a_failed_pre_read_fails_only_the_deletes_of_the_batch() -> None:
    pipeline = planned(new_session(), "SET a 1", "DEL b")
    results = FakeStore().run(pipeline.steps, fail={0: UnavailableError("1 of 2 replicas")})
    assert pipeline.replies(results) == [OK, ErrorReply("TRYAGAIN 1 of 2 replicas")]


def test_a_failed_write_fails_every_command_of_its_batch() -> None:
    pipeline = planned(new_session(), "SET a 1", "SET a 2", "DEL a", "GET a")
    results = FakeStore().run(pipeline.steps, fail={0: TimedOutError("no answer")})
    replies = pipeline.replies(results)
    assert replies[:3] == [ErrorReply("TRYAGAIN no answer")] * 3
    assert replies[3] is None


def test_a_failed_read_fails_every_read_of_its_batch_only() -> None:
    pipeline = planned(new_session(), "GET a", "EXISTS a", "SET b 1", "GET b")
    results = FakeStore().run(pipeline.steps, fail={0: UnavailableError("down")})
    assert pipeline.replies(results) == [
        ErrorReply("TRYAGAIN down"),
        ErrorReply("TRYAGAIN down"),
        OK,
        b"1",
    ]


def test_a_failed_server_step_answers_its_error() -> None:
    pipeline = planned(new_session(), "DBSIZE")
    assert pipeline.replies([UnavailableError("x")]) == [ErrorReply("TRYAGAIN x")]


# ----- replies to reads ----------------------------------------------------------------------


def test_read_replies_from_records_and_tombstones() -> None:
    store = FakeStore({b"a": b"hello", b"gone": None})
    assert answered(
        new_session(),
        store,
        "GET a",
        "GET gone",
        "GET never",
        "MGET a gone never a",
        "EXISTS a a gone never",
        "TOUCH a gone",
        "TYPE a",
        "TYPE gone",
        "STRLEN a",
        "STRLEN never",
        "GETRANGE a 1 3",
        "GETRANGE never 0 -1",
    ) == [
        b"hello",
        None,
        None,
        [b"hello", None, None, b"hello"],
        2,
        1,
        Status("string"),
        Status("none"),
        5,
        0,
        b"ell",
        b"",
    ]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        # The examples of redis.io's GETRANGE page, on "This is a string".
        (0, 3, b"This"),
        (-3, -1, b"ing"),
        (0, -1, b"This is a string"),
        (10, 100, b"string"),
        # Redis's edge cases.
        (-1, -3, b""),  # both negative and start after end
        (5, 2, b""),
        (-100, 2, b"Thi"),
        (-100, -100, b"T"),  # both clamp to 0
        (-100, -200, b""),  # both negative and start after end, though both clamp to 0
        (16, 20, b""),
        (3, -100, b""),
    ],
)
def test_getrange_follows_redis_s_index_rules(start: int, end: int, expected: bytes) -> None:
    assert substring(b"This is a string", start, end) == expected


def test_getrange_of_an_empty_value_is_empty() -> None:
    assert substring(b"", 0, -1) == b""


# ----- limits and bad input ------------------------------------------------------------------


def test_a_bad_key_or_value_is_answered_at_once_and_never_joins_a_batch() -> None:
    session = new_session(limits=Limits(max_key_bytes=4, max_value_bytes=3))
    pipeline = plan(
        session,
        [
            [b"GET", b"a"],
            [b"GET", b""],
            [b"GET", b"toolong"],
            [b"GET", b"b"],
            [b"SET", b"c", b"big!"],
        ],
        WALL_MS,
    )
    assert pipeline.steps == [ReadStep((b"a", b"b"), None)]
    replies = pipeline.replies(FakeStore().run(pipeline.steps))
    assert replies[0] is None and replies[3] is None
    assert replies[1] == ErrorReply("ERR key must not be empty")
    assert replies[2] == ErrorReply("ERR key is 7 bytes; the limit is MAX_KEY_BYTES=4")
    assert replies[4] == ErrorReply(
        "ERR string exceeds maximum allowed size: the value is 4 bytes; the limit is "
        "MAX_VALUE_BYTES=3"
    )


def test_results_must_match_the_steps() -> None:
    pipeline = planned(new_session(), "GET a", "SET b 1")
    with pytest.raises(ValueError, match="1 results for 2 steps"):
        pipeline.replies([[None]])
    with pytest.raises(ValueError, match="2 records for 1 keys"):
        pipeline.replies([[None, None], [VERSION]])


# ----- QUIT and names ------------------------------------------------------------------------


def test_nothing_after_quit_is_run_or_answered() -> None:
    session = new_session()
    pipeline = planned(session, "SET a 1", "QUIT", "SET b 2", "GET a")
    assert pipeline.steps == [WriteStep(((b"a", b"1"),), None)]
    assert pipeline.replies(FakeStore().run(pipeline.steps)) == [OK, OK]
    assert pipeline.names == ["set", "quit"]
    assert session.closing


def test_every_request_run_is_named_for_metrics() -> None:
    pipeline = planned(new_session(), "get a", "CLIENT SETNAME x", "lpush l x", "INCR n", "GET")
    assert pipeline.names == ["get", "client|setname", "unknown", "incr", "get"]


def test_replies_are_silenced_by_client_reply_even_for_batched_commands() -> None:
    store = FakeStore()
    session = new_session()
    replies = answered(
        session, store, "SET a 1", "CLIENT REPLY OFF", "SET b 2", "CLIENT REPLY ON", "GET b"
    )
    assert replies == [OK, OK, b"2"]
    assert store.value(b"b") == b"2"


# ----- random pipelines against a model of Redis ---------------------------------------------

KEYS = ["a", "b", "c"]
key = st.sampled_from(KEYS)
value = st.sampled_from(["1", "22", "333"])
command = st.one_of(
    st.builds(lambda k: f"GET {k}", key),
    st.builds(lambda ks: "MGET " + " ".join(ks), st.lists(key, min_size=1, max_size=4)),
    st.builds(lambda ks: "EXISTS " + " ".join(ks), st.lists(key, min_size=1, max_size=4)),
    st.builds(lambda k: f"STRLEN {k}", key),
    st.builds(lambda k, v: f"SET {k} {v}", key, value),
    st.builds(
        lambda pairs: "MSET " + " ".join(f"{k} {v}" for k, v in pairs),
        st.lists(st.tuples(key, value), min_size=1, max_size=3),
    ),
    st.builds(lambda ks: "DEL " + " ".join(ks), st.lists(key, min_size=1, max_size=4)),
    st.just("PING"),
    st.just("INCR a"),
    st.just("DBSIZE"),
    st.sampled_from(
        ["A3.CONSISTENCY READ one", "A3.CONSISTENCY WRITE all", "READONLY", "READWRITE"]
    ),
)


REFUSED = Status("(refused)")  # stand-ins where the model does not predict the exact reply
SESSION = Status("(session)")


def model(texts: list[str], data: dict[str, str]) -> list[Reply]:
    """Each command run alone, in order, on a dict: what Redis itself would answer."""
    replies: list[Reply] = []
    for text in texts:
        name, *args = text.split()
        if name == "GET":
            replies.append(data[args[0]].encode() if args[0] in data else None)
        elif name == "MGET":
            replies.append([data[k].encode() if k in data else None for k in args])
        elif name == "EXISTS":
            replies.append(sum(1 for k in args if k in data))
        elif name == "STRLEN":
            replies.append(len(data.get(args[0], "")))
        elif name in ("SET", "MSET"):
            data.update(zip(args[::2], args[1::2], strict=True))
            replies.append(OK)
        elif name == "DEL":
            replies.append(sum(1 for k in dict.fromkeys(args) if data.pop(k, None) is not None))
        elif name == "PING":
            replies.append(PONG)
        elif name == "DBSIZE":
            replies.append(Status("SERVED"))
        elif name == "INCR":
            replies.append(REFUSED)
        else:
            replies.append(SESSION)
    return replies


@given(st.lists(command, max_size=30), st.dictionaries(key, value, max_size=3))
def test_a_random_pipeline_answers_each_request_once_in_order_as_redis_would(
    texts: list[str], initial: dict[str, str]
) -> None:
    store = FakeStore({k.encode(): v.encode() for k, v in initial.items()})
    session = new_session()
    pipeline = planned(session, *texts)
    replies = pipeline.replies(store.run(pipeline.steps))
    expected = model(texts, dict(initial))
    assert len(replies) == len(texts)
    for text, reply, wanted in zip(texts, replies, expected, strict=True):
        if wanted == REFUSED:
            assert isinstance(reply, ErrorReply)
        elif wanted != SESSION:
            assert reply == wanted, text
    for step in pipeline.steps:
        keys = step.keys if isinstance(step, ReadStep) else []
        if isinstance(step, WriteStep):
            keys = tuple(key for key, _ in step.writes)
        assert len(set(keys)) == len(keys)  # each key once per step


@given(st.lists(command, min_size=1, max_size=30), st.data())
def test_a_failed_step_still_gives_one_reply_per_request(
    texts: list[str], data: st.DataObject
) -> None:
    session = new_session()
    pipeline = planned(session, *texts)
    failed = data.draw(st.sets(st.integers(0, max(0, len(pipeline.steps) - 1))))
    results = FakeStore().run(
        pipeline.steps, fail={index: UnavailableError("x") for index in failed}
    )
    assert len(pipeline.replies(results)) == len(texts)


# ----- a refused MULTI ------------------------------------------------------------------------


def test_commands_after_a_refused_multi_are_not_run_and_exec_aborts() -> None:
    session, store = new_session(), FakeStore({b"a": b"old"})
    replies = answered(session, store, "MULTI", "SET a new", "GET a", "EXEC", "GET a")
    assert [r.code for r in replies[:4] if isinstance(r, ErrorReply)] == [
        "ERR",
        "ERR",
        "ERR",
        "EXECABORT",
    ]
    assert "not run: the MULTI before it was refused" in replies[1].text  # type: ignore[union-attr]
    assert replies[4] == b"old" and store.value(b"a") == b"old"
    assert not session.refused_multi


def test_discard_or_reset_ends_a_refused_multi_and_quit_still_closes() -> None:
    session, store = new_session(), FakeStore()
    assert answered(session, store, "MULTI", "DISCARD", "SET a 1")[1:] == [OK, OK]
    assert store.value(b"a") == b"1"
    assert answered(session, store, "MULTI", "RESET", "SET b 2")[1:] == [Status("RESET"), OK]
    answered(session, store, "MULTI", "QUIT")
    assert session.closing


def test_each_hello_or_reset_is_a_run_of_its_own() -> None:
    pipeline = requests("GET a", "hello 3", "GET b", "GET c", "RESET", "HELLO 2")
    assert protocol_runs(pipeline) == [
        [[b"GET", b"a"]],
        [[b"hello", b"3"]],
        [[b"GET", b"b"], [b"GET", b"c"]],
        [[b"RESET"]],
        [[b"HELLO", b"2"]],
    ]
    plain = requests("GET a", "HELLOX", "SET b 1")
    assert protocol_runs(plain) == [plain]


def test_each_client_kill_is_a_run_of_its_own() -> None:
    pipeline = requests("SET a 1", "client kill ID 9", "PING", "CLIENT LIST", "CLIENT")
    assert protocol_runs(pipeline) == [
        [[b"SET", b"a", b"1"]],
        [[b"client", b"kill", b"ID", b"9"]],
        [[b"PING"], [b"CLIENT", b"LIST"], [b"CLIENT"]],
    ]


# ----- the lane for a lone GET or SET ---------------------------------------------------------

LANE_LIMITS = Limits(max_key_bytes=4, max_value_bytes=4)
# Mostly words within the limits (where the lane applies), sometimes empty or over them.
lane_word = st.one_of(st.binary(min_size=1, max_size=4), st.binary(max_size=6))
lone_request = st.one_of(
    st.tuples(st.sampled_from([b"GET", b"get", b"GeT", b"GETX", b"SET"]), lane_word),
    st.tuples(st.sampled_from([b"SET", b"set", b"sEt", b"GET"]), lane_word, lane_word),
    st.tuples(st.just(b"SET"), lane_word, lane_word, st.just(b"PX")),
    st.just((b"GET",)),
).map(list)
usual_state = {
    flag: False for flag in ("closing", "skip_next_reply", "replies_off", "refused_multi")
}
session_state = st.one_of(
    st.just(usual_state),  # where the lane applies
    st.fixed_dictionaries({flag: st.booleans() for flag in usual_state}),
)


def session_in_state(state: dict[str, bool], read: Consistency | None) -> Session:
    session = new_session(limits=LANE_LIMITS)
    for flag, on in state.items():
        setattr(session, flag, on)
    session.read_level = read
    return session


@settings(max_examples=400)
@given(
    lone_request,
    session_state,
    st.sampled_from([None, Consistency.ONE, Consistency.ALL]),
    st.sampled_from(["records", "missing", "tombstone", "failed"]),
)
def test_a_lone_get_or_set_is_planned_as_the_batching_planner_plans_it(
    request: list[bytes], state: dict[str, bool], read: Consistency | None, outcome: str
) -> None:
    laned, batched = session_in_state(state, read), session_in_state(state, read)
    now = WALL_MS + 7  # not the session's start: the time of its last command is seen
    fast = plan(laned, [request], now)
    slow = plan_in_batches(batched, [request], now)
    assert fast.steps == slow.steps
    assert fast.names == slow.names
    assert vars(laned) == vars(batched)
    results: list[StepResult] = []
    for step in slow.steps:
        if outcome == "failed":
            results.append(UnavailableError("replicas down"))
        elif isinstance(step, ReadStep):
            value = {"records": b"v", "missing": None, "tombstone": None}[outcome]
            found = None if outcome == "missing" else Record(step.keys[0], value, VERSION)
            results.append([found])
        elif isinstance(step, WriteStep):
            results.append([VERSION])
        else:
            results.append(Status("SERVED"))
    assert fast.replies(results, now) == slow.replies(results, now)


def test_the_lane_takes_plain_gets_and_sets_and_leaves_the_rest_to_the_batching_planner() -> None:
    session = new_session()
    assert type(planned(session, "get k")) is not Plan
    assert type(planned(session, "SET k v")) is not Plan
    for texts in (["GET k", "GET j"], ["SET k v PX 10"], ["GETDEL k"], ["PING"]):
        assert type(planned(session, *texts)) is Plan


def test_a_plan_says_whether_the_node_answers_a_step() -> None:
    session = new_session()
    assert planned(session, "DBSIZE").serves
    assert planned(session, "GET a", "INFO", "SET a b").serves
    for texts in (["GET a"], ["SET a b"], ["GET a", "SET a b", "PING"], ["PING"]):
        assert not planned(session, *texts).serves


# Each row was compared with redis-server 7.0.15 (SET k <value>, then OBJECT ENCODING k and
# OBJECT REFCOUNT k).
@pytest.mark.parametrize(
    ("value", "encoding", "refcount"),
    [
        (b"12", b"int", 2**31 - 1),  # a shared integer
        (b"9999", b"int", 2**31 - 1),
        (b"10000", b"int", 1),
        (b"-5", b"int", 1),
        (b"012", b"embstr", 1),
        (b"-0", b"embstr", 1),
        (b"1 ", b"embstr", 1),
        (b"99999999999999999999", b"embstr", 1),  # over int64
        (b"hello", b"embstr", 1),
        (b"x" * 44, b"embstr", 1),
        (b"x" * 45, b"raw", 1),
    ],
)
def test_object_encoding_and_refcount_are_redis_s_for_a_string_set_so(
    value: bytes, encoding: bytes, refcount: int
) -> None:
    assert object_info(value, "encoding") == encoding
    assert object_info(value, "refcount") == refcount


def test_object_freq_and_idletime_say_why_they_are_not_answered() -> None:
    freq = object_info(b"v", "freq")
    assert isinstance(freq, ErrorReply) and "LFU maxmemory policy is not selected" in freq.text
    idle = object_info(b"v", "idletime")
    assert isinstance(idle, ErrorReply) and "does not track when a key was last read" in idle.text


def test_object_of_a_missing_key_is_nil_whatever_is_asked() -> None:
    session = new_session()
    for what in ("ENCODING", "REFCOUNT", "FREQ", "IDLETIME"):
        pipeline = plan(session, [[b"OBJECT", what.encode(), b"k"]], 0)
        assert pipeline.steps == [ReadStep((b"k",), None)]
        assert pipeline.replies([[None]]) == [None]
