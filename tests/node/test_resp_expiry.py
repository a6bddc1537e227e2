"""Keys that expire, through a node's Redis port (issue 18, item 5).

An in-process node (RF 1, every port on 0) driven by redis-py (sync, in a
thread: the node serves in this one), redis-cli and the gRPC client; the
replies are compared with a real redis-server's where it is installed.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
import redis
import trio

from a3redis.client import Client
from tests.node.conftest import RunningNode, Start
from tests.support.system_tools import system_command

T = TypeVar("T")

# Short enough for a fast test, long enough that a loaded machine reads the key in time.
SHORT_MS = 300


@pytest.fixture
async def node(start_node: Start) -> RunningNode:
    return await start_node()


@contextmanager
def connected(port: int, protocol: int = 3) -> Iterator[Any]:
    """A redis-py client (typed Any, as in test_resp_commands: redis-py's annotations
    cover its sync and asyncio clients at once)."""
    with redis.Redis(port=port, protocol=protocol, socket_timeout=30) as client:
        yield client


async def in_thread(talk: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(talk)


def answers(client: Any, commands: list[list[str]]) -> list[object]:
    """Each command's reply, or its error's text."""
    replies: list[object] = []
    for words in commands:
        try:
            replies.append(client.execute_command(*words))
        except redis.ResponseError as error:
            replies.append(f"error: {error}")
    return replies


# ----- expiring keys --------------------------------------------------------------------------


async def test_a_key_set_with_px_is_there_until_it_expires(node: RunningNode) -> None:
    def before() -> tuple[Any, ...]:
        with connected(node.ports.resp) as client:
            assert client.set("k", "v", px=SHORT_MS) is True
            assert client.psetex("p", SHORT_MS, "w") is True
            return client.get("k"), client.pttl("k"), client.ttl("k"), client.get("p")

    value, pttl, ttl, other = await in_thread(before)
    assert value == b"v" and other == b"w"
    assert 0 < pttl <= SHORT_MS
    assert ttl == 0  # under half a second left: Redis rounds to the nearest second
    await trio.sleep(SHORT_MS / 1000 + 0.05)

    def after() -> tuple[object, ...]:
        with connected(node.ports.resp) as client:
            return client.get("k"), client.ttl("k"), client.exists("k", "p"), client.get("p")

    assert await in_thread(after) == (None, -2, 0, None)


async def test_ttl_expire_conditions_persist_getex_and_setex(node: RunningNode) -> None:
    def talk() -> None:
        with connected(node.ports.resp) as client:
            assert client.setex("s", 100, "v") is True
            assert client.ttl("s") == 100
            assert 99_000 < client.pttl("s") <= 100_000
            expire_at = client.execute_command("PEXPIRETIME", "s")
            assert abs(expire_at - (time.time() * 1000 + 100_000)) < 5000
            assert client.execute_command("EXPIRETIME", "s") == (expire_at + 500) // 1000
            assert client.set("plain", "v") is True
            assert (client.ttl("plain"), client.ttl("missing")) == (-1, -2)
            assert client.execute_command("EXPIRETIME", "plain") == -1
            # NX / XX / GT / LT, as Redis: no expiry counts as infinite.
            assert client.expire("plain", 50, xx=True) is False
            assert client.expire("plain", 50, gt=True) is False
            assert client.expire("plain", 50, nx=True) is True
            assert client.expire("plain", 80, nx=True) is False
            assert client.expire("plain", 40, gt=True) is False
            assert client.expire("plain", 60, gt=True) is True
            assert client.expire("plain", 70, lt=True) is False
            assert client.pexpire("plain", 30_000, lt=True) is True
            assert client.ttl("plain") == 30
            assert client.expire("missing", 10) is False
            # PERSIST: once.
            assert client.persist("plain") is True
            assert client.persist("plain") is False
            assert client.ttl("plain") == -1
            # GETEX answers the value and changes the expiry.
            assert client.getex("plain", px=20_000) == b"v"
            assert client.ttl("plain") == 20
            assert client.getex("plain", persist=True) == b"v"
            assert client.ttl("plain") == -1
            assert client.getex("missing", ex=10) is None
            # KEEPTTL: the new value keeps the expiry.
            assert client.set("s", "w", keepttl=True) is True
            assert (client.get("s"), client.ttl("s")) == (b"w", 100)
            assert client.set("s", "x") is True  # a plain SET removes it, as in Redis
            assert client.ttl("s") == -1
            # INFO keyspace counts the keys with an expiry: none now (GETEX PERSIST and
            # the plain SET removed the last two), then one.
            assert client.info("keyspace")["db0"]["expires"] == 0
            assert client.set("later", "v", ex=100) is True
            assert client.info("keyspace")["db0"]["expires"] == 1

    await in_thread(talk)


async def test_info_counts_keys_with_an_expiry_and_expired_keys_once_reclaimed(
    start_node: Start,
) -> None:
    node = await start_node(TOMBSTONE_GRACE="1", SYNC_INTERVAL="3600")

    def stats(client: Any) -> tuple[int, int]:
        info = client.info("everything")
        return int(info.get("db0", {}).get("expires", 0)), int(info["expired_keys"])

    with connected(node.ports.resp) as client:
        await in_thread(lambda: client.set("short", "v", px=SHORT_MS))
        await in_thread(lambda: client.set("kept", "v"))
        assert await in_thread(lambda: stats(client)) == (1, 0)
    await trio.sleep(SHORT_MS / 1000 + 1.2)  # expired, and dead for the grace
    async with Client.connect(node.endpoint) as grpc_client:
        await grpc_client.repair(wait=True)  # reclaims it (no other replica)
    with connected(node.ports.resp) as client:
        assert await in_thread(lambda: stats(client)) == (0, 1)


async def test_expire_in_the_past_deletes_the_key_and_answers_1(node: RunningNode) -> None:
    def talk() -> list[object]:
        with connected(node.ports.resp) as client:
            client.mset({"a": "1", "b": "2", "c": "3"})
            return [
                client.expire("a", -1),
                client.pexpireat("b", 1),
                client.getex("c", exat=1),  # answers the value, then deletes
                client.exists("a", "b", "c"),
                client.ttl("a"),
            ]

    assert await in_thread(talk) == [True, True, b"3", 0, -2]


async def test_a_pipeline_of_set_ex_ttl_and_expire(node: RunningNode) -> None:
    def talk() -> list[object]:
        with connected(node.ports.resp) as client:
            pipe = client.pipeline(transaction=False)
            for number in range(50):
                pipe.set(f"k{number}", "v", ex=100 + number)
            for number in range(50):
                pipe.ttl(f"k{number}")
            for number in range(0, 50, 2):
                pipe.expire(f"k{number}", 1000, gt=True)
            pipe.ttl("k0")
            pipe.ttl("k1")
            return list(pipe.execute())

    replies = await in_thread(talk)
    assert replies[:50] == [True] * 50
    assert replies[50:100] == [100 + number for number in range(50)]
    assert replies[100:125] == [True] * 25
    assert replies[125:] == [1000, 101]


async def test_a_pipeline_with_a_server_step_runs_its_rewrites_too(node: RunningNode) -> None:
    """A run with a step the node answers (DBSIZE) is awaited in a task, not by callbacks."""

    def talk() -> list[object]:
        with connected(node.ports.resp) as client:
            pipe = client.pipeline(transaction=False)
            pipe.set("a", "1", ex=100)
            pipe.set("b", "2")
            pipe.dbsize()
            pipe.expire("a", 50, lt=True)
            pipe.persist("a")
            pipe.getex("b", px=70_000)
            pipe.set("b", "3", keepttl=True)
            pipe.ttl("a")
            pipe.ttl("b")
            return list(pipe.execute())

    assert await in_thread(talk) == [True, True, 2, True, True, b"2", True, -1, 70]


async def test_expiry_errors_through_the_port(node: RunningNode) -> None:
    def talk() -> list[object]:
        with connected(node.ports.resp) as client:
            client.set("k", "v")
            return answers(
                client,
                [
                    ["SET", "k", "v", "EX", "0"],
                    ["SET", "k", "v", "EX", "10", "PX", "10"],
                    ["SETEX", "k", "-1", "v"],
                    ["EXPIRE", "k", "x"],
                    ["EXPIRE", "k", "10", "NX", "GT"],
                    ["EXPIRE", "k", "10", "GT", "LT"],
                    ["GETEX", "k", "EX", "0"],
                    ["GETEX", "missing", "EX", "0"],
                ],
            )

    assert await in_thread(talk) == [
        "error: invalid expire time in 'set' command",
        "error: syntax error",
        "error: invalid expire time in 'setex' command",
        "error: value is not an integer or out of range",
        "error: NX and XX, GT or LT options at the same time are not compatible",
        "error: GT and LT options at the same time are not compatible",
        "error: invalid expire time in 'getex' command",
        None,
    ]


# ----- the same keyspace as gRPC --------------------------------------------------------------


async def test_a_ttl_set_over_grpc_shows_over_redis_and_the_reverse(node: RunningNode) -> None:
    async with Client.connect(node.endpoint) as client:
        await client.put(b"from-grpc", b"v", ttl=100)

        def redis_side() -> tuple[object, ...]:
            with connected(node.ports.resp) as redis_client:
                redis_client.set("from-redis", "w", ex=200)
                redis_client.set("persisted", "x", ex=50)
                return (
                    redis_client.ttl("from-grpc"),
                    redis_client.get("from-grpc"),
                    redis_client.persist("persisted"),
                )

        assert await in_thread(redis_side) == (100, b"v", True)
        assert 199 < await client.ttl(b"from-redis") <= 200
        assert await client.ttl(b"persisted") == -1.0
        assert (await client.get(b"from-redis")).value == b"w"


async def test_redis_cli_set_ex_and_ttl(node: RunningNode) -> None:
    async def cli(*args: str) -> str:
        command = [system_command("redis-cli"), "-p", str(node.ports.resp), *args]
        done = await trio.run_process(command, capture_stdout=True, capture_stderr=True)
        return done.stdout.decode()

    assert await cli("SET", "k", "v", "EX", "100") == "OK\n"
    assert await cli("TTL", "k") == "100\n"


# ----- against redis-server -------------------------------------------------------------------

# Commands whose replies do not depend on the moment they run (TTLs of whole
# seconds far from a rounding edge), run in order on both servers.
SAME_AS_REDIS = [
    ["SET", "k", "v"],
    ["TTL", "k"],
    ["PTTL", "missing"],
    ["EXPIRETIME", "k"],
    ["PEXPIRETIME", "missing"],
    ["EXPIRE", "k", "100", "XX"],
    ["EXPIRE", "k", "100", "GT"],
    ["EXPIRE", "k", "100", "LT"],
    ["TTL", "k"],
    ["EXPIRE", "k", "200", "NX"],
    ["EXPIRE", "k", "200", "XX", "GT"],
    ["EXPIRE", "k", "300", "XX", "LT"],
    ["TTL", "k"],
    ["SET", "k", "w", "KEEPTTL"],
    ["TTL", "k"],
    ["GETEX", "k"],
    ["GETEX", "k", "PERSIST"],
    ["TTL", "k"],
    ["PERSIST", "k"],
    ["GETEX", "k", "EX", "50"],
    ["TTL", "k"],
    ["SETEX", "s", "10", "v"],
    ["PSETEX", "p", "10000", "v"],
    ["TTL", "s"],
    ["TTL", "p"],
    ["SET", "e", "v", "EXAT", "4102444800"],
    ["EXPIRETIME", "e"],
    ["PEXPIRETIME", "e"],
    ["SET", "e", "v", "PXAT", "4102444800123"],
    ["PEXPIRETIME", "e"],
    ["EXPIRETIME", "e"],
    ["EXPIREAT", "e", "4102444801"],
    ["PEXPIRETIME", "e"],
    ["PEXPIREAT", "e", "4102444802000", "GT"],
    ["EXPIRETIME", "e"],
    ["EXPIRE", "e", "0"],
    ["EXISTS", "e"],
    ["EXPIRE", "missing", "10"],
    ["PERSIST", "missing"],
    ["GETEX", "missing", "EX", "0"],
    ["GETEX", "missing", "PX", "x"],
    ["SET", "k", "v", "EX", "0"],
    ["SET", "k", "v", "PX", "-5"],
    ["SET", "k", "v", "EXAT", "0"],
    ["SET", "k", "v", "EX", "9223372036854776"],
    ["SET", "k", "v", "EX", "1.5"],
    ["SET", "k", "v", "EX", "10", "PX", "10"],
    ["SET", "k", "v", "KEEPTTL", "EX", "10"],
    ["SET", "k", "v", "EX"],
    ["SET", "k", "v", "PERSIST"],
    ["SETEX", "k", "0", "v"],
    ["SETEX", "k", "x", "v"],
    ["PSETEX", "k", "-1", "v"],
    ["GETEX", "k", "EX", "0"],
    ["GETEX", "k", "PX", "x"],
    ["GETEX", "k", "PERSIST", "EX", "1"],
    ["GETEX", "k", "KEEPTTL"],
    ["EXPIRE", "k", "x"],
    ["EXPIRE", "k", "10", "NX", "XX"],
    ["EXPIRE", "k", "10", "LT", "NX"],
    ["EXPIRE", "k", "10", "GT", "LT"],
    ["EXPIRE", "k", "10", "SOON"],
    ["EXPIRE", "k", "9223372036854776"],
    ["EXPIREAT", "k", "-9223372036854776"],
    ["PEXPIRE", "k", "9223372036854775807"],  # overflows from now
    ["PEXPIRE", "k", str(2**53)],  # Redis keeps it; a3redis's bound is 2^53-1 ms after 1970
    ["TTL"],
    ["EXPIRE", "k"],
    ["SETEX", "k", "10"],
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def redis_server() -> Iterator[int]:
    """A throwaway redis-server on a free loopback port, without persistence."""
    port = free_port()
    command = [system_command("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with connected(port, protocol=2) as client:
                    client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.02)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_expiry_replies_and_errors_are_redis_server_s(node: RunningNode) -> None:
    def both() -> tuple[list[object], list[object]]:
        with redis_server() as port, connected(port, protocol=2) as real:
            expected = answers(real, SAME_AS_REDIS)
        with connected(node.ports.resp, protocol=2) as ours:
            return expected, answers(ours, SAME_AS_REDIS)

    expected, replies = await in_thread(both)
    # A time beyond 2^53-1 ms (some 285,000 years) is refused here where Redis keeps it.
    over = SAME_AS_REDIS.index(["PEXPIRE", "k", str(2**53)])
    assert expected[over] == 1
    assert replies[over] == "error: invalid expire time in 'pexpire' command"
    del expected[over], replies[over]
    for words, theirs, mine in zip(SAME_AS_REDIS, expected, replies, strict=False):
        assert mine == theirs, words
    assert len(replies) == len(expected)
