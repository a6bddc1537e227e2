"""SLOWLOG's entries: which commands enter, in what order, and how their words are kept."""

from __future__ import annotations

from a3redis.core.redis_slowlog import (
    REDACTED,
    SLOWLOG_ENTRY_MAX_ARGC,
    SLOWLOG_ENTRY_MAX_STRING,
    SlowLog,
    logged_words,
)


def words(text: str) -> list[bytes]:
    return [word.encode() for word in text.split()]


def test_a_run_at_or_over_the_threshold_logs_each_of_its_commands_newest_first() -> None:
    log = SlowLog(slower_than_us=10_000)
    log.note([words("GET fast")], 0.009_999, 1_000.7, "10.0.0.1:5", None)
    assert len(log) == 0
    log.note([words("SET a 1"), words("SET b 2")], 0.010, 1_001.2, "10.0.0.1:5", b"app")
    assert log.get(None) == [
        [1, 1001, 10_000, [b"SET", b"b", b"2"], b"10.0.0.1:5", b"app"],
        [0, 1001, 10_000, [b"SET", b"a", b"1"], b"10.0.0.1:5", b"app"],
    ]


def test_get_counts_as_redis_does() -> None:
    log = SlowLog(slower_than_us=0)
    for number in range(15):
        log.note([[b"GET", b"%d" % number]], 0.0, 0.0, "p", None)
    ids = [entry[0] for entry in log.get(None)]  # type: ignore[union-attr,index]
    assert ids == list(range(14, 4, -1))  # ten by default, the newest first
    assert len(log.get(-1)) == 15  # type: ignore[arg-type]
    assert log.get(0) == []
    assert len(log.get(100)) == 15  # type: ignore[arg-type]


def test_the_log_keeps_the_newest_max_len_entries_and_ids_go_on_after_reset() -> None:
    log = SlowLog(slower_than_us=0, max_len=3)
    for number in range(5):
        log.note([[b"GET", b"%d" % number]], 0.0, 0.0, "p", None)
    assert [entry[3] for entry in log.get(-1)] == [  # type: ignore[index,union-attr]
        [b"GET", b"4"],
        [b"GET", b"3"],
        [b"GET", b"2"],
    ]
    log.reset()
    assert len(log) == 0 and log.get(None) == []
    log.note([[b"PING"]], 0.0, 0.0, "p", None)
    assert log.get(None)[0][0] == 5  # type: ignore[index]


def test_a_negative_threshold_logs_nothing_and_zero_logs_everything() -> None:
    never = SlowLog(slower_than_us=-1)
    never.note([[b"GET", b"k"]], 3600.0, 0.0, "p", None)
    assert len(never) == 0
    always = SlowLog(slower_than_us=0)
    always.note([[b"GET", b"k"]], 0.0, 0.0, "p", None)
    assert len(always) == 1


def test_long_commands_and_long_words_are_cut_as_redis_cuts_them() -> None:
    many = [b"MSET", *[b"k%d" % number for number in range(40)]]
    kept = logged_words(many)
    assert len(kept) == SLOWLOG_ENTRY_MAX_ARGC
    assert kept[-1] == b"... (10 more arguments)"  # 41 words: 31 kept, 10 said
    assert kept[:-1] == tuple(many[: SLOWLOG_ENTRY_MAX_ARGC - 1])
    exactly = [b"MSET", *[b"k"] * (SLOWLOG_ENTRY_MAX_ARGC - 1)]
    assert logged_words(exactly) == tuple(exactly)  # 32 words: all kept
    value = b"v" * (SLOWLOG_ENTRY_MAX_STRING + 72)
    assert logged_words([b"SET", b"k", value])[2] == (
        b"v" * SLOWLOG_ENTRY_MAX_STRING + b"... (72 more bytes)"
    )


def test_passwords_never_enter_the_log() -> None:
    assert logged_words(words("AUTH secret")) == (b"AUTH", REDACTED)
    assert logged_words(words("AUTH default secret")) == (b"AUTH", REDACTED, REDACTED)
    assert logged_words(words("HELLO 3 SETNAME app AUTH default secret")) == (
        b"HELLO",
        b"3",
        b"SETNAME",
        b"app",
        b"AUTH",
        REDACTED,
        REDACTED,
    )
    # SETNAME's name is no secret, even when it reads "AUTH".
    assert logged_words(words("HELLO 3 SETNAME AUTH")) == tuple(words("HELLO 3 SETNAME AUTH"))
    assert logged_words(words("GET AUTH")) == (b"GET", b"AUTH")


def test_config_set_changes_the_threshold_and_keeps_the_newest_entries() -> None:
    log = SlowLog(slower_than_us=0, max_len=5)
    for number in range(5):
        log.note([[b"GET", b"%d" % number]], 0.0, 0.0, "p", None)
    log.configure(max_len=2)
    assert log.max_len == 2
    assert [entry[3] for entry in log.get(-1)] == [  # type: ignore[index,union-attr]
        [b"GET", b"4"],
        [b"GET", b"3"],
    ]
    log.configure(slower_than_us=-1)
    log.note([[b"GET", b"late"]], 99.0, 0.0, "p", None)
    assert len(log) == 2 and log.slower_than_us == -1
    log.configure(slower_than_us=1_000)
    log.note([[b"GET", b"fast"]], 0.000_999, 0.0, "p", None)
    log.note([[b"GET", b"slow"]], 0.001, 0.0, "p", None)
    assert log.get(1)[0][3] == [b"GET", b"slow"]  # type: ignore[index]


def test_config_set_of_a_password_setting_is_redacted() -> None:
    assert logged_words(words("CONFIG SET requirepass s3cret slowlog-max-len 5")) == (
        b"CONFIG",
        b"SET",
        b"requirepass",
        REDACTED,
        b"slowlog-max-len",
        b"5",
    )
