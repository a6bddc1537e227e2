"""Every Redis command of a node, end to end, with the real tools (issue #16).

An in-process node (RF 1, every port on 0) is driven by redis-cli, redis-benchmark
and redis-py 8 (sync and asyncio, RESP2 and RESP3 where the replies differ).
Blocking clients run in a thread (`trio.to_thread`): the node serves in this one.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio
import trio

from a3redis.core.redis_command_table import COMMAND_SPECS
from a3redis.core.redis_info import SECTIONS
from tests.node.conftest import RunningNode, Start
from tests.support.node_http import parse_samples
from tests.support.system_tools import system_command

T = TypeVar("T")

# A key and a value that break any client or server that is not binary-safe.
BINARY_KEY = b"bin:\r\n\x00\xff key"
BINARY_VALUE = b"\x00\r\n$3\r\nnot a reply\r\n\x00\xfe"


@pytest.fixture
async def node(start_node: Start) -> RunningNode:
    return await start_node()


async def cli(node: RunningNode, *args: str, stdin: bytes | None = None) -> str:
    """redis-cli's standard output (raw, as when it is not writing to a terminal: an
    error reply is its text and an empty line)."""
    command = [system_command("redis-cli"), "-p", str(node.ports.resp), *args]
    done = await trio.run_process(
        command, stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
    )
    return done.stdout.decode("utf-8", "backslashreplace")


@contextmanager
def connected(node: RunningNode, protocol: int = 3) -> Iterator[Any]:
    """A redis-py client (RESP3 is redis-py 8's default).

    Typed Any: redis-py's annotations cover its sync and asyncio clients at once
    (every reply `Awaitable[...] | ...`), which a test would only cast away.
    """
    with redis.Redis(port=node.ports.resp, protocol=protocol, socket_timeout=30) as client:
        yield client


def read_until_closed(raw: socket.socket) -> bytes:
    """Everything the node sends until it closes the connection."""
    received = bytearray()
    while chunk := raw.recv(65536):
        received += chunk
    return bytes(received)


async def in_thread(talk: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(talk)


def exchange(node: RunningNode, *requests: bytes) -> list[bytes]:
    """Raw bytes: each request's replies, the next request sent only once they came.

    Each request is followed by `ECHO end` in the same write, so its replies are
    complete when that bulk string comes back.
    """
    answers = []
    with socket.create_connection(("127.0.0.1", node.ports.resp), timeout=10) as raw:
        for request in requests:
            raw.sendall(request + b"ECHO end\r\n")
            received = b""
            while not received.endswith(b"$3\r\nend\r\n"):
                chunk = raw.recv(65536)
                assert chunk, f"closed after {received!r}"
                received += chunk
            answers.append(received.removesuffix(b"$3\r\nend\r\n"))
    return answers


# ----- which client -------------------------------------------------------------------------


def test_redis_py_is_the_version_and_parser_this_run_asked_for() -> None:
    """`nox -s redis-clients` runs these tests with other redis-py installs: make sure they
    are the ones in use (the `tests` session: the pinned 8.x, pure-Python parser)."""
    from redis.utils import HIREDIS_AVAILABLE

    major = os.environ.get("A3REDIS_REDIS_PY_MAJOR", "8")
    parser = os.environ.get("A3REDIS_REDIS_PY_PARSER", "python")
    assert redis.__version__.split(".")[0] == major
    uses_hiredis: bool = HIREDIS_AVAILABLE
    assert uses_hiredis is (parser == "hiredis")


# ----- data commands -------------------------------------------------------------------------


async def test_string_commands_through_redis_cli(node: RunningNode) -> None:
    assert await cli(node, "SET", "greeting", "hello world") == "OK\n"
    assert await cli(node, "GET", "greeting") == "hello world\n"
    assert await cli(node, "MSET", "a", "1", "b", "22") == "OK\n"
    assert await cli(node, "MGET", "a", "missing", "b") == "1\n\n22\n"
    assert await cli(node, "STRLEN", "greeting") == "11\n"
    assert await cli(node, "STRLEN", "missing") == "0\n"
    assert await cli(node, "GETRANGE", "greeting", "0", "4") == "hello\n"
    assert await cli(node, "GETRANGE", "greeting", "-5", "-1") == "world\n"
    assert await cli(node, "GETRANGE", "greeting", "20", "30") == "\n"
    assert await cli(node, "TYPE", "greeting") == "string\n"
    assert await cli(node, "TYPE", "missing") == "none\n"
    assert await cli(node, "EXISTS", "a", "a", "missing", "b") == "3\n"  # a key twice: twice
    assert await cli(node, "TOUCH", "a", "missing") == "1\n"
    assert await cli(node, "SET", "a", "replaced") == "OK\n"
    assert await cli(node, "GET", "a") == "replaced\n"


async def test_del_and_unlink_answer_how_many_keys_they_removed(node: RunningNode) -> None:
    def talk() -> list[Any]:
        with connected(node) as r:
            r.mset({"d1": "x", "d2": "y", "d3": "z", "d4": "w"})
            return [
                r.delete("d1", "d2", "never-set"),
                r.unlink("d3", "d1", "never-set"),  # d1 is gone already
                r.delete("d4", "d4"),  # a key named twice is removed once
                r.unlink("d4"),
                r.exists("d1", "d2", "d3", "d4"),
                r.get("d3"),
            ]

    assert await in_thread(talk) == [2, 1, 1, 0, 0, None]


@pytest.mark.parametrize("protocol", [2, 3])
async def test_binary_keys_and_values_survive_every_command(
    node: RunningNode, protocol: int
) -> None:
    def talk() -> list[Any]:
        with connected(node, protocol) as r:
            assert r.set(BINARY_KEY, BINARY_VALUE) is True
            r.mset({b"bin:\x00other": b"\r\n"})
            return [
                r.get(BINARY_KEY),
                r.mget(BINARY_KEY, b"bin:\x00other", b"bin:\x00missing"),
                r.exists(BINARY_KEY),
                r.type(BINARY_KEY),
                r.strlen(BINARY_KEY),
                r.getrange(BINARY_KEY, 1, 2),
                sorted(r.keys(b"bin:*")),
                sorted(r.scan_iter(match=b"bin:\r*")),
                r.delete(BINARY_KEY),
                r.get(BINARY_KEY),
            ]

    assert await in_thread(talk) == [
        BINARY_VALUE,
        [BINARY_VALUE, b"\r\n", None],
        1,
        b"string",
        len(BINARY_VALUE),
        b"\r\n",
        sorted([BINARY_KEY, b"bin:\x00other"]),
        [BINARY_KEY],
        1,
        None,
    ]


async def test_keys_answers_every_key_its_pattern_matches(node: RunningNode) -> None:
    def talk() -> list[list[bytes]]:
        with connected(node) as r:
            r.mset({"user:1": 1, "user:2": 2, "user:10": 3, "users": 4, "order:1": 5})
            r.delete("user:2")
            return [
                sorted(r.keys("user:*")),
                sorted(r.keys("user:?")),
                sorted(r.keys("*:1*")),
                sorted(r.keys("[ou]*s")),
                sorted(r.keys("nothing*")),
                sorted(r.keys()),
            ]

    assert await in_thread(talk) == [
        [b"user:1", b"user:10"],
        [b"user:1"],
        [b"order:1", b"user:1", b"user:10"],
        [b"users"],
        [],
        [b"order:1", b"user:1", b"user:10", b"users"],
    ]


async def test_scan_pages_through_every_key_with_match_count_and_type(node: RunningNode) -> None:
    names = [f"scan:{i:03}".encode() for i in range(250)] + [b"other:1", b"other:2"]

    def talk() -> dict[str, Any]:
        with connected(node) as r:
            r.mset(dict.fromkeys(names, b"v"))
            r.delete(b"scan:100")  # a tombstone inside the range: never returned
            cursor, first_page = r.scan(0, count=7)
            pages = 0
            seen: list[bytes] = []
            cursor = 0
            while True:  # by hand, as clients do, counting the pages
                cursor, keys = r.scan(cursor, match="scan:1*", count=20)
                seen += keys
                pages += 1
                if cursor == 0 or pages > 100:
                    break
            return {
                "first_page": len(first_page),
                "matched": seen,
                "pages": pages,
                "iterated": list(r.scan_iter(count=50)),
                "strings": list(r.scan_iter(match="other:*", _type="string")),
                "ending_in_5": list(r.scan_iter(match="*5", count=30)),
                "tenth": list(r.scan_iter(match="scan:?1?", count=30)),
                "lists": list(r.scan_iter(_type="list")),
            }

    found = await in_thread(talk)
    assert 1 <= found["first_page"] <= 7
    expected = [f"scan:{i}".encode() for i in range(100, 200) if i != 100]
    assert found["matched"] == expected  # in key order, each once, the deleted one left out
    assert 2 <= found["pages"] <= 100
    assert found["iterated"] == sorted(set(names) - {b"scan:100"})
    assert found["strings"] == [b"other:1", b"other:2"]
    assert found["ending_in_5"] == [f"scan:{i:03}".encode() for i in range(5, 250, 10)]
    assert found["tenth"] == [f"scan:{h}1{u}".encode() for h in range(3) for u in range(10)]
    assert found["lists"] == []  # only strings are stored


async def test_a_huge_scan_count_is_a_hint_bounded_by_a_page(node: RunningNode) -> None:
    def talk() -> tuple[int, int, int]:
        with connected(node) as r:
            r.mset({f"many:{i:05}": b"v" for i in range(1500)})
            cursor, keys = r.scan(0, match="many:*", count=2**62)
            return cursor, len(keys), len(list(r.scan_iter(match="many:*", count=2**62)))

    cursor, first_page, every = await in_thread(talk)
    assert cursor != 0 and first_page == 1000  # one page of at most 1,000 keys
    assert every == 1500


async def test_scan_refuses_a_cursor_it_never_gave_out(node: RunningNode) -> None:
    assert await cli(node, "SCAN", "12345") == "ERR invalid cursor\n\n"
    assert await cli(node, "SCAN", "0", "COUNT", "0") == "ERR syntax error\n\n"


async def test_redis_cli_scan_with_a_pattern_lists_every_matching_key(node: RunningNode) -> None:
    def fill() -> None:
        with connected(node) as r:
            r.mset({f"cli:{i}": i for i in range(120)} | {"elsewhere": 1})

    await in_thread(fill)
    listed = (await cli(node, "--scan", "--pattern", "cli:1*")).split()
    assert sorted(listed) == sorted(f"cli:{i}" for i in range(120) if str(i).startswith("1"))
    assert len(set((await cli(node, "--scan")).split())) == 121


async def test_randomkey_answers_a_live_key_or_nil(node: RunningNode) -> None:
    assert await cli(node, "RANDOMKEY") == "\n"  # nothing stored: nil
    assert await cli(node, "MSET", "a", "1", "b", "2", "zz", "3") == "OK\n"
    assert await cli(node, "DEL", "a", "b") == "2\n"
    # The deleted keys come first in key order (their tombstones are scanned first),
    # and are never the answer.
    answers = {await cli(node, "RANDOMKEY") for _ in range(8)}
    assert answers == {"zz\n"}


async def test_dbsize_counts_the_live_keys(node: RunningNode) -> None:
    assert await cli(node, "DBSIZE") == "0\n"
    assert await cli(node, "MSET", "k1", "1", "k2", "2", "k3", "3") == "OK\n"
    assert await cli(node, "DEL", "k2") == "1\n"
    assert await cli(node, "DBSIZE") == "2\n"


async def test_flushall_is_refused_without_allow_flush_and_names_the_setting(
    node: RunningNode,
) -> None:
    assert await cli(node, "SET", "precious", "1") == "OK\n"
    for command in ("FLUSHALL", "FLUSHDB"):
        refused = await cli(node, command)
        assert refused.startswith(f"ERR {command} is disabled"), refused
        assert "ALLOW_FLUSH=1" in refused
    assert await cli(node, "GET", "precious") == "1\n"


@pytest.mark.parametrize("command", ["FLUSHALL", "FLUSHDB"])
async def test_flushall_deletes_every_key_with_allow_flush(start_node: Start, command: str) -> None:
    node = await start_node(ALLOW_FLUSH="1")

    def talk() -> list[Any]:
        with connected(node) as r:
            for first in range(0, 2500, 500):  # more than one page of the flush
                r.mset({f"f:{i}": i for i in range(first, first + 500)})
            before = r.dbsize()
            flushed = r.execute_command(command)
            return [before, flushed, r.dbsize(), r.keys(), r.get("f:7")]

    assert await in_thread(talk) == [2500, True, 0, [], None]


# ----- connection and tooling ----------------------------------------------------------------


async def test_ping_echo_and_hello_in_both_protocols(node: RunningNode) -> None:
    hello = b"$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.2.6\r\n$5\r\nproto\r\n"
    answers = await in_thread(
        lambda: exchange(
            node,
            b"PING\r\nPING hi\r\nECHO x\r\nGET nil\r\n",
            b"HELLO 3\r\n",
            b"GET nil\r\nPING\r\n",
            b"HELLO 2\r\n",
            b"GET nil\r\n",
        )
    )
    assert answers[0] == b"+PONG\r\n$2\r\nhi\r\n$1\r\nx\r\n$-1\r\n"
    assert answers[1].startswith(b"%8\r\n" + hello + b":3\r\n")  # a RESP3 map
    assert b"$4\r\nmode\r\n$7\r\ncluster\r\n" in answers[1]
    assert answers[2] == b"_\r\n+PONG\r\n"  # RESP3's null
    assert answers[3].startswith(b"*16\r\n" + hello + b":2\r\n")  # RESP2: an array
    assert answers[4] == b"$-1\r\n"


async def test_auth_and_select_answer_as_redis_without_a_password(node: RunningNode) -> None:
    assert await cli(node, "AUTH", "secret") == (
        "ERR AUTH <password> called without any password configured for the default user. "
        "Are you sure your configuration is correct?\n\n"
    )
    assert await cli(node, "AUTH", "default", "anything") == "OK\n"
    assert await cli(node, "AUTH", "alice", "secret") == (
        "WRONGPASS invalid username-password pair or user is disabled.\n\n"
    )
    assert await cli(node, "SELECT", "0") == "OK\n"
    assert await cli(node, "SELECT", "1") == "ERR SELECT is not allowed in cluster mode\n\n"

    def connect_with_a_password(protocol: int) -> bytes | None:
        with redis.Redis(port=node.ports.resp, password="anything", protocol=protocol) as r:
            r.set("authed", "yes")
            value: bytes | None = r.get("authed")
            return value

    # RESP3: redis-py sends HELLO 3 AUTH default <password>, accepted, as by Redis.
    assert await in_thread(lambda: connect_with_a_password(3)) == b"yes"
    # RESP2: it sends AUTH <password>, which Redis without a password refuses too.
    with pytest.raises(redis.AuthenticationError, match="without any password configured"):
        await in_thread(lambda: connect_with_a_password(2))


@pytest.mark.parametrize("protocol", [2, 3])
async def test_client_name_id_list_and_info(node: RunningNode, protocol: int) -> None:
    def talk() -> dict[str, Any]:
        with connected(node, protocol) as first, connected(node, protocol) as second:
            first.client_setname("first-one")
            second.ping()
            return {
                "name": first.client_getname(),
                "unnamed": second.client_getname(),
                "ids": (first.client_id(), second.client_id()),
                "list": first.client_list(),
                "info": second.client_info(),
            }

    found = await in_thread(talk)
    assert found["name"] in ("first-one", b"first-one") and found["unnamed"] is None
    first_id, second_id = found["ids"]
    assert first_id != second_id
    listed = {int(entry["id"]): entry for entry in found["list"]}
    assert set(listed) == {first_id, second_id}  # every open connection, each once
    assert listed[first_id]["name"] == "first-one" and listed[second_id]["name"] == ""
    assert listed[first_id]["lib-name"] == "redis-py"  # from CLIENT SETINFO
    assert listed[first_id]["cmd"] == "client|list" and listed[first_id]["resp"] == str(protocol)
    assert int(found["info"]["id"]) == second_id and found["info"]["cmd"] == "client|info"


async def test_command_count_info_and_docs(node: RunningNode) -> None:
    def talk() -> tuple[int, Any]:
        with connected(node, 2) as r:
            return r.command_count(), r.execute_command("COMMAND", "INFO", "get", "set")

    count, info = await in_thread(talk)
    assert count == len(COMMAND_SPECS) and count > 50
    assert info["get"]["arity"] == 2 and info["get"]["first_key_pos"] == 1
    assert "readonly" in info["get"]["flags"] and "write" in info["set"]["flags"]
    assert await cli(node, "COMMAND", "INFO", "nosuch") == "\n"  # nil, as Redis answers
    docs = (await cli(node, "COMMAND", "DOCS", "get")).split("\n")
    assert docs[:4] == ["get", "summary", "Returns the string value of a key.", "since"]
    assert await cli(node, "COMMAND", "DOCS", "nosuch") == "\n"  # an empty map


async def test_config_get_answers_what_redis_benchmark_asks(node: RunningNode) -> None:
    def talk() -> list[dict[str, str]]:
        with connected(node, 2) as r:
            return [r.config_get("save"), r.config_get("appendonly"), r.config_get("nosuch*")]

    assert await in_thread(talk) == [{"save": ""}, {"appendonly": "yes"}, {}]


@pytest.mark.parametrize("protocol", [2, 3])
async def test_info_is_parsed_by_redis_py(node: RunningNode, protocol: int) -> None:
    def talk() -> tuple[dict[str, Any], dict[str, Any]]:
        with connected(node, protocol) as r:
            r.mset({"i1": 1, "i2": 2})
            return r.info(), r.info("keyspace")

    info, keyspace = await in_thread(talk)
    assert info["redis_version"] == "7.2.6" and info["redis_mode"] == "cluster"
    assert info["tcp_port"] == node.ports.resp
    assert info["connected_clients"] >= 1 and info["aof_enabled"] == 1
    assert info["node_id"] == node.config.node_id and "a3redis_version" in info
    assert keyspace == {"db0": {"keys": 2, "expires": 0, "avg_ttl": 0}}


async def test_info_fills_every_field_of_its_sections(node: RunningNode) -> None:
    """Each field SECTIONS names is given (monitoring tools and `redis-cli --stat`
    read used_memory, keyspace_hits, the net bytes...)."""

    def talk() -> set[str]:
        with connected(node, 2) as r:
            r.set("filled", "1")
            return set(r.info("everything"))

    given = await in_thread(talk)
    missing = {
        section.name: [name for name in section.fields if name not in given] for section in SECTIONS
    }
    assert {name: fields for name, fields in missing.items() if fields} == {}


async def test_info_counts_lookups_errors_commands_and_bytes(node: RunningNode) -> None:
    def talk() -> tuple[dict[str, Any], dict[str, Any]]:
        with connected(node, 2) as r:
            before = r.info("everything")
            r.set("here", "v")
            r.mget("here", "absent", "also-absent")
            r.get("here")
            with pytest.raises(redis.ResponseError):
                r.execute_command("INCR", "here")
            with pytest.raises(redis.ResponseError):
                r.execute_command("SELECT", "9")
            return before, r.info("everything")

    before, after = await in_thread(talk)
    assert after["keyspace_hits"] - before["keyspace_hits"] == 2
    assert after["keyspace_misses"] - before["keyspace_misses"] == 2
    assert after["total_error_replies"] - before["total_error_replies"] == 2
    assert after["errorstat_ERR"]["count"] - before.get("errorstat_ERR", {"count": 0})["count"] == 2
    assert after["cmdstat_mget"]["calls"] == 1 and after["cmdstat_set"]["failed_calls"] == 0
    assert after["cmdstat_incr"] == {
        "calls": 1,
        "usec": after["cmdstat_incr"]["usec"],
        "usec_per_call": after["cmdstat_incr"]["usec_per_call"],
        "rejected_calls": 0,
        "failed_calls": 1,
    }
    assert after["total_net_input_bytes"] > before["total_net_input_bytes"]
    assert after["total_net_output_bytes"] > before["total_net_output_bytes"]
    assert after["instantaneous_ops_per_sec"] >= 0
    # The process's resident size: a Python process holds megabytes.
    assert after["used_memory"] > 1024**2 and after["used_memory_rss"] == after["used_memory"]
    assert after["used_memory_peak"] >= after["used_memory"]
    assert after["used_memory_dataset"] > 0 and after["maxmemory"] == 0


async def test_instantaneous_ops_count_the_last_whole_second(node: RunningNode) -> None:
    """The node counts the commands answered in the last whole second of its monotonic
    clock; the client (in this process, on the same clock) counts its PINGs answered in
    each second, and INFO's figure is that count for the second before INFO ran."""

    def talk() -> tuple[int, dict[int, int], int, int]:
        answered: dict[int, int] = {}
        with connected(node, 2) as r:
            second = int(time.monotonic())
            while int(time.monotonic()) < second + 3:
                r.ping()
                now = int(time.monotonic())
                answered[now] = answered.get(now, 0) + 1
            before = int(time.monotonic())
            rate: int = r.info("stats")["instantaneous_ops_per_sec"]
            after = int(time.monotonic())
        return rate, answered, before, after

    rate, answered, before, after = await in_thread(talk)
    # INFO ran in a second between `before` and `after`; its "last second" is the one
    # before. A PING answered at a second's edge may fall on either side of it.
    candidates = [answered.get(ran - 1, 0) for ran in range(before, after + 1)]
    assert any(abs(rate - count) <= max(3, count // 20) for count in candidates), (
        rate,
        candidates,
    )
    assert rate > 0


async def test_role_memory_usage_substr_object_and_module_list(node: RunningNode) -> None:
    def talk() -> tuple[Any, ...]:
        with connected(node, 3) as r:
            r.set("sized", "v" * 1000)
            r.set("counter", 12)
            with pytest.raises(redis.ResponseError) as idle:
                r.object("idletime", "sized")
            return (
                r.role(),
                r.memory_usage("sized"),
                r.memory_usage("never-set"),
                r.substr("sized", 0, 2),
                r.object("encoding", "sized"),
                r.object("encoding", "counter"),
                r.object("refcount", "counter"),
                r.object("encoding", "never-set"),
                str(idle.value),
                r.module_list(),
            )

    role, usage, missing, part, raw, number, shared, none, idle, modules = await in_thread(talk)
    assert part == b"vvv" and (raw, number, shared, none) == (b"raw", b"int", 2**31 - 1, None)
    assert "does not track when a key was last read" in idle and modules == []
    assert role == [b"master", 0, []]
    assert 1000 + len("sized") < usage < 1000 + len("sized") + 1000 and missing is None


async def test_save_syncs_the_log_under_any_fsync_policy(start_node: Start) -> None:
    node = await start_node(FSYNC="everysec")

    def fsyncs() -> float:
        url = f"http://127.0.0.1:{node.ports.http}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return parse_samples(response.read().decode())[("a3redis_fsyncs_total", ())]

    def talk() -> tuple[float, float, Any, Any, float, int, float, float]:
        with connected(node, 2) as r:
            before = fsyncs()
            r.set("to-save", "v")
            saved = r.save()
            after_save = fsyncs()
            last = r.lastsave().timestamp()
            r.set("to-save", "w")
            started = r.execute_command("BGSAVE")
            after_bgsave = fsyncs()
            return before, after_save, saved, started, last, 0, after_bgsave, time.time()

    before, after_save, saved, started, last, _, after_bgsave, now = await in_thread(talk)
    # The second-by-second sync may have come between too: at least one more each time.
    assert saved is True and after_save >= before + 1
    assert started is True  # redis-py reads "Background saving started" as success
    assert after_bgsave >= after_save + 1
    assert now - 5 <= last <= now  # LASTSAVE is the SAVE's time, not the node's start


async def test_the_slow_log_keeps_slow_commands_as_redis_does(start_node: Start) -> None:
    node = await start_node(SLOWLOG_LOG_SLOWER_THAN="0", SLOWLOG_MAX_LEN="3")

    def talk() -> tuple[Any, Any, Any, Any, Any, Any]:
        with connected(node, 2) as r:
            r.execute_command("SLOWLOG", "RESET")
            r.client_setname("slow-client")
            r.set("slow", "1")
            # Without client tokens any password is taken, as by Redis without one.
            r.execute_command("AUTH", "default", "a-password")
            entries = r.slowlog_get(10)
            length = r.slowlog_len()
            settings = r.config_get("slowlog-*")
            r.slowlog_reset()
            return entries, length, settings, r.slowlog_len(), r.slowlog_get(), r.client_id()

    entries, length, settings, after_reset, empty, _ = await in_thread(talk)
    assert length == 3  # CLIENT SETNAME, SET, AUTH (SLOWLOG RESET itself came first)
    assert [entry["command"] for entry in entries] == [
        b"AUTH (redacted) (redacted)",
        b"SET slow 1",
        b"CLIENT SETNAME slow-client",
    ]
    newest = entries[0]
    assert newest["client_name"] == b"slow-client"
    assert newest["client_address"].startswith(b"127.0.0.1:")
    assert entries[0]["id"] > entries[1]["id"] > entries[2]["id"]
    assert abs(newest["start_time"] - time.time()) < 60 and newest["duration"] >= 0
    assert settings == {"slowlog-log-slower-than": "0", "slowlog-max-len": "3"}
    # As in Redis, a command is logged once it ran: RESET empties the log, then enters it.
    assert after_reset == 1
    assert [entry["command"] for entry in empty] == [b"SLOWLOG LEN", b"SLOWLOG RESET"]


async def test_client_kill_closes_other_connections_and_its_own_after_the_reply(
    node: RunningNode,
) -> None:
    def raw_client() -> tuple[socket.socket, int, str]:
        """A raw connection, its client id and its address as the node sees it."""
        raw = socket.create_connection(("127.0.0.1", node.ports.resp), timeout=10)
        raw.sendall(b"CLIENT ID\r\n")
        reply = raw.recv(100)
        assert reply.startswith(b":"), reply
        host, port = raw.getsockname()[:2]
        return raw, int(reply[1:].strip()), f"{host}:{port}"

    def closed_by_node(raw: socket.socket) -> bool:
        with raw:
            return raw.recv(100) == b""

    def talk() -> tuple[Any, ...]:
        victim, victim_id, _ = raw_client()
        bystander, _, bystander_address = raw_client()
        with connected(node, 2) as admin:
            by_id = admin.execute_command("CLIENT", "KILL", "ID", victim_id)
            victim_closed = closed_by_node(victim)
            none_such = admin.execute_command("CLIENT", "KILL", "ADDR", "10.9.9.9:1")
            no_pubsub = admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            old_form = admin.execute_command("CLIENT", "KILL", bystander_address)
            bystander_closed = closed_by_node(bystander)
            with pytest.raises(redis.ResponseError) as missing:
                admin.execute_command("CLIENT", "KILL", "10.9.9.9:1")
        me, _, my_address = raw_client()
        with me:
            me.sendall(b"CLIENT KILL ADDR %s SKIPME no\r\nPING\r\n" % my_address.encode())
            # Answered, then closed: the PING after it is not run.
            received = read_until_closed(me)
        return (
            by_id,
            victim_closed,
            none_such,
            no_pubsub,
            old_form,
            bystander_closed,
            str(missing.value),
            received,
        )

    assert await in_thread(talk) == (1, True, 0, 0, b"OK", True, "No such client", b":1\r\n")
    assert await cli(node, "PING") == "PONG\n"


async def test_monitor_streams_the_commands_of_every_connection_until_reset(
    node: RunningNode,
) -> None:
    def talk() -> tuple[list[bytes], str, bytes, bytes]:
        with socket.create_connection(("127.0.0.1", node.ports.resp), timeout=10) as monitor:
            stream = monitor.makefile("rb")
            monitor.sendall(b"MONITOR\r\n")
            assert stream.readline() == b"+OK\r\n"
            with connected(node, 3) as r:
                r.set("watched", "a\nb")
                r.config_get("maxmemory")  # administrative: not shown
                r.execute_command("AUTH", "default", "hunter2")
                r.get("watched")
                address = r.client_info()["addr"]
            lines = [stream.readline()]
            while b'"CLIENT" "INFO"' not in lines[-1]:
                lines.append(stream.readline())
            monitor.sendall(b"RESET\r\n")
            after_reset = stream.readline()
            with connected(node, 2) as r:
                r.get("unseen")
            monitor.sendall(b"PING\r\n")
            # Only the reply to PING: nothing run after RESET is shown.
            rest = stream.readline()
        return lines, address, after_reset, rest

    lines, address, after_reset, rest = await in_thread(talk)
    assert all(line.startswith(b"+") and line.endswith(b"\r\n") for line in lines)
    assert all(f"[0 {address}] ".encode() in line for line in lines)
    shown = [line.split(b"] ", 1)[1].rstrip(b"\r\n") for line in lines]
    # redis-py's own commands when it connects (HELLO, CLIENT SETINFO...) come first.
    setup = (b'"HELLO"', b'"CLIENT" "SETINFO"', b'"CLIENT" "MAINT_NOTIFICATIONS"')
    assert [line for line in shown if not line.startswith(setup)] == [
        b'"SET" "watched" "a\\nb"',
        b'"AUTH" "(redacted)" "(redacted)"',
        b'"GET" "watched"',
        b'"CLIENT" "INFO"',
    ]
    assert after_reset == b"+RESET\r\n" and rest == b"+PONG\r\n"


async def test_config_set_changes_the_slow_log_while_the_node_runs(node: RunningNode) -> None:
    def talk() -> tuple[Any, ...]:
        with connected(node, 2) as r:
            r.execute_command("SLOWLOG", "RESET")
            r.get("fast-enough")  # under the 10 ms default, surely
            before = r.slowlog_len()
            changed = r.config_set("slowlog-log-slower-than", 0)
            r.get("now-logged")
            logged = r.slowlog_get(1)[0]["command"]
            settings = r.config_get("slowlog-*")
            with pytest.raises(redis.ResponseError) as fixed:
                r.config_set("maxmemory", "1mb")
            r.config_set("slowlog-log-slower-than", -1)
            r.execute_command("SLOWLOG", "RESET")
            r.get("not-logged")
            return before, changed, logged, settings, str(fixed.value), r.slowlog_len()

    before, changed, logged, settings, fixed, after = await in_thread(talk)
    assert before <= 1 and changed is True  # at most the RESET itself, on a slow machine
    assert logged == b"GET now-logged"
    assert settings == {"slowlog-log-slower-than": "0", "slowlog-max-len": "128"}
    assert fixed == (
        "CONFIG SET failed (possibly related to argument 'maxmemory') - can't set immutable config"
    )
    assert after == 0


async def test_commands_that_move_keys_or_wait_for_replicas_are_refused(
    node: RunningNode,
) -> None:
    assert (await cli(node, "RENAME", "a", "b")).startswith("ERR RENAME is not supported: ")
    assert (await cli(node, "COPY", "a", "b")).startswith("ERR COPY is not supported: ")
    assert await cli(node, "MOVE", "a", "1") == "ERR MOVE is not allowed in cluster mode\n\n"
    assert (await cli(node, "WAIT", "1", "0")).startswith("ERR WAIT is not supported: ")
    assert (await cli(node, "SHUTDOWN")).startswith("ERR SHUTDOWN is not supported ")
    assert await cli(node, "PING") == "PONG\n"  # the node is still up


async def test_time_and_lastsave_are_the_node_s_clock(node: RunningNode) -> None:
    def talk() -> tuple[tuple[int, int], Any]:
        with connected(node, 2) as r:
            return r.time(), r.lastsave()

    before = time.time()
    (seconds, microseconds), lastsave = await in_thread(talk)
    after = time.time()
    assert int(before) <= seconds <= after and 0 <= microseconds < 1_000_000
    assert int(before) - 60 <= lastsave.timestamp() <= after


@pytest.mark.parametrize("protocol", [2, 3])
async def test_a_connection_chooses_its_consistency_levels(
    node: RunningNode, protocol: int
) -> None:
    def levels(reply: Any) -> dict[bytes, bytes]:
        return reply if isinstance(reply, dict) else dict(zip(*[iter(reply)] * 2, strict=True))

    def talk() -> list[Any]:
        with connected(node, protocol) as r:
            seen = [levels(r.execute_command("A3.CONSISTENCY"))]
            seen.append(levels(r.execute_command("A3.CONSISTENCY", "READ", "one", "WRITE", "all")))
            seen += [r.set("c", "1"), r.get("c")]
            seen += [r.execute_command("READWRITE"), levels(r.execute_command("A3.CONSISTENCY"))]
            seen.append(r.execute_command("A3.CONSISTENCY", "READ", "quorum"))
            seen.append(r.execute_command("READONLY"))
            seen += [levels(r.execute_command("A3.CONSISTENCY")), r.get("c")]
            seen.append(r.execute_command("READWRITE"))
            seen.append(levels(r.execute_command("A3.CONSISTENCY")))
            with pytest.raises(redis.ResponseError, match="levels one, quorum, all or local"):
                r.execute_command("A3.CONSISTENCY", "READ")
            return seen

    seen = await in_thread(talk)
    quorum_quorum = {b"read": b"quorum", b"write": b"quorum"}
    one_all = {b"read": b"one", b"write": b"all"}
    assert seen[0] == quorum_quorum  # the server's defaults
    assert seen[1:4] == [one_all, True, b"1"]
    assert seen[4:6] == [True, one_all]  # READWRITE without READONLY changes nothing
    assert seen[7:10] == [True, {b"read": b"one", b"write": b"all"}, b"1"]  # READONLY: ONE
    assert seen[10:] == [True, {b"read": b"quorum", b"write": b"all"}]  # back to before


# ----- refusals ------------------------------------------------------------------------------

LWW = "a3redis replicates with last-write-wins and cannot make a read-modify-write atomic"
REFUSALS = [
    (["INCR", "k"], f"ERR INCR is not supported: {LWW}"),
    (["APPEND", "k", "v"], f"ERR APPEND is not supported: {LWW}"),
    (["SETNX", "k", "v"], f"ERR SETNX is not supported: {LWW}"),
    (["SET", "k", "v", "NX"], f"ERR SET NX is not supported: {LWW}"),
    (["GETSET", "k", "v"], f"ERR GETSET is not supported: {LWW}"),
    (["WATCH", "k"], f"ERR WATCH is not supported: {LWW}"),
    (["LPUSH", "l", "a"], "ERR unknown command 'LPUSH', with args beginning with: 'l' 'a' "),
    # Last: after a refused MULTI nothing runs until EXEC or DISCARD.
    (["MULTI"], f"ERR MULTI is not supported: {LWW}"),
]


async def test_every_refused_command_answers_its_error_and_changes_nothing(
    node: RunningNode,
) -> None:
    assert await cli(node, "SET", "k", "original") == "OK\n"
    pipeline = b"".join(" ".join(words).encode() + b"\r\n" for words, _ in REFUSALS)
    # DISCARD ends the refused MULTI (until then nothing runs, not even exchange's ECHO).
    raw = (await in_thread(lambda: exchange(node, pipeline + b"DISCARD\r\n")))[0]
    answers = raw.split(b"\r\n")
    assert len(answers) == len(REFUSALS) + 2  # one line each, DISCARD's, and the last CRLF
    assert answers[-2] == b"+OK"
    for (words, expected), answer in zip(REFUSALS, answers, strict=False):
        assert answer.decode().startswith(f"-{expected}"), (words, answer)
    assert await cli(node, "MGET", "k", "l") == "original\n\n"
    transactions = b"there are no transactions; send the commands without MULTI/EXEC"
    multi = answers[len(REFUSALS) - 1]
    assert transactions in multi and b"pipeline(transaction=False)" in multi
    assert b"GET the value and SET the new one" in answers[0]


async def test_transaction_pipelines_fail_with_the_reason_and_plain_pipelines_work(
    node: RunningNode,
) -> None:
    def talk() -> list[Any]:
        with connected(node) as r:
            transaction = r.pipeline(transaction=True)
            transaction.set("tx", "1").get("tx")
            with pytest.raises(redis.ResponseError) as refused:
                transaction.execute()
            assert "no transactions" in str(refused.value)
            assert "pipeline(transaction=False)" in str(refused.value)
            # The transaction failed as a whole: its write was not applied.
            assert r.get("tx") is None
            plain = r.pipeline(transaction=False)
            plain.set("p", "1").mset({"q": "2"}).get("p").mget("p", "q").delete("p", "q")
            replies: list[Any] = plain.execute()
            return replies

    assert await in_thread(talk) == [True, True, b"1", [b"1", b"2"], 2]


async def test_redis_py_asyncio_in_both_protocols(node: RunningNode) -> None:
    async def talk(protocol: int) -> list[Any]:
        r: Any = redis.asyncio.Redis(port=node.ports.resp, protocol=protocol)
        try:
            await r.mset({f"a{protocol}:1": "x", f"a{protocol}:2": BINARY_VALUE})
            pipe = r.pipeline(transaction=False)
            pipe.get(f"a{protocol}:2").exists(f"a{protocol}:1", "nope").strlen(f"a{protocol}:1")
            keys = [key async for key in r.scan_iter(match=f"a{protocol}:*", count=1)]
            return [*(await pipe.execute()), sorted(keys), (await r.info())["redis_mode"]]
        finally:
            await r.aclose()

    for protocol in (2, 3):
        replies = await in_thread(lambda: asyncio.run(talk(protocol)))  # noqa: B023
        keys = [f"a{protocol}:1".encode(), f"a{protocol}:2".encode()]
        assert replies == [BINARY_VALUE, 1, 1, keys, "cluster"], protocol


# ----- redis-cli and redis-benchmark ---------------------------------------------------------


async def test_redis_cli_reads_a_session_from_stdin_with_quoting(node: RunningNode) -> None:
    session = (
        b'SET "two words" "line\\r\\nbreak\\x00nul"\n'
        b"GET missing\n"
        b"INCR counter\n"
        b'ECHO "still here"\n'
        b'STRLEN "two words"\n'
    )
    answers = (await cli(node, stdin=session)).split("\n")
    assert answers[:2] == ["OK", ""] and answers[2].startswith("ERR INCR is not supported")
    assert answers[3:] == ["", "still here", "15", ""]

    def read() -> bytes | None:
        with connected(node) as r:
            value: bytes | None = r.get("two words")
            return value

    assert await in_thread(read) == b"line\r\nbreak\x00nul"


async def test_redis_cli_sends_a_binary_value_from_stdin(node: RunningNode) -> None:
    assert await cli(node, "-x", "SET", "blob", stdin=BINARY_VALUE) == "OK\n"

    def read() -> bytes | None:
        with connected(node) as r:
            value: bytes | None = r.get("blob")
            return value

    assert await in_thread(read) == BINARY_VALUE


async def test_redis_cli_pipe_inserts_10000_keys(node: RunningNode, tmp_path: Path) -> None:
    mass = bytearray()
    for i in range(10_000):
        key, value = b"mass:%d" % i, b"value-%d" % i
        mass += b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n" % (len(key), key)
        mass += b"$%d\r\n%s\r\n" % (len(value), value)
    (tmp_path / "mass.resp").write_bytes(mass)
    command = [system_command("redis-cli"), "-p", str(node.ports.resp), "--pipe"]
    with (tmp_path / "mass.resp").open("rb") as stdin:
        done = await trio.run_process(command, stdin=stdin, capture_stdout=True)
    assert "errors: 0, replies: 10000" in done.stdout.decode()
    assert await cli(node, "DBSIZE") == "10000\n"
    sample = [0, 1, 4999, 9998, 9999]
    got = await cli(node, "MGET", *(f"mass:{i}" for i in sample))
    assert got.split() == [f"value-{i}" for i in sample]


async def test_redis_benchmark_runs_set_get_mset_and_ping_without_an_error(
    node: RunningNode,
) -> None:
    command = [system_command("redis-benchmark"), "-p", str(node.ports.resp)]
    done = await trio.run_process(
        [*command, "-t", "set,get,mset,ping", "-n", "2000", "-q"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    output = (done.stdout + done.stderr).decode().replace("\r", "\n")
    assert done.returncode == 0, output
    assert "Error" not in output
    for test in ("PING_INLINE", "PING_MBULK", "SET", "GET", "MSET (10 keys)"):
        assert f"{test}: " in output, output
    assert await cli(node, "EXISTS", "key:__rand_int__") == "1\n"  # it did write


async def test_client_reply_off_skip_and_on_across_reads(node: RunningNode) -> None:
    def talk() -> bytes:
        with socket.create_connection(("127.0.0.1", node.ports.resp), timeout=10) as raw:
            raw.sendall(b"CLIENT REPLY OFF\r\nSET quiet 1\r\nGET quiet\r\n")
            raw.sendall(b"CLIENT REPLY ON\r\nGET quiet\r\n")  # maybe in a read of its own
            raw.sendall(b"CLIENT REPLY SKIP\r\nPING\r\nPING again\r\nQUIT\r\n")
            received = b""
            while chunk := raw.recv(65536):
                received += chunk
            return received

    assert await in_thread(talk) == b"+OK\r\n$1\r\n1\r\n$5\r\nagain\r\n+OK\r\n"


async def test_nothing_after_quit_in_a_pipeline_is_run(node: RunningNode) -> None:
    def talk() -> bytes:
        with socket.create_connection(("127.0.0.1", node.ports.resp), timeout=10) as raw:
            raw.sendall(b"PING\r\nQUIT\r\nSET after-quit 1\r\n")
            received = b""
            while chunk := raw.recv(65536):
                received += chunk
            return received

    assert await in_thread(talk) == b"+PONG\r\n+OK\r\n"
    assert await cli(node, "EXISTS", "after-quit") == "0\n"
