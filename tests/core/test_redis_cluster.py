"""Redis Cluster emulation: key slots as Redis computes them, the CLUSTER replies clients parse."""

from __future__ import annotations

import importlib
import itertools
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from a3redis.core.redis_cluster import (
    CLUSTER_SLOTS,
    ClusterMember,
    ClusterView,
    cluster_node_id,
    crc16,
    key_slot,
    spread_slots,
)
from a3redis.core.resp_values import ErrorReply, Reply, Status, Verbatim


def test_crc16_is_xmodem() -> None:
    # The check value of CRC-16/XMODEM, quoted by the Redis Cluster specification.
    assert crc16(b"123456789") == 0x31C3
    assert crc16(b"") == 0


# Each slot was read from redis-server 7.0.15 (CLUSTER KEYSLOT).
@pytest.mark.parametrize(
    ("key", "slot"),
    [
        (b"123456789", 12739),
        (b"foo", 12182),
        (b"somekey", 11058),
        (b"{user1000}.following", 3443),
        (b"foo{}{bar}", 8363),  # nothing between the braces: the whole key is hashed
        (b"foo{{bar}}zap", 4015),  # `{bar` is hashed
        (b"foo{bar}{zap}", 5061),  # `bar` is hashed
        (b"{}", 15257),
        (b"", 0),
        (b"{a}", 15495),
        (b"}{a}", 15495),
    ],
)
def test_a_key_lands_in_the_slot_redis_gives_it(key: bytes, slot: int) -> None:
    assert key_slot(key) == slot


@given(tag=st.binary(min_size=1, max_size=8).filter(lambda t: b"}" not in t), rest=st.binary())
def test_keys_with_the_same_hash_tag_share_a_slot(tag: bytes, rest: bytes) -> None:
    assert key_slot(b"{" + tag + b"}" + rest) == key_slot(tag)
    assert key_slot(b"prefix{" + tag + b"}") == key_slot(tag)


@given(key=st.binary(max_size=64))
def test_a_slot_is_in_range(key: bytes) -> None:
    assert 0 <= key_slot(key) < CLUSTER_SLOTS


def members(count: int) -> list[ClusterMember]:
    return [ClusterMember(f"node-{n}", "127.0.0.1", 6380 + n) for n in range(1, count + 1)]


@given(count=st.integers(1, 200), data=st.data())
def test_the_slots_are_spread_evenly_and_the_same_on_every_node(
    count: int, data: st.DataObject
) -> None:
    listed = members(count)
    ranges = spread_slots(listed)
    assert ranges == spread_slots(data.draw(st.permutations(listed)))
    assert ranges[0].first == 0 and ranges[-1].last == CLUSTER_SLOTS - 1
    for before, after in itertools.pairwise(ranges):
        assert after.first == before.last + 1
    sizes = [r.last - r.first + 1 for r in ranges]
    assert max(sizes) - min(sizes) <= 1
    assert [r.member.node_id for r in ranges] == sorted(m.node_id for m in listed)


def test_a_lone_member_owns_every_slot() -> None:
    view = ClusterView(members(1), "node-1")
    assert view.slots() == [
        [0, 16383, [b"127.0.0.1", 6381, cluster_node_id("node-1").encode(), {}]]
    ]


def test_a_member_listed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        spread_slots([*members(2), members(1)[0]])


def test_the_view_must_hold_this_node() -> None:
    with pytest.raises(ValueError, match="this node"):
        ClusterView(members(2), "node-9")


def test_cluster_ids_are_40_lower_case_hex_and_stable() -> None:
    ids = {cluster_node_id(f"node-{n}") for n in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch("[0-9a-f]{40}", i) for i in ids)
    assert cluster_node_id("node-1") == cluster_node_id("node-1")


def three_node_view(myself: str = "node-2") -> ClusterView:
    return ClusterView(list(reversed(members(3))), myself)


def test_cluster_slots_has_redis_7_shape() -> None:
    slots = three_node_view().slots()
    ids = [cluster_node_id(f"node-{n}").encode() for n in (1, 2, 3)]
    assert slots == [
        [0, 5461, [b"127.0.0.1", 6381, ids[0], {}]],
        [5462, 10922, [b"127.0.0.1", 6382, ids[1], {}]],
        [10923, 16383, [b"127.0.0.1", 6383, ids[2], {}]],
    ]


def test_cluster_shards_has_redis_7_shape() -> None:
    shards = three_node_view().shards()
    assert isinstance(shards, list) and len(shards) == 3
    assert shards[1] == {
        b"slots": [5462, 10922],
        b"nodes": [
            {
                b"id": cluster_node_id("node-2").encode(),
                b"port": 6382,
                b"ip": b"127.0.0.1",
                b"endpoint": b"127.0.0.1",
                b"role": b"master",
                b"replication-offset": 0,
                b"health": b"online",
            }
        ],
    }


