"""Expiry on the Redis front end: SET EX and friends batched, TTL read, EXPIRE read-then-write
(a3redis.core.redis_pipeline with a3redis.core.expiry's decisions)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from a3redis.core import client_tokens
from a3redis.core.consistency import Consistency
from a3redis.core.errors import RequestError, UnavailableError
from a3redis.core.expiry import MAX_EXPIRES_AT_MS, NEVER, Expiry, visible
from a3redis.core.hlc import Version
from a3redis.core.record import Record
from a3redis.core.redis_pipeline import (
    Plan,
    ReadStep,
    RewriteStep,
    StepResult,
    WriteStep,
    plan,
    time_to_live,
)
from a3redis.core.redis_session import ServerSettings, Session
from a3redis.core.resp_values import OK, ErrorReply, Reply

NOW = 1_700_000_000_000
INVALID = "ERR invalid expire time in '{}' command"


def new_session(**settings: object) -> Session:
    return Session(ServerSettings("0.1.0", **settings), 1, "127.0.0.1:1", NOW)  # type: ignore[arg-type]


class ExpiringStore:
    """Runs a plan's steps as the shell does, over records with expiries, at `now`.

    Reads answer what the keyspace answers (core.expiry.visible: an expired
    record reads as a tombstone); a write's expiry is resolved from its
    version's wall time, `now`.
    """

    def __init__(self, now: int = NOW) -> None:
        self.now = now
        self.records: dict[bytes, Record] = {}
        self.writes: list[WriteStep] = []  # every write step run, rewrites included

    def put(self, key: bytes, value: bytes, expires_at_ms: int = 0) -> None:
        self.records[key] = Record(key, value, Version(self.now - 1, 0, "n"), expires_at_ms)

    def run(self, pipeline: Plan, fail: dict[int, RequestError] | None = None) -> list[StepResult]:
        results: list[StepResult] = []
        for index, step in enumerate(pipeline.steps):
            if fail and index in fail:
                results.append(fail[index])
                continue
            if isinstance(step, ReadStep):
                results.append([visible(self.records.get(key), self.now) for key in step.keys])
                continue
            if isinstance(step, RewriteStep):
                decided = pipeline.rewrites(index, results, self.now)
                if isinstance(decided, RequestError):
                    results.append(decided)
                    continue
                step = decided
            assert isinstance(step, WriteStep)
            self.writes.append(step)
            version = Version(self.now, 0, "n")
            expiries = step.expiries or [NEVER] * len(step.writes)
            for (key, value), expiry in zip(step.writes, expiries, strict=True):
                self.records[key] = Record(key, value, version, expiry.resolve(self.now))
            results.append([version] * len(step.writes))
        return results

    def answer(self, session: Session, *texts: str) -> list[Reply]:
        pipeline = planned(session, *texts)
        return pipeline.replies(self.run(pipeline), self.now)

    def expires_at(self, key: bytes) -> int:
        return self.records[key].expires_at_ms


def planned(session: Session, *texts: str) -> Plan:
    return plan(session, [text.encode().split() for text in texts], NOW)


def kinds(pipeline: Plan) -> list[str]:
    return [type(step).__name__ for step in pipeline.steps]


# ----- writes with an expiry -----------------------------------------------------------------


def test_set_with_an_expiry_joins_the_batched_write_with_one_expiry_per_write() -> None:
    pipeline = planned(
        new_session(), "SET a 1 EX 10", "SET b 2", "SETEX c 5 3", "PSETEX d 7 4", "DEL e"
    )
    writes = ((b"a", b"1"), (b"b", b"2"), (b"c", b"3"), (b"d", b"4"), (b"e", None))
    expiries = (Expiry(ttl_ms=10_000), NEVER, Expiry(ttl_ms=5000), Expiry(ttl_ms=7), NEVER)
    assert pipeline.steps[-1] == WriteStep(writes, None, expiries)


def test_a_batch_without_expiries_carries_none() -> None:
    assert planned(new_session(), "SET a 1", "MSET b 2 c 3").steps == [
        WriteStep(((b"a", b"1"), (b"b", b"2"), (b"c", b"3")), None, None)
    ]


def test_the_last_write_of_a_key_decides_its_expiry_too() -> None:
    store = ExpiringStore()
    session = new_session()
    assert store.answer(session, "SET a 1 EX 10", "SET a 2", "SET b 1 PX 5") == [OK, OK, OK]
    assert store.expires_at(b"a") == 0
    assert store.answer(session, "SET a 1", "SET a 2 PXAT 1800000000000", "DEL b") == [OK, OK, 1]
    assert store.expires_at(b"a") == 1_800_000_000_000
    # A plain SET and DEL of an expiring key leave no expiry in the batch at all.
    assert planned(session, "SET c 1 EX 1", "SET c 2", "DEL c").steps[-1] == WriteStep(
        ((b"c", None),), None, None
    )


def test_an_expiry_beyond_the_store_s_bound_is_answered_at_once_in_redis_s_words() -> None:
    session = new_session()
    pipeline = planned(
        session,
        f"SET a 1 PXAT {MAX_EXPIRES_AT_MS + 1}",
        f"SETEX b {MAX_EXPIRES_AT_MS // 1000} 2",
        f"EXPIREAT c {MAX_EXPIRES_AT_MS // 1000 + 1}",
        "SET d 4 PX 100",
    )
    assert pipeline.steps == [WriteStep(((b"d", b"4"),), None, (Expiry(ttl_ms=100),))]
    replies = pipeline.replies(ExpiringStore().run(pipeline))
    assert replies == [
        ErrorReply(INVALID.format("set")),
        ErrorReply(INVALID.format("setex")),
        ErrorReply(INVALID.format("expireat")),
        OK,
    ]


# ----- TTL and its kind ----------------------------------------------------------------------


def test_ttl_commands_join_the_batched_read() -> None:
    pipeline = planned(new_session(), "GET a", "TTL a", "PTTL b", "EXPIRETIME c", "PEXPIRETIME a")
    assert pipeline.steps == [ReadStep((b"a", b"b", b"c"), None)]


def test_a_set_with_an_expiry_then_ttl_in_one_pipeline() -> None:
    store = ExpiringStore()
    replies = store.answer(
        new_session(), "SET a 1 EX 100", "TTL a", "PTTL a", "EXPIRETIME a", "PEXPIRETIME a"
    )
    assert replies == [OK, 100, 100_000, (NOW + 100_000 + 500) // 1000, NOW + 100_000]


@pytest.mark.parametrize(
    ("left_ms", "ttl"),
    [(1, 0), (499, 0), (500, 1), (1499, 1), (1500, 2), (100_000, 100)],
)
def test_ttl_rounds_to_the_nearest_second_as_redis_does(left_ms: int, ttl: int) -> None:
    record = Record(b"k", b"v", Version(NOW, 0, "n"), NOW + left_ms)
    assert time_to_live(record, NOW, milliseconds=False, absolute=False) == ttl
    assert time_to_live(record, NOW, milliseconds=True, absolute=False) == left_ms


def test_ttl_of_a_missing_an_expired_and_a_lasting_key() -> None:
    store = ExpiringStore()
    store.put(b"expired", b"v", NOW)
    store.put(b"lasting", b"v")
    texts = [f"{name} {key}" for key in ("missing", "expired", "lasting") for name in ("TTL",
             "PTTL", "EXPIRETIME", "PEXPIRETIME")]  # fmt: skip
    assert store.answer(new_session(), *texts) == [-2] * 8 + [-1] * 4


def test_ttl_is_judged_by_the_clock_when_the_replies_are_made() -> None:
    store = ExpiringStore()
    store.put(b"k", b"v", NOW + 10_000)
    pipeline = planned(new_session(), "PTTL k", "TTL k")
    results = store.run(pipeline)
    assert pipeline.replies(results, NOW + 4000) == [6000, 6]
    assert pipeline.replies(results, NOW + 10_000) == [-2, -2]


# ----- read-modify-write ---------------------------------------------------------------------


def test_a_pipeline_of_expires_is_one_read_and_one_write() -> None:
    store = ExpiringStore()
    for number in range(0, 100, 2):
        store.put(f"k{number}".encode(), b"v")
    session = new_session()
    pipeline = planned(session, *(f"EXPIRE k{number} 60" for number in range(100)))
    assert pipeline.steps == [
        ReadStep(tuple(f"k{number}".encode() for number in range(100)), None),
        RewriteStep(0, None),
    ]
    assert pipeline.replies(store.run(pipeline)) == [1, 0] * 50  # the odd keys are missing
    (written,) = store.writes
    assert [key for key, _ in written.writes] == [f"k{n}".encode() for n in range(0, 100, 2)]
    assert written.expiries == (Expiry(ttl_ms=60_000),) * 50


def test_expire_conditions_as_redis_each_seeing_the_one_before_in_the_batch() -> None:
    store = ExpiringStore()
    store.put(b"k", b"v")
    replies = store.answer(
        new_session(),
        "EXPIRE k 100 XX",  # no expiry yet
        "EXPIRE k 100 GT",  # none counts as infinite
        "EXPIRE k 100 NX",
        "EXPIRE k 200 NX",  # has one now
        "EXPIRE k 50 GT",
        "EXPIRE k 200 GT",
        "EXPIRE k 300 LT",
        "EXPIRE k 150 XX LT",
        "TTL k",
    )
    assert replies == [0, 0, 1, 0, 0, 1, 0, 1, 150]
    (written,) = store.writes  # one write of the key: its last decision
    assert written.writes == ((b"k", b"v"),)
    assert written.expiries == (Expiry(ttl_ms=150_000),)


def test_expire_xx_with_lt_needs_both() -> None:
    store = ExpiringStore()
    store.put(b"k", b"v")
    session = new_session()
    # LT alone holds for a key without an expiry (none is infinite); XX does not.
    assert store.answer(session, "EXPIRE k 10 XX LT", "TTL k", "EXPIRE k 10 LT") == [0, -1, 1]
    assert store.answer(session, "PEXPIRE k 9000 LT XX", "PTTL k") == [1, 9000]


def test_persist_removes_an_expiry_once() -> None:
    store = ExpiringStore()
    store.put(b"k", b"v", NOW + 5000)
    store.put(b"lasting", b"v")
    session = new_session()
    assert store.answer(session, "PERSIST k", "PERSIST k", "PERSIST lasting", "PERSIST no") == [
        1,
        0,
        0,
        0,
    ]
    assert store.answer(session, "TTL k", "EXPIRE k 10 LT") == [-1, 1]  # LT: none is infinite


@pytest.mark.parametrize("text", ["EXPIRE k 0", "EXPIRE k -10", "PEXPIREAT k 1", "EXPIREAT k 5"])
def test_an_expire_in_the_past_deletes_the_key_and_answers_1(text: str) -> None:
    store = ExpiringStore()
    store.put(b"k", b"v")
    assert store.answer(new_session(), text, "GET k", "EXISTS k") == [1, None, 0]
    assert store.records[b"k"].value is None  # a tombstone: it supersedes older copies


def test_expire_of_a_missing_key_answers_0_and_writes_nothing() -> None:
    store = ExpiringStore()
    store.put(b"gone", b"v", NOW - 1)  # expired: missing as well
    assert store.answer(new_session(), "EXPIRE missing 10", "PEXPIRE gone 10", "PERSIST x") == [
        0,
        0,
        0,
    ]
    assert store.writes == [WriteStep((), None, ())]


def test_getex_answers_the_value_and_changes_the_expiry() -> None:
    store = ExpiringStore()
    store.put(b"k", b"v")
    session = new_session()
    assert store.answer(session, "GETEX k PX 2500", "PTTL k") == [b"v", 2500]
    assert store.answer(session, "GETEX k", "GETEX k PERSIST", "TTL k") == [b"v", b"v", -1]
    assert store.answer(session, "GETEX k EXAT 1700000001", "TTL k") == [b"v", 1]
    # An instant already past deletes the key, after answering its value (as Redis).
    assert store.answer(session, "GETEX k PXAT 5", "GET k") == [b"v", None]


def test_getex_answers_a_bad_time_only_for_a_key_that_exists() -> None:
    store = ExpiringStore()
    store.put(b"k", b"v")
    replies = store.answer(
        new_session(),
        "GETEX missing EX 0",
        "GETEX missing EX x",
        f"GETEX missing PXAT {MAX_EXPIRES_AT_MS + 1}",
        "GETEX k EX 0",
        "GETEX k EX x",
        f"GETEX k PXAT {MAX_EXPIRES_AT_MS + 1}",
        "GET k",
    )
    invalid = ErrorReply(INVALID.format("getex"))
    integer = ErrorReply("ERR value is not an integer or out of range")
    assert replies == [None, None, None, invalid, integer, invalid, b"v"]


def test_set_keepttl_writes_the_new_value_with_the_expiry_it_had() -> None:
    store = ExpiringStore()
    store.put(b"k", b"old", NOW + 30_000)
    store.put(b"lasting", b"old")
    session = new_session()
    assert store.answer(
        session, "SET k new KEEPTTL", "SET lasting new KEEPTTL", "SET fresh new KEEPTTL"
    ) == [OK, OK, OK]
    assert store.writes[-1].expiries == (Expiry(at_ms=NOW + 30_000), NEVER, NEVER)
    assert store.answer(session, "MGET k lasting fresh", "PTTL k", "TTL lasting") == [
        [b"new"] * 3,
        30_000,
        -1,
    ]


def test_read_modify_writes_keep_their_place_between_reads_and_writes() -> None:
    store = ExpiringStore()
    session = new_session()
    pipeline = planned(session, "SET k v", "EXPIRE k 10", "PERSIST k", "TTL k", "SET k w PX 5")
    assert kinds(pipeline) == ["WriteStep", "ReadStep", "RewriteStep", "ReadStep", "WriteStep"]
    assert pipeline.replies(store.run(pipeline), NOW) == [OK, 1, 1, -1, OK]
    assert store.expires_at(b"k") == NOW + 5


def test_the_read_is_at_the_read_level_and_the_rewrite_at_the_write_level() -> None:
    session = new_session()
    pipeline = planned(
        session, "A3.CONSISTENCY READ one WRITE all", "EXPIRE a 1", "A3.CONSISTENCY READ all",
        "PERSIST b",
    )  # fmt: skip
    assert pipeline.steps == [
        ReadStep((b"a",), Consistency.ONE),
        RewriteStep(0, Consistency.ALL),
        ReadStep((b"b",), Consistency.ALL),  # a change of level ends the batch
        RewriteStep(2, Consistency.ALL),
    ]


def test_a_failed_read_or_rewrite_answers_every_command_that_needed_it() -> None:
    store = ExpiringStore()
    store.put(b"k", b"v")
    failure = UnavailableError("2 of 3 replicas answered; QUORUM needs 2")
    error = ErrorReply(f"TRYAGAIN {failure}")
    session = new_session()
    for failed_step in (0, 1):
        pipeline = planned(session, "EXPIRE k 10", "GETEX k PERSIST", "SET k v KEEPTTL")
        replies = pipeline.replies(store.run(pipeline, fail={failed_step: failure}))
        assert replies == [error] * 3


def test_writes_need_a_read_write_token_and_ttl_is_a_read() -> None:
    reader = "reader-token-00001"
    tokens = client_tokens.parse(f"{reader} readonly\n".encode(), bytes(32))
    session = new_session(tokens=client_tokens.TokenHolder(tokens))
    store = ExpiringStore()
    writes = ["SET k v EX 1", "SETEX k 1 v", "PSETEX k 1 v", "GETEX k EX 1", "EXPIRE k 1",
              "PEXPIREAT k 1", "PERSIST k", "SET k v KEEPTTL",
              "GETEX k"]  # fmt: skip  # GETEX is a write in Redis's table even without an option
    reads = ["TTL k", "PTTL k", "EXPIRETIME k", "PEXPIRETIME k"]
    replies = store.answer(session, f"AUTH {reader}", *writes, *reads)
    assert replies[0] == OK
    for text, reply in zip(writes, replies[1 : len(writes) + 1], strict=True):
        name = text.split()[0].lower()
        expected = f"NOPERM User default has no permissions to run the '{name}' command"
        assert reply == ErrorReply(expected), text
    assert replies[len(writes) + 1 :] == [-2, -2, -2, -2]


MODIFY_COMMANDS = st.sampled_from(
    [
        "EXPIRE {} 100",
        "EXPIRE {} 50 GT",
        "EXPIRE {} 200 LT",
        "EXPIRE {} 300 NX",
        "EXPIRE {} 150 XX",
        "EXPIRE {} 120 XX LT",
        "PEXPIRE {} 0",
        "PERSIST {}",
        "GETEX {} PX 70000",
        "GETEX {} PERSIST",
        "SET {} w KEEPTTL",
        "TTL {}",
        "SET {} v",
        "SET {} v EX 80",
    ]
)


@given(st.lists(st.tuples(MODIFY_COMMANDS, st.sampled_from(["a", "b"])), max_size=12))
def test_one_pipeline_answers_and_stores_as_the_same_commands_sent_one_by_one(
    commands: list[tuple[str, str]],
) -> None:
    texts = [command.format(key) for command, key in commands]
    batched, one_by_one = ExpiringStore(), ExpiringStore()
    for store in (batched, one_by_one):
        store.put(b"a", b"v")
        store.put(b"b", b"v", NOW + 90_000)
    session = new_session()
    replies = batched.answer(session, *texts)
    assert replies == [one_by_one.answer(session, text)[0] for text in texts]
    assert batched.records.keys() == one_by_one.records.keys()
    for key, record in batched.records.items():
        other = one_by_one.records[key]
        assert (record.value, record.expires_at_ms) == (other.value, other.expires_at_ms)
