"""The Redis command table, parsing and refusals (a3redis.core.redis_commands)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from a3redis.core import redis_commands as rc
from a3redis.core.consistency import Consistency
from a3redis.core.errors import (
    ErrorKind,
    NodeUnavailableError,
    RequestError,
    TimedOutError,
    UnavailableError,
    UnsatisfiableError,
    WriteRejectedError,
)
from a3redis.core.expiry import NEVER, Condition, Expiry
from a3redis.core.redis_command_table import COMMAND_SPECS, CommandSpec
from a3redis.core.redis_session import command_docs, command_info
from a3redis.core.resp_values import ErrorReply, Status
from a3redis.core.validation import InvalidRequestError, ResponseTooLargeError


def words(text: str) -> list[bytes]:
    return [word.encode() for word in text.split()]


def parsed(text: str) -> rc.Command | ErrorReply:
    return rc.parse(words(text))


def every_spec() -> list[CommandSpec]:
    return [spec for top in COMMAND_SPECS for spec in (top, *top.subcommands)]


# ----- the table against Redis 7.2's own answers ---------------------------------------------


def statuses(*names: str) -> frozenset[Status]:
    return frozenset(Status(name) for name in names)


def range_spec(flags: frozenset[Status], lastkey: int, keystep: int) -> dict[object, object]:
    return {
        b"flags": flags,
        b"begin_search": {b"type": b"index", b"spec": {b"index": 1}},
        b"find_keys": {
            b"type": b"range",
            b"spec": {b"lastkey": lastkey, b"keystep": keystep, b"limit": 0},
        },
    }


# What redis-server 7.2 answers to COMMAND INFO, written out by hand.
REDIS_COMMAND_INFO = {
    "get": [
        b"get",
        2,
        statuses("readonly", "fast"),
        1,
        1,
        1,
        statuses("@read", "@string", "@fast"),
        frozenset(),
        [range_spec(statuses("RO", "access"), 0, 1)],
        frozenset(),
    ],
    "mset": [
        b"mset",
        -3,
        statuses("write", "denyoom"),
        1,
        -1,
        2,
        statuses("@write", "@string", "@slow"),
        frozenset({b"request_policy:multi_shard", b"response_policy:all_succeeded"}),
        [range_spec(statuses("OW", "update"), -1, 2)],
        frozenset(),
    ],
    "del": [
        b"del",
        -2,
        statuses("write"),
        1,
        -1,
        1,
        statuses("@keyspace", "@write", "@slow"),
        frozenset({b"request_policy:multi_shard", b"response_policy:agg_sum"}),
        [range_spec(statuses("RM", "delete"), -1, 1)],
        frozenset(),
    ],
    "scan": [
        b"scan",
        -2,
        statuses("readonly"),
        0,
        0,
        0,
        statuses("@keyspace", "@read", "@slow"),
        frozenset(
            {b"nondeterministic_output", b"request_policy:special", b"response_policy:special"}
        ),
        [],
        frozenset(),
    ],
    "ping": [
        b"ping",
        -1,
        statuses("fast"),
        0,
        0,
        0,
        statuses("@fast", "@connection"),
        frozenset({b"request_policy:all_shards", b"response_policy:all_succeeded"}),
        [],
        frozenset(),
    ],
}


@pytest.mark.parametrize("name", sorted(REDIS_COMMAND_INFO))
def test_command_info_is_what_redis_7_answers(name: str) -> None:
    spec = rc.spec_named(name.encode())
    assert spec is not None
    assert command_info(spec) == REDIS_COMMAND_INFO[name]


def test_a_container_lists_its_subcommands_with_their_own_full_names_and_arity() -> None:
    spec = rc.spec_named(b"CLIENT")
    assert spec is not None
    info = command_info(spec)
    assert isinstance(info, list)
    assert info[:7] == [b"client", -2, frozenset(), 0, 0, 0, statuses("@slow")]
    subcommands = info[9]
    assert isinstance(subcommands, list)
    setname = next(
        sub for sub in subcommands if isinstance(sub, list) and sub[0] == b"client|setname"
    )
    assert setname[1:7] == [
        3,
        statuses("noscript", "loading", "stale"),
        0,
        0,
        0,
        statuses("@slow", "@connection"),
    ]


def test_command_docs_of_get_is_redis_7s() -> None:
    spec = rc.spec_named(b"get")
    assert spec is not None
    assert command_docs(spec) == {
        b"summary": b"Returns the string value of a key.",
        b"since": b"1.0.0",
        b"group": b"string",
        b"complexity": b"O(1)",
        b"arguments": [
            {b"name": b"key", b"type": b"key", b"display_text": b"key", b"key_spec_index": 0}
        ],
    }


def test_command_docs_show_nested_arguments_tokens_flags_and_history() -> None:
    spec = rc.spec_named(b"set")
    assert spec is not None
    docs: Any = command_docs(spec)
    assert docs[b"history"][0] == [b"2.6.12", b"Added the `EX`, `PX`, `NX` and `XX` options."]
    condition = docs[b"arguments"][2]
    assert condition[b"name"] == b"condition"
    assert condition[b"type"] == b"oneof"
    assert b"display_text" not in condition
    assert condition[b"flags"] == statuses("optional")
    assert condition[b"arguments"][0] == {
        b"name": b"nx",
        b"type": b"pure-token",
        b"display_text": b"nx",
        b"token": b"NX",
    }


def test_key_positions_every_cluster_client_needs_are_redis_s() -> None:
    # redis-py's RedisCluster routes by (first key, last key, step) and the flags.
    expected = {
        "get": (1, 1, 1),
        "set": (1, 1, 1),
        "mget": (1, -1, 1),
        "mset": (1, -1, 2),
        "del": (1, -1, 1),
        "unlink": (1, -1, 1),
        "exists": (1, -1, 1),
        "type": (1, 1, 1),
        "strlen": (1, 1, 1),
        "getrange": (1, 1, 1),
        "touch": (1, -1, 1),
        "incr": (1, 1, 1),
        "msetnx": (1, -1, 2),
        "watch": (1, -1, 1),
        "keys": (0, 0, 0),
        "scan": (0, 0, 0),
        "a3.consistency": (0, 0, 0),
    }
    for name, positions in expected.items():
        spec = rc.spec_named(name.encode())
        assert spec is not None
        assert (spec.first_key, spec.last_key, spec.step) == positions, name


def test_other_data_types_are_not_in_the_table() -> None:
    for name in (b"lpush", b"sadd", b"hset", b"zadd", b"xadd", b"publish", b"eval"):
        assert rc.spec_named(name) is None


def test_spec_named_takes_full_names_in_any_case() -> None:
    assert rc.spec_named(b"CLIENT|SetName") is rc.SUBCOMMANDS[b"client"][b"setname"]
    assert rc.spec_named(b"client|nope") is None
    assert rc.spec_named(b"nope|setname") is None


# ----- unknown commands and arity ---------------------------------------------------------------


def test_an_unknown_command_is_answered_in_redis_s_exact_words() -> None:
    assert parsed("foo a b") == ErrorReply(
        "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
    )
    assert parsed("LPUSH list x") == ErrorReply(
        "ERR unknown command 'LPUSH', with args beginning with: 'list' 'x' "
    )
    assert parsed("nothing") == ErrorReply(
        "ERR unknown command 'nothing', with args beginning with: "
    )


def test_an_unknown_command_s_arguments_are_cut_after_128_bytes_and_kept_on_one_line() -> None:
    reply = rc.parse([b"x" * 200, b"a" * 100, b"b" * 100, b"c", b"new\r\nline"])
    assert reply == ErrorReply(
        "ERR unknown command '"
        + "x" * 128
        + "', with args beginning with: '"
        + "a" * 100
        + "' '"
        + "b" * 25  # 128 less the 103 bytes already written
        + "' "
    )
    reply = rc.parse([b"foo", b"new\r\nline"])
    assert reply == ErrorReply("ERR unknown command 'foo', with args beginning with: 'new  line' ")


def test_an_unknown_subcommand_names_the_container_s_help() -> None:
    assert parsed("client maint_notifications on") == ErrorReply(
        "ERR unknown subcommand 'maint_notifications'. Try CLIENT HELP."
    )
    assert parsed("config rewrite") == ErrorReply(
        "ERR unknown subcommand 'rewrite'. Try CONFIG HELP."
    )


def test_an_empty_request_is_an_unknown_command() -> None:
    assert isinstance(rc.parse([]), ErrorReply)


def arity_violations(spec: CommandSpec) -> list[list[bytes]]:
    """Requests with one word too many (exact arity) or one too few, that still reach `spec`."""
    name = [part.encode() for part in spec.name.split("|")]
    least = abs(spec.arity)
    requests = []
    if spec.arity > 0:
        requests.append(name + [b"x"] * (least + 1 - len(name)))
    if least - 1 >= len(name) and (len(name) == 1 or least - 1 >= 2):
        requests.append(name + [b"x"] * (least - 1 - len(name)))
    return requests


@pytest.mark.parametrize("spec", every_spec(), ids=lambda spec: spec.name)
def test_every_arity_error_is_redis_s(spec: CommandSpec) -> None:
    violations = arity_violations(spec)
    for request in violations:
        assert rc.parse(request) == ErrorReply(
            f"ERR wrong number of arguments for '{spec.name}' command"
        ), request


def test_arity_errors_are_checked_for_commands_with_at_least_one_violation() -> None:
    # Only "at least the name" arities have none: PING (-1), CLIENT LIST (-2), ...
    untestable = {spec.name for spec in every_spec() if not arity_violations(spec)}
    assert untestable == {
        "client|list",
        "command|info",
        "command|docs",
        "command|list",
        "function|flush",
        "script|flush",
        "ping",
        "quit",
        "hello",
        "command",
        "info",
        "flushall",
        "flushdb",
        "bgsave",
        "shutdown",
        "slowlog|get",
        "a3.consistency",
    }


def test_a_container_without_a_subcommand_is_an_arity_error() -> None:
    assert parsed("CLIENT") == ErrorReply("ERR wrong number of arguments for 'client' command")
    assert parsed("cluster") == ErrorReply("ERR wrong number of arguments for 'cluster' command")


def test_arity_errors_of_the_commands_that_check_more_than_the_table() -> None:
    assert parsed("PING a b") == ErrorReply("ERR wrong number of arguments for 'ping' command")
    assert parsed("MSET a 1 b") == ErrorReply("ERR wrong number of arguments for 'mset' command")


# ----- parsing every command ------------------------------------------------------------------


PARSED = [
    ("GET k", rc.Get(b"k")),
    ("get k", rc.Get(b"k")),
    ("SET k v", rc.Set(b"k", b"v")),
    ("sEt k v", rc.Set(b"k", b"v")),
    ("MGET a b a", rc.MGet((b"a", b"b", b"a"))),
    ("MSET a 1 b 2", rc.MSet(((b"a", b"1"), (b"b", b"2")))),
    ("DEL a b", rc.Del((b"a", b"b"))),
    ("unlink a", rc.Del((b"a",))),
    ("EXISTS a a", rc.Exists((b"a", b"a"))),
    ("TYPE k", rc.Type(b"k")),
    ("STRLEN k", rc.Strlen(b"k")),
    ("GETRANGE k -3 -1", rc.GetRange(b"k", -3, -1)),
    ("SUBSTR k 1 2", rc.GetRange(b"k", 1, 2)),  # GETRANGE's old name
    ("KEYS user:*", rc.Keys(b"user:*")),
    ("SCAN 0", rc.Scan(0, None, 10, None)),
    ("scan 17 match a* count 100 type string", rc.Scan(17, b"a*", 100, b"string")),
    ("SCAN 0 COUNT 5 COUNT 7", rc.Scan(0, None, 7, None)),
    ("RANDOMKEY", rc.RandomKey()),
    ("TOUCH a b", rc.Touch((b"a", b"b"))),
    ("FLUSHALL", rc.Flush("flushall", None)),
    ("flushdb async", rc.Flush("flushdb", True)),
    ("FLUSHALL SYNC", rc.Flush("flushall", False)),
    ("DBSIZE", rc.DbSize()),
    ("PING", rc.Ping(None)),
    ("ping hello", rc.Ping(b"hello")),
    ("ECHO hi", rc.Echo(b"hi")),
    ("QUIT", rc.Quit()),
    ("RESET", rc.Reset()),
    ("HELLO", rc.Hello(None, None, None, None)),
    ("hello 3", rc.Hello(3, None, None, None)),
    ("HELLO 2 AUTH default pw SETNAME app", rc.Hello(2, b"default", b"pw", b"app")),
    ("hello 3 setname app auth u p", rc.Hello(3, b"u", b"p", b"app")),
    ("AUTH pw", rc.Auth(None, b"pw")),
    ("AUTH user pw", rc.Auth(b"user", b"pw")),
    ("SELECT 0", rc.Select(0)),
    ("SELECT 5", rc.Select(5)),
    ("CLIENT SETNAME app", rc.ClientSetName(b"app")),
    ("client getname", rc.ClientGetName()),
    ("CLIENT ID", rc.ClientId()),
    ("CLIENT SETINFO LIB-NAME redis-py", rc.ClientSetInfo("lib-name", b"redis-py")),
    ("client setinfo lib-ver 8.2.0", rc.ClientSetInfo("lib-ver", b"8.2.0")),
    ("CLIENT INFO", rc.ClientInfo()),
    ("CLIENT LIST", rc.ClientList(None, None)),
    ("client list type NORMAL", rc.ClientList(b"normal", None)),
    ("client list type slave", rc.ClientList(b"replica", None)),
    ("CLIENT LIST ID 3 4", rc.ClientList(None, (3, 4))),
    ("CLIENT NO-EVICT on", rc.ClientNoEvict(True)),
    ("CLIENT NO-TOUCH OFF", rc.ClientNoTouch(False)),
    ("CLIENT REPLY Skip", rc.ClientReply("skip")),
    ("CLIENT HELP", rc.Help("client")),
    ("COMMAND", rc.CommandTable()),
    ("COMMAND COUNT", rc.CommandCount()),
    ("COMMAND INFO", rc.CommandInfo(())),
    ("command info get set", rc.CommandInfo((b"get", b"set"))),
    ("COMMAND DOCS", rc.CommandDocs(())),
    ("COMMAND DOCS get", rc.CommandDocs((b"get",))),
    ("COMMAND LIST", rc.CommandList(None, b"")),
    ("COMMAND LIST FILTERBY ACLCAT read", rc.CommandList("aclcat", b"read")),
    ("command list filterby pattern cl*", rc.CommandList("pattern", b"cl*")),
    ("COMMAND HELP", rc.Help("command")),
    ("CONFIG GET save appendonly", rc.ConfigGet((b"save", b"appendonly"))),
    ("CONFIG HELP", rc.Help("config")),
    ("INFO", rc.Info(())),
    ("info server Keyspace", rc.Info((b"server", b"Keyspace"))),
    ("TIME", rc.Time()),
    ("LASTSAVE", rc.LastSave()),
    ("FUNCTION FLUSH", rc.NothingToFlush("function")),
    ("function flush async", rc.NothingToFlush("function")),
    ("SCRIPT FLUSH SYNC", rc.NothingToFlush("script")),
    ("SCRIPT HELP", rc.Help("script")),
    ("CLUSTER SLOTS", rc.Cluster("slots", ())),
    ("cluster keyslot foo", rc.Cluster("keyslot", (b"foo",))),
    ("CLUSTER INFO", rc.Cluster("info", ())),
    ("CLUSTER SHARDS", rc.Cluster("shards", ())),
    ("CLUSTER NODES", rc.Cluster("nodes", ())),
    ("CLUSTER MYID", rc.Cluster("myid", ())),
    ("CLUSTER MYSHARDID", rc.Cluster("myshardid", ())),
    ("CLUSTER HELP", rc.Help("cluster")),
    ("READONLY", rc.ReadOnly()),
    ("readwrite", rc.ReadWrite()),
    ("A3.CONSISTENCY", rc.SetConsistency(None, None)),
    ("a3.consistency read ONE", rc.SetConsistency(Consistency.ONE, None)),
    (
        "A3.CONSISTENCY WRITE all READ quorum",
        rc.SetConsistency(Consistency.QUORUM, Consistency.ALL),
    ),
    ("A3.CONSISTENCY READ consistency_local", rc.SetConsistency(Consistency.LOCAL, None)),
]


@pytest.mark.parametrize(("text", "command"), PARSED, ids=[text for text, _ in PARSED])
def test_every_command_is_parsed(text: str, command: rc.Command) -> None:
    assert parsed(text) == command


def test_names_and_options_are_case_insensitive_but_keys_and_values_are_not() -> None:
    assert parsed("gEt Key") == rc.Get(b"Key")
    assert parsed("ScAn 0 MaTcH A* cOuNt 3") == rc.Scan(0, b"A*", 3, None)


def test_keys_and_values_are_binary_safe() -> None:
    key, value = b"\x00\xff\r\n key", b"\x80" * 3
    assert rc.parse([b"SET", key, value]) == rc.Set(key, value)
    assert rc.parse([b"GET", key]) == rc.Get(key)


def test_every_parsed_command_is_named_as_the_table_names_it() -> None:
    assert rc.parse_named(words("client setname x")) == ("client|setname", rc.ClientSetName(b"x"))
    assert rc.parse_named(words("UNLINK a"))[0] == "unlink"
    assert rc.parse_named(words("GET"))[0] == "get"  # an arity error still has its name
    assert rc.parse_named(words("INCR a"))[0] == "incr"
    assert rc.parse_named(words("lpush a b"))[0] == rc.UNKNOWN
    assert rc.parse_named(words("client nope"))[0] == rc.UNKNOWN


# ----- argument errors, as Redis words them -------------------------------------------------------

ARGUMENT_ERRORS = [
    ("GETRANGE k a 1", "ERR value is not an integer or out of range"),
    ("SUBSTR k a 1", "ERR value is not an integer or out of range"),
    ("GETRANGE k 0 01", "ERR value is not an integer or out of range"),
    ("GETRANGE k 0 9223372036854775808", "ERR value is not an integer or out of range"),
    ("SCAN x", "ERR invalid cursor"),
    ("SCAN 18446744073709551616", "ERR invalid cursor"),
    ("SCAN 0 COUNT 0", "ERR syntax error"),
    ("SCAN 0 COUNT x", "ERR value is not an integer or out of range"),
    ("SCAN 0 MATCH", "ERR syntax error"),
    ("SCAN 0 LIMIT 3", "ERR syntax error"),
    ("SET k v BOGUS", "ERR syntax error"),
    ("SET k v EX", "ERR syntax error"),
    ("FLUSHALL LATER", "ERR syntax error"),
    ("FLUSHDB SYNC ASYNC", "ERR syntax error"),
    ("HELLO x", "ERR Protocol version is not an integer or out of range"),
    ("HELLO 1", "NOPROTO unsupported protocol version"),
    ("HELLO 4", "NOPROTO unsupported protocol version"),
    ("HELLO 3 AUTH onlyuser", "ERR Syntax error in HELLO option 'AUTH'"),
    ("HELLO 3 BOGUS", "ERR Syntax error in HELLO option 'BOGUS'"),
    (
        "HELLO 3 SETNAME \x01",
        "ERR Client names cannot contain spaces, newlines or special characters.",
    ),
    ("AUTH a b c", "ERR syntax error"),
    ("SELECT x", "ERR value is not an integer or out of range"),
    ("SELECT 2147483648", "ERR value is out of range"),
    (
        "CLIENT SETNAME a\x7fb",
        "ERR Client names cannot contain spaces, newlines or special characters.",
    ),
    ("CLIENT SETINFO lib-colour red", "ERR Unrecognized option 'lib-colour'"),
    (
        "CLIENT SETINFO LIB-NAME caf\xe9",
        "ERR LIB-NAME cannot contain spaces, newlines or special characters.",
    ),
    ("CLIENT REPLY maybe", "ERR syntax error"),
    ("CLIENT NO-EVICT yes", "ERR syntax error"),
    ("CLIENT NO-TOUCH yes", "ERR syntax error"),
    ("CLIENT LIST TYPE robot", "ERR Unknown client type 'robot'"),
    ("CLIENT LIST ID x", "ERR Invalid client ID"),
    ("CLIENT LIST bogus", "ERR syntax error"),
    ("COMMAND LIST FILTERBY colour red", "ERR syntax error"),
    ("COMMAND LIST FILTERBY aclcat", "ERR syntax error"),
    ("COMMAND LIST bogus x y", "ERR syntax error"),
    ("FUNCTION FLUSH later", "ERR FUNCTION FLUSH only supports SYNC|ASYNC option"),
    (
        "FUNCTION FLUSH a b",
        "ERR unknown subcommand or wrong number of arguments for 'FLUSH'. Try FUNCTION HELP.",
    ),
    ("SCRIPT FLUSH later", "ERR SCRIPT FLUSH only support SYNC|ASYNC option"),
]


@pytest.mark.parametrize(("text", "expected"), ARGUMENT_ERRORS, ids=[t for t, _ in ARGUMENT_ERRORS])
def test_argument_errors_are_redis_s(text: str, expected: str) -> None:
    request = [word.encode("latin-1") for word in text.split()]
    assert rc.parse(request) == ErrorReply(expected)


def test_a3_consistency_refuses_unknown_levels_and_bad_syntax() -> None:
    unknown = parsed("A3.CONSISTENCY READ most")
    assert isinstance(unknown, ErrorReply)
    assert unknown.text.startswith("ERR unknown consistency level 'most'")
    for text in ("A3.CONSISTENCY READ", "A3.CONSISTENCY SPEED one", "A3.CONSISTENCY one"):
        reply = parsed(text)
        assert isinstance(reply, ErrorReply)
        assert reply.text.startswith("ERR syntax error; expected A3.CONSISTENCY")


@pytest.mark.parametrize(
    ("word", "cursor"),
    [
        (b"0", 0),
        (b"42", 42),
        (b"18446744073709551615", 2**64 - 1),
        (b"+7", 7),
        (b"-1", 2**64 - 1),  # strtoul wraps a negative, as Redis reads it
        (b"", 0),  # strtoul reads nothing as 0
        (b"007", 7),
    ],
)
def test_scan_cursors_are_read_as_redis_reads_them(word: bytes, cursor: int) -> None:
    assert rc.parse_scan_cursor(word) == cursor


@pytest.mark.parametrize(
    "word", [b" 1", b"1 ", b"1x", b"+", b"-", b"0x10", b"18446744073709551616"]
)
def test_bad_scan_cursors_are_refused(word: bytes) -> None:
    assert rc.parse_scan_cursor(word) is None


@pytest.mark.parametrize(
    ("word", "value"),
    [
        (b"0", 0),
        (b"-5", -5),
        (b"9223372036854775807", 2**63 - 1),
        (b"-9223372036854775808", -(2**63)),
    ],
)
def test_integers_are_read_as_redis_string2ll_reads_them(word: bytes, value: int) -> None:
    assert rc.parse_int64(word) == value


@pytest.mark.parametrize(
    "word", [b"", b"-", b"-0", b"01", b"+1", b" 1", b"1.0", b"9223372036854775808"]
)
def test_integers_redis_refuses_are_refused(word: bytes) -> None:
    assert rc.parse_int64(word) is None


# ----- refusals --------------------------------------------------------------------------------

READ_MODIFY_WRITE = [
    "INCR k",
    "INCRBY k 2",
    "INCRBYFLOAT k 1.5",
    "DECR k",
    "DECRBY k 2",
    "APPEND k v",
    "SETRANGE k 0 v",
    "SETNX k v",
    "GETSET k v",
    "GETDEL k",
    "MSETNX a 1 b 2",
]
TRANSACTIONS = ["WATCH k", "UNWATCH", "MULTI", "EXEC", "DISCARD"]


def refused(text: str) -> str:
    reply = parsed(text)
    assert isinstance(reply, ErrorReply), text
    assert reply.code == "ERR", reply
    return reply.text


@pytest.mark.parametrize("text", READ_MODIFY_WRITE)
def test_read_modify_write_commands_are_refused_with_why_and_what_instead(text: str) -> None:
    message = refused(text.lower())
    name = text.split()[0]
    assert message.startswith(f"ERR {name} is not supported: ")
    assert "last-write-wins" in message
    assert "atomic" in message
    assert "GET" in message or "SET" in message  # what to use instead


@pytest.mark.parametrize("text", TRANSACTIONS)
def test_transactions_are_refused_naming_redis_py_s_pipeline_without_transaction(text: str) -> None:
    message = refused(text)
    assert message.startswith(f"ERR {text.split()[0]} is not supported: ")
    assert "last-write-wins" in message
    assert "pipeline(transaction=False)" in message


@pytest.mark.parametrize("option", ["NX", "xx", "GET"])
def test_set_with_a_read_modify_write_option_is_refused(option: str) -> None:
    message = refused(f"SET k v {option}")
    assert message.startswith(f"ERR SET {option.upper()} is not supported: ")
    assert "last-write-wins" in message


def test_refused_commands_are_still_checked_for_arity_first() -> None:
    assert parsed("INCR") == ErrorReply("ERR wrong number of arguments for 'incr' command")


def test_debug_is_refused_with_the_reason() -> None:
    message = refused("DEBUG SLEEP 0")
    assert message.startswith("ERR DEBUG is not supported: ")


@pytest.mark.parametrize("text", ["RENAME a b", "RENAMENX a b", "COPY a b", "copy a b REPLACE"])
def test_moving_a_key_is_refused_with_why_and_what_instead(text: str) -> None:
    message = refused(text)
    assert message.startswith(f"ERR {text.split()[0].upper()} is not supported: ")
    assert "last-write-wins" in message and "SET it under the new name" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Redis's own texts in cluster mode (db.c), as a3redis reports redis_mode:cluster.
        ("MOVE k 1", "ERR MOVE is not allowed in cluster mode"),
        ("SWAPDB 0 1", "ERR SWAPDB is not allowed in cluster mode"),
    ],
)
def test_other_databases_are_refused_as_a_redis_cluster_refuses_them(
    text: str, expected: str
) -> None:
    assert parsed(text) == ErrorReply(expected)


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("WAIT 1 0", "A3.CONSISTENCY WRITE all"),
        ("WAITAOF 1 1 0", "A3.CONSISTENCY WRITE all"),
        ("SHUTDOWN NOSAVE", "SIGTERM"),
        ("SHUTDOWN", "cluster decommission"),
    ],
)
def test_waiting_for_replicas_and_shutting_down_are_refused_saying_what_to_do(
    text: str, hint: str
) -> None:
    message = refused(text)
    assert message.startswith(f"ERR {text.split()[0]} is not supported")
    assert hint in message


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("ROLE", rc.ReplicationRole()),
        ("SAVE", rc.Save(background=False)),
        ("BGSAVE", rc.Save(background=True)),
        ("bgsave schedule", rc.Save(background=True)),
        ("MEMORY USAGE k", rc.MemoryUsage(b"k")),
        ("MEMORY USAGE k SAMPLES 0", rc.MemoryUsage(b"k")),
        ("memory usage k samples 5", rc.MemoryUsage(b"k")),
        ("MEMORY HELP", rc.Help("memory")),
        ("SLOWLOG GET", rc.SlowLogGet(None)),
        ("SLOWLOG GET 0", rc.SlowLogGet(0)),
        ("SLOWLOG GET -1", rc.SlowLogGet(-1)),
        ("slowlog get 25", rc.SlowLogGet(25)),
        ("SLOWLOG LEN", rc.SlowLogLen()),
        ("SLOWLOG RESET", rc.SlowLogReset()),
        ("SLOWLOG HELP", rc.Help("slowlog")),
        ("CONFIG SET a 1", rc.ConfigSet(((b"a", b"1"),))),
        ("OBJECT ENCODING k", rc.ObjectInfo(b"k", "encoding")),
        ("object Freq k", rc.ObjectInfo(b"k", "freq")),
        ("OBJECT HELP", rc.Help("object")),
        ("MODULE LIST", rc.ModuleList()),
        ("MODULE HELP", rc.Help("module")),
        ("config set a 1 B 2", rc.ConfigSet(((b"a", b"1"), (b"B", b"2")))),
    ],
)
def test_role_save_memory_usage_and_slowlog_are_parsed(text: str, command: rc.Command) -> None:
    assert parsed(text) == command


# What redis-server 7 answers, word for word (object.c, slowlog.c, rdb.c).
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("BGSAVE NOW", "ERR syntax error"),
        ("MEMORY USAGE k SAMPLES", "ERR syntax error"),
        ("MEMORY USAGE k SAMPLES -1", "ERR syntax error"),
        ("MEMORY USAGE k SAMPLES x", "ERR value is not an integer or out of range"),
        ("MEMORY USAGE k FAST", "ERR syntax error"),
        ("MEMORY DOCTOR", "ERR unknown subcommand 'DOCTOR'. Try MEMORY HELP."),
        ("SLOWLOG GET -2", "ERR count should be greater than or equal to -1"),
        ("SLOWLOG GET x", "ERR count should be greater than or equal to -1"),
        (
            "SLOWLOG get 1 2",
            "ERR unknown subcommand or wrong number of arguments for 'get'. Try SLOWLOG HELP.",
        ),
        ("SLOWLOG LEN 1", "ERR wrong number of arguments for 'slowlog|len' command"),
        ("ROLE x", "ERR wrong number of arguments for 'role' command"),
        ("CONFIG SET a 1 b", "ERR syntax error"),
        ("CONFIG SET a", "ERR wrong number of arguments for 'config|set' command"),
        ("OBJECT BOGUS k", "ERR unknown subcommand 'BOGUS'. Try OBJECT HELP."),
        ("OBJECT ENCODING", "ERR wrong number of arguments for 'object|encoding' command"),
        ("MODULE LOAD x", "ERR unknown subcommand 'LOAD'. Try MODULE HELP."),
    ],
)
def test_role_save_memory_and_slowlog_errors_are_redis_s(text: str, expected: str) -> None:
    assert parsed(text) == ErrorReply(expected)


@pytest.mark.parametrize(
    ("text", "command"),
    [
        (
            "CLIENT KILL 127.0.0.1:5000",
            rc.ClientKill(b"127.0.0.1:5000", skip_me=False, old_form=True),
        ),
        ("CLIENT KILL ID 7", rc.ClientKill(client_id=7)),
        (
            "client kill addr 10.0.0.1:9 laddr 127.0.0.1:6380 skipme no",
            rc.ClientKill(addr=b"10.0.0.1:9", laddr=b"127.0.0.1:6380", skip_me=False),
        ),
        ("CLIENT KILL TYPE slave", rc.ClientKill(type=b"replica")),
        ("CLIENT KILL TYPE Normal USER default", rc.ClientKill(type=b"normal", user=b"default")),
        ("CLIENT KILL ID 3 ID 4", rc.ClientKill(client_id=4)),  # the last one counts
    ],
)
def test_client_kill_is_parsed_as_redis_7_2_reads_it(text: str, command: rc.Command) -> None:
    assert parsed(text) == command


# What redis-server 7.2 answers (networking.c, clientCommand).
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CLIENT KILL ID 0", "ERR client-id should be greater than 0"),
        ("CLIENT KILL ID x", "ERR client-id should be greater than 0"),
        ("CLIENT KILL TYPE robot", "ERR Unknown client type 'robot'"),
        ("CLIENT KILL USER alice", "ERR No such user 'alice'"),
        ("CLIENT KILL SKIPME maybe", "ERR syntax error"),
        ("CLIENT KILL ID 1 ADDR", "ERR syntax error"),
        ("CLIENT KILL COLOR red", "ERR syntax error"),
        ("CLIENT KILL", "ERR wrong number of arguments for 'client|kill' command"),
    ],
)
def test_client_kill_errors_are_redis_s(text: str, expected: str) -> None:
    assert parsed(text) == ErrorReply(expected)


def test_every_table_entry_parses_without_an_internal_error() -> None:
    # Each entry, given enough words, is either a command or an error reply.
    for spec in every_spec():
        request = [part.encode() for part in spec.name.split("|")]
        request += [b"1"] * max(0, abs(spec.arity) - len(request))
        result = rc.parse(request)
        assert result is not None, spec.name


@given(
    st.lists(st.binary(max_size=12), min_size=1, max_size=8),
    st.sampled_from([spec.name.split("|")[0] for spec in COMMAND_SPECS]),
    st.booleans(),
)
def test_any_request_parses_to_a_command_or_an_error_reply(
    rest: list[bytes], name: str, upper: bool
) -> None:
    request = [(name.upper() if upper else name).encode(), *rest]
    result = rc.parse(request)
    assert result is not None


# ----- RequestError -> RESP error ---------------------------------------------------------------


def test_every_error_kind_has_a_resp_code() -> None:
    assert set(rc.RESP_ERROR_CODE_OF_KIND) == set(ErrorKind)


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (InvalidRequestError("key must not be empty"), "ERR key must not be empty"),
        (
            ResponseTooLargeError("the answer would exceed 16 MB"),
            "ERR the answer would exceed 16 MB",
        ),
        (WriteRejectedError("a newer version exists"), "ERR a newer version exists"),
        (UnsatisfiableError("ALL needs 3 nodes"), "ERR ALL needs 3 nodes"),
        (UnavailableError("1 of 2 replicas alive"), "TRYAGAIN 1 of 2 replicas alive"),
        (TimedOutError("no answer in 2 s"), "TRYAGAIN no answer in 2 s"),
        (NodeUnavailableError("draining"), "LOADING draining"),
    ],
)
def test_request_errors_become_resp_errors_through_one_table(
    failure: Exception, expected: str
) -> None:
    assert isinstance(failure, RequestError)
    assert rc.error_reply(failure) == ErrorReply(expected)


def test_an_error_message_with_line_breaks_stays_on_one_line() -> None:
    assert rc.error_reply(UnavailableError("a\r\nb")) == ErrorReply("TRYAGAIN a  b")


# ----- expiry --------------------------------------------------------------------------------

ALWAYS = (Condition.ALWAYS,)
PAST = Expiry(at_ms=1)  # EXPIRE's time already past: the key is deleted
EXPIRY_PARSED = [
    ("SET k v EX 10", rc.Set(b"k", b"v", Expiry(ttl_ms=10_000))),
    ("set k v px 250", rc.Set(b"k", b"v", Expiry(ttl_ms=250))),
    ("SET k v EXAT 1700000000", rc.Set(b"k", b"v", Expiry(at_ms=1_700_000_000_000))),
    ("SET k v PXAT 1700000000123", rc.Set(b"k", b"v", Expiry(at_ms=1_700_000_000_123))),
    ("SET k v EX 10 ex 20", rc.Set(b"k", b"v", Expiry(ttl_ms=20_000))),  # the last counts
    ("SET k v KEEPTTL", rc.SetKeepTtl(b"k", b"v")),
    ("SET k v keepttl KEEPTTL", rc.SetKeepTtl(b"k", b"v")),
    ("SETEX k 10 v", rc.Set(b"k", b"v", Expiry(ttl_ms=10_000))),
    ("PSETEX k 10 v", rc.Set(b"k", b"v", Expiry(ttl_ms=10))),
    ("GETEX k", rc.Get(b"k")),
    ("GETEX k EX 10", rc.GetEx(b"k", Expiry(ttl_ms=10_000))),
    ("GETEX k PX 10", rc.GetEx(b"k", Expiry(ttl_ms=10))),
    ("GETEX k EXAT 2", rc.GetEx(b"k", Expiry(at_ms=2000))),
    ("GETEX k PXAT 2", rc.GetEx(b"k", Expiry(at_ms=2))),
    ("GETEX k PERSIST", rc.GetEx(b"k", None)),
    ("EXPIRE k 10", rc.Expire(b"k", Expiry(ttl_ms=10_000), ALWAYS)),
    ("PEXPIRE k 10", rc.Expire(b"k", Expiry(ttl_ms=10), ALWAYS)),
    ("EXPIREAT k 10", rc.Expire(b"k", Expiry(at_ms=10_000), ALWAYS)),
    ("PEXPIREAT k 10", rc.Expire(b"k", Expiry(at_ms=10), ALWAYS)),
    ("EXPIRE k 0", rc.Expire(b"k", PAST, ALWAYS)),
    ("EXPIRE k -5", rc.Expire(b"k", PAST, ALWAYS)),
    ("PEXPIREAT k -5", rc.Expire(b"k", PAST, ALWAYS)),
    ("EXPIRE k 10 nx", rc.Expire(b"k", Expiry(ttl_ms=10_000), (Condition.NX,))),
    ("EXPIRE k 10 XX", rc.Expire(b"k", Expiry(ttl_ms=10_000), (Condition.XX,))),
    ("EXPIRE k 10 GT", rc.Expire(b"k", Expiry(ttl_ms=10_000), (Condition.GT,))),
    ("EXPIRE k 10 LT lt", rc.Expire(b"k", Expiry(ttl_ms=10_000), (Condition.LT,))),
    ("EXPIRE k 10 XX LT", rc.Expire(b"k", Expiry(ttl_ms=10_000), (Condition.XX, Condition.LT))),
    ("PERSIST k", rc.Persist(b"k")),
    ("TTL k", rc.Ttl(b"k", milliseconds=False, absolute=False)),
    ("PTTL k", rc.Ttl(b"k", milliseconds=True, absolute=False)),
    ("EXPIRETIME k", rc.Ttl(b"k", milliseconds=False, absolute=True)),
    ("PEXPIRETIME k", rc.Ttl(b"k", milliseconds=True, absolute=True)),
]


@pytest.mark.parametrize(("text", "command"), EXPIRY_PARSED, ids=[t for t, _ in EXPIRY_PARSED])
def test_every_expiry_command_and_option_is_parsed(text: str, command: rc.Command) -> None:
    assert parsed(text) == command


def test_a_set_without_an_expiry_never_expires() -> None:
    assert parsed("SET k v") == rc.Set(b"k", b"v", NEVER)


INVALID_SET = "ERR invalid expire time in 'set' command"
INTEGER = "ERR value is not an integer or out of range"
SYNTAX = "ERR syntax error"
EXPIRY_ERRORS = [
    # What redis-server 7 answers, word for word (the node test compares a live one).
    ("SET k v EX 0", INVALID_SET),
    ("SET k v PX -1", INVALID_SET),
    ("SET k v EXAT 0", INVALID_SET),
    ("SET k v EX 9223372036854776", INVALID_SET),  # overflows in milliseconds
    ("SET k v EX x", INTEGER),
    ("SET k v PX 1.5", INTEGER),
    ("SET k v EX 10 PX 10", SYNTAX),
    ("SET k v EX 10 KEEPTTL", SYNTAX),
    ("SET k v KEEPTTL PXAT 10", SYNTAX),
    ("SET k v EXAT 10 EX 10", SYNTAX),
    ("SET k v EX", SYNTAX),
    ("SET k v PERSIST", SYNTAX),
    ("SET k v NX XX", SYNTAX),
    ("SET k v NX EX 0", INVALID_SET),  # the time is checked before the refusal
    ("SETEX k 0 v", "ERR invalid expire time in 'setex' command"),
    ("PSETEX k -1 v", "ERR invalid expire time in 'psetex' command"),
    ("SETEX k x v", INTEGER),
    ("GETEX k EX 10 PERSIST", SYNTAX),
    ("GETEX k PERSIST PX 10", SYNTAX),
    ("GETEX k KEEPTTL", SYNTAX),
    ("GETEX k NX", SYNTAX),
    ("GETEX k EX", SYNTAX),
    ("EXPIRE k 10 NX XX", "ERR NX and XX, GT or LT options at the same time are not compatible"),
    ("EXPIRE k 10 GT NX", "ERR NX and XX, GT or LT options at the same time are not compatible"),
    ("EXPIRE k 10 GT LT", "ERR GT and LT options at the same time are not compatible"),
    ("EXPIRE k 10 SOON", "ERR Unsupported option SOON"),
    ("EXPIRE k x", INTEGER),
    ("EXPIRE k 10 x", "ERR Unsupported option x"),  # options are checked first
    ("EXPIRE k 9223372036854776", "ERR invalid expire time in 'expire' command"),
    ("EXPIREAT k -9223372036854776", "ERR invalid expire time in 'expireat' command"),
]


@pytest.mark.parametrize(("text", "expected"), EXPIRY_ERRORS, ids=[t for t, _ in EXPIRY_ERRORS])
def test_expiry_errors_are_redis_s(text: str, expected: str) -> None:
    assert parsed(text) == ErrorReply(expected)


def test_getex_keeps_a_bad_time_to_answer_once_the_key_is_found() -> None:
    invalid = ErrorReply("ERR invalid expire time in 'getex' command")
    assert parsed("GETEX k EX 0") == rc.GetEx(b"k", Expiry(), invalid)
    assert parsed("GETEX k PXAT x") == rc.GetEx(b"k", Expiry(), ErrorReply(INTEGER))
    assert parsed("GETEX k EXAT -1") == rc.GetEx(b"k", Expiry(), invalid)


def test_expiry_commands_are_not_refused_any_more() -> None:
    for name in ("expire", "ttl", "setex", "getex", "persist", "pexpiretime"):
        assert rc.refusal(name) is None
