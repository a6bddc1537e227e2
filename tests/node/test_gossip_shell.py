"""The gossip shell's own duties: the incarnation and member files, and serving /gossip."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import trio
import trio.testing

from a3redis.cluster.gossip import GossipLoop, MemberFile, save_incarnation, start_incarnation
from a3redis.config import Config
from a3redis.core.membership import (
    MAX_INCARNATION,
    MAX_MEMBERS,
    GossipMessage,
    Membership,
    MembershipSettings,
    MemberState,
    Status,
)
from a3redis.net.address import Address
from a3redis.node import SAVE_EVERY_CHANGE_UP_TO, MembershipSaver

WALL_MS = 1_700_000_000_000


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (None, 1_700_000_000),
        ("5", 1_700_000_000),
        ("1800000000", 1_800_000_001),
        (str(MAX_INCARNATION - 1), MAX_INCARNATION),
        (str(MAX_INCARNATION), MAX_INCARNATION),  # never past the cap
        (str(MAX_INCARNATION + 1), 1_700_000_000),  # not an incarnation: ignored
        ("9" * 5000, 1_700_000_000),  # what gossip could make an older release save
        ("-3", 1_700_000_000),
        ("x\ud800", 1_700_000_000),
    ],
    ids=lambda v: ascii(v)[:20],
)
def test_a_start_takes_a_fresh_incarnation_within_range(
    tmp_path: Path, stored: str | None, expected: int
) -> None:
    if stored is not None:
        (tmp_path / "incarnation").write_text(stored, errors="surrogatepass")
    incarnation = start_incarnation(tmp_path, WALL_MS)
    assert incarnation == expected
    save_incarnation(tmp_path, incarnation)
    assert start_incarnation(tmp_path, WALL_MS) == min(expected + 1, MAX_INCARNATION)


def saved_entry(node_id: str, status: str = "alive", **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "grpc": "h:1", "gossip": "h:2", "status": status, "inc": 3, **extra}


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"[]",
        b"null",
        b"[" * 100_000,
        b'{"format": 1, "cluster": "c"}',
        b'{"format": 1, "cluster": "c", "members": {}}',
        b'{"format": 2}',
    ],
    ids=lambda v: ascii(v)[:20],
)
def test_a_damaged_member_file_is_ignored(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "members.json").write_bytes(content)
    assert MemberFile(tmp_path, "c").load(0.0) == ([], {})


def test_bad_saved_entries_are_skipped_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    entries: list[Any] = [
        saved_entry("node-2"),
        saved_entry("../../x"),
        saved_entry("a/b"),
        saved_entry("\ud800"),
        saved_entry("node-3", inc=-1),
        saved_entry("node-2"),  # twice
        "junk",
        saved_entry("node-4", "dead", since=1000.0),
        saved_entry("node-5", "left", since="soon"),
    ]
    text = json.dumps({"format": 1, "cluster": "c", "members": entries})
    text = text.replace('"inc": -1', '"inc": 1' + "0" * 5000)  # past Python's own JSON limit
    (tmp_path / "members.json").write_text(text)
    with caplog.at_level(logging.WARNING):
        states, ages = MemberFile(tmp_path, "c").load(4600.0)
    assert [s.node_id for s in states] == ["node-2", "node-4", "node-5"]
    assert ages == {"node-4": 3600.0}
    assert caplog.text.count("skipped 6 bad entries") == 1


def test_more_entries_than_max_members_are_not_read(tmp_path: Path) -> None:
    entries = [saved_entry(f"n-{i}") for i in range(MAX_MEMBERS + 10)]
    body = {"format": 1, "cluster": "c", "members": entries}
    (tmp_path / "members.json").write_text(json.dumps(body))
    assert len(MemberFile(tmp_path, "c").load(0.0)[0]) == MAX_MEMBERS


def test_since_is_saved_for_dead_and_left_members_and_read_back(tmp_path: Path) -> None:
    states = [
        MemberState("node-2", "h:1", "h:2", Status.DEAD, 3),
        MemberState("node-3", "h:1", "h:2", Status.ALIVE, 3),
    ]
    MemberFile(tmp_path, "c").save(states, {"node-2": 1000})
    loaded, ages = MemberFile(tmp_path, "c").load(1500.0)
    assert loaded == states and ages == {"node-2": 500.0}


async def _never_describes(address: Address) -> str | None:
    raise AssertionError(f"no Describe call expected ({address})")


def gossip_loop(**env: str) -> GossipLoop:
    config = Config.from_env(env)
    me = MemberState("node-1", "127.0.0.1:1", "127.0.0.1:2", Status.ALIVE, 5)
    membership = Membership(me, "a3redis", 3, MembershipSettings())
    return GossipLoop(
        config,
        membership,
        cast(httpx.AsyncClient, None),
        _never_describes,
        random.Random(1),
        lambda: None,
    )


def body(sender: str, cluster: str = "a3redis", **fields: Any) -> bytes:
    member: dict[str, Any] = {"id": sender, "grpc": "10.0.0.9:1", "gossip": "10.0.0.9:2"}
    member = {**member, "status": "alive", "inc": 1, **fields}
    message = {"protocol": 1, "cluster": cluster, "replication_factor": 3, "sender": sender}
    return json.dumps({**message, "members": [member]}).encode()


async def test_serving_answers_each_refusal_with_its_status_and_counts_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = gossip_loop()
    status, answer = loop.serve_exchange(body("node-2"), "10.0.0.9")
    assert status == 200 and answer["sender"] == "node-1"
    status, answer = loop.serve_exchange(body("node-2", inc=10**30), "10.0.0.9")
    assert status == 400
    assert answer["error"] == "malformed gossip message: body: a number has more than 20 digits"
    status, answer = loop.serve_exchange(body("node-3", cluster="other"), "10.0.0.9")
    assert status == 409 and answer["error"] == "incompatible peer: cluster other != ours a3redis"
    assert loop.rejected.counts == {("gossip", "invalid"): 1, ("gossip", "incompatible"): 1}
    # Logged once per source per LOG_INTERVAL, not once per request.
    for _ in range(20):
        assert loop.serve_exchange(b"{", "10.0.0.9")[0] == 400
    assert caplog.text.count("(10.0.0.9)") == 1
    assert loop.serve_exchange(b"{", "10.0.0.8")[0] == 400
    assert caplog.text.count("(10.0.0.8)") == 1


async def test_a_host_over_its_rate_is_answered_429_and_others_are_not() -> None:
    loop = gossip_loop(GOSSIP_INTERVAL="1")
    answers = [loop.serve_exchange(body("node-2"), "10.0.0.9")[0] for _ in range(150)]
    assert answers.count(200) == 100 and answers.count(429) == 50  # the burst, then refusals
    assert loop.serve_exchange(body("node-3"), "10.0.0.7")[0] == 200
    assert loop.rejected.counts == {("gossip", "rate_limited"): 50}


async def test_a_new_sender_is_refused_503_once_the_table_is_full() -> None:
    loop = gossip_loop()
    for index in range(MAX_MEMBERS - 1):
        member = MemberState(f"n-{index}", "h:1", "h:2", Status.ALIVE, 1)
        loop.membership.on_exchange(GossipMessage("a3redis", 3, member.node_id, (member,)), 0.0)
    status, answer = loop.serve_exchange(body("one-too-many"), "10.0.0.9")
    assert status == 503 and "MAX_MEMBERS=1024" in str(answer["error"])
    assert "one-too-many" not in {m.node_id for m in loop.membership.members()}


async def test_a_big_member_table_is_saved_once_a_second_and_at_shutdown(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    me = MemberState("node-1", "h:1", "h:2", Status.ALIVE, 5)
    membership = Membership(me, "c", 3, MembershipSettings())
    member_file = MemberFile(tmp_path, "c")
    saver = MembershipSaver(tmp_path, membership, member_file)

    def saved() -> int:
        return len(member_file.load(0.0)[0])

    def learn(node_id: str) -> None:
        member = MemberState(node_id, "h:1", "h:2", Status.ALIVE, 1)
        membership.on_exchange(GossipMessage("c", 3, node_id, (member,)), trio.current_time())
        saver()

    for index in range(SAVE_EVERY_CHANGE_UP_TO - 1):
        learn(f"n-{index}")
        assert saved() == index + 2  # up to SAVE_EVERY_CHANGE_UP_TO members: every change
    learn("one-more")  # a big table now: saved, then not again within the second
    assert saved() == SAVE_EVERY_CHANGE_UP_TO + 1
    learn("and-another")
    assert saved() == SAVE_EVERY_CHANGE_UP_TO + 1
    mock_clock.jump(1.0)
    saver()
    assert saved() == SAVE_EVERY_CHANGE_UP_TO + 2
    learn("last")
    assert saved() == SAVE_EVERY_CHANGE_UP_TO + 2
    saver.flush()
    assert saved() == SAVE_EVERY_CHANGE_UP_TO + 3
