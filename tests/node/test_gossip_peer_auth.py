"""The gossip shell with a cluster secret (in-process, no sockets): a message is checked
before it is parsed, a refusal changes nothing and gets no signature, an answer is signed."""

from __future__ import annotations

import random
import time
from typing import cast

import httpx

from a3redis.cluster.gossip import GossipLoop
from a3redis.cluster.peer_auth import SIGNATURE, PeerGuard
from a3redis.config import Config
from a3redis.core.membership import Membership, MembershipSettings, MemberState, Status
from a3redis.core.peer_auth import Keyring, PeerAuth, Secret
from a3redis.net.address import Address
from tests.node.test_gossip_shell import body

SECRET = Secret(b"s" * 32)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def guard(node_id: str, secret: Secret = SECRET) -> PeerGuard:
    return PeerGuard(PeerAuth(Keyring(secret), node_id), wall_ms)


async def _never_describes(address: Address) -> str | None:
    raise AssertionError(f"no Describe call expected ({address})")


def secured_loop() -> GossipLoop:
    me = MemberState("node-1", "127.0.0.1:1", "127.0.0.1:2", Status.ALIVE, 5)
    return GossipLoop(
        Config.from_env({}),
        Membership(me, "a3redis", 3, MembershipSettings()),
        cast(httpx.AsyncClient, None),
        _never_describes,
        random.Random(1),
        lambda: None,
        guard("node-1"),
    )


async def test_unsigned_or_wrongly_signed_gossip_changes_nothing_and_gets_no_signature() -> None:
    loop = secured_loop()
    message = body("node-2")
    wrong = guard("node-2", Secret(b"w" * 32)).headers("gossip", message)
    for headers, expected in (({}, 401), (wrong, 401)):
        status, answer = loop.serve_exchange(message, "10.0.0.9", headers)
        assert status == expected, answer
        assert loop.encode_answer(status, answer)[1] == {}
    assert loop.membership.get("node-2") is None
    assert loop.guard is not None
    assert loop.guard.refused.counts == {("gossip", "missing"): 1, ("gossip", "bad_signature"): 1}
    # Rate limiting still comes first, then the signature, then parsing.
    status, _ = loop.serve_exchange(b"not json", "10.0.0.9", {})
    assert status == 401


async def test_a_signed_message_is_taken_once_and_its_answer_is_signed() -> None:
    loop = secured_loop()
    message = body("node-2")
    headers = guard("node-2").headers("gossip", message)
    status, answer = loop.serve_exchange(message, "10.0.0.9", headers)
    assert status == 200, answer
    assert loop.membership.get("node-2") is not None
    data, signed = loop.encode_answer(status, answer)
    # The prober checks the answer over the bytes sent, as a "gossip-reply".
    prober = guard("node-2")
    assert prober.check("gossip-reply", signed, data, "node-1") is None
    assert prober.check("gossip", guard("node-1").headers("gossip-reply", data), data, "x")
    assert SIGNATURE in signed
    # The same message again is a replay.
    status, _ = loop.serve_exchange(message, "10.0.0.9", headers)
    assert status == 403