def test_cluster_nodes_has_one_line_per_node_in_redis_format() -> None:
    reply = three_node_view().nodes()
    assert isinstance(reply, Verbatim) and reply.format == "txt"
    lines = reply.text.decode().split("\n")
    assert lines[-1] == ""
    ids = [cluster_node_id(f"node-{n}") for n in (1, 2, 3)]
    assert lines[:-1] == [
        f"{ids[0]} 127.0.0.1:6381@0 master - 0 0 1 connected 0-5461",
        f"{ids[1]} 127.0.0.1:6382@0 myself,master - 0 0 2 connected 5462-10922",
        f"{ids[2]} 127.0.0.1:6383@0 master - 0 0 3 connected 10923-16383",
    ]


def test_cluster_info_says_every_slot_is_served() -> None:
    reply = three_node_view().info()
    assert isinstance(reply, Verbatim)
    fields = dict(line.split(":") for line in reply.text.decode().split("\r\n") if line)
    assert fields["cluster_state"] == "ok"
    assert fields["cluster_slots_assigned"] == fields["cluster_slots_ok"] == "16384"
    assert fields["cluster_known_nodes"] == fields["cluster_size"] == "3"
    assert fields["cluster_my_epoch"] == "2"
    assert reply.text.endswith(b"\r\n")


def test_more_members_than_slots_leaves_some_without_slots() -> None:
    view = ClusterView(members(CLUSTER_SLOTS + 2), "node-1")
    assert len(view.slots()) == CLUSTER_SLOTS  # type: ignore[arg-type]
    info = view.info()
    assert isinstance(info, Verbatim)
    assert b"cluster_slots_assigned:16384\r\n" in info.text
    assert f"cluster_size:{CLUSTER_SLOTS}\r\n".encode() in info.text
    nodes = view.nodes()
    assert isinstance(nodes, Verbatim)
    assert nodes.text.count(b" connected\n") == 2  # the two without slots list none


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ([b"KEYSLOT", b"foo"], 12182),
        ([b"keyslot", b"{user1000}.following"], 3443),
        ([b"MyId"], cluster_node_id("node-2").encode()),
        ([], ErrorReply("ERR wrong number of arguments for 'cluster' command")),
        ([b"slots", b"x"], ErrorReply("ERR wrong number of arguments for 'cluster|slots' command")),
        ([b"KEYSLOT"], ErrorReply("ERR wrong number of arguments for 'cluster|keyslot' command")),
        ([b"foo"], ErrorReply("ERR unknown subcommand 'foo'. Try CLUSTER HELP.")),
        ([b"a\r\nb"], ErrorReply("ERR unknown subcommand 'a  b'. Try CLUSTER HELP.")),
        ([b"x" * 300], ErrorReply(f"ERR unknown subcommand '{'x' * 128}'. Try CLUSTER HELP.")),
    ],
)
def test_the_cluster_command_answers_as_redis(arguments: list[bytes], expected: Reply) -> None:
    assert three_node_view().command(arguments) == expected


@pytest.mark.parametrize("name", [b"INFO", b"SLOTS", b"SHARDS", b"NODES", b"MYSHARDID", b"HELP"])
def test_every_subcommand_is_reachable(name: bytes) -> None:
    view = three_node_view()
    reply = view.command([name])
    assert not isinstance(reply, ErrorReply)
    assert reply == getattr(view, name.decode().lower())()


def test_help_is_simple_strings() -> None:
    reply = three_node_view().command([b"help"])
    assert isinstance(reply, list) and all(isinstance(line, Status) for line in reply)


def _resp2(reply: Reply) -> Any:
    """What a RESP2 client reads: maps flattened to arrays, verbatim text as a bulk string."""
    if isinstance(reply, dict):
        return [item for pair in reply.items() for part in pair for item in [_resp2(part)]]
    if isinstance(reply, list):
        return [_resp2(item) for item in reply]
    if isinstance(reply, Verbatim):
        return reply.text
    return reply


def test_redis_py_parses_every_reply() -> None:
    # redis-py's parsers are untyped: called through Any.
    cluster: Any = importlib.import_module("redis.cluster")
    helpers: Any = importlib.import_module("redis._parsers.helpers")

    view = three_node_view()
    slots = cluster.parse_cluster_slots(view.slots())
    assert slots[(5462, 10922)]["primary"] == ("127.0.0.1", 6382)
    for protocol_reply in (view.shards(), _resp2(view.shards())):
        shards = cluster.parse_cluster_shards_unified(protocol_reply)
        assert len(shards) == 3
    nodes = helpers.parse_cluster_nodes(_resp2(view.nodes()))
    assert nodes["127.0.0.1:6382"]["flags"] == "myself,master"
    assert nodes["127.0.0.1:6382"]["slots"] == [["5462", "10922"]]
    assert helpers.parse_cluster_info(_resp2(view.info()))["cluster_state"] == "ok"
