"""Gossip bodies a hostile sender might post, each with the field its refusal must name.

Shared by the core's tests (tests/core/test_membership_hostile.py) and the ones
that post them to real nodes (tests/hostile/test_gossip.py).
"""

from __future__ import annotations

import json
from typing import Any

from a3redis.core.membership import MAX_MEMBERS, MAX_MESSAGE_BYTES

MEMBER = {"id": "node-9", "grpc": "h:1", "gossip": "h:2", "status": "alive", "inc": 1}
TOP = {"protocol": 1, "cluster": "c", "replication_factor": 3, "sender": "node-9"}


def encoded(members: Any = None, **top: Any) -> bytes:
    return json.dumps({**TOP, "members": [MEMBER] if members is None else members, **top}).encode()


def with_member(**fields: Any) -> bytes:
    return encoded([{**MEMBER, **fields}])


HUGE = b"1" + b"0" * 4300  # the 4,301-digit number that crashed a node

# (body, the field its error must name)
HOSTILE: list[tuple[bytes, str]] = [
    (b"", "body: not JSON"),
    (b"\xff\xfe", "body: must be UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "body: JSON nested too deeply"),
    (b"null", "body: must be a JSON object"),
    (b"[]", "body: must be a JSON object"),
    (b'"x"', "body: must be a JSON object"),
    (b"x" * (MAX_MESSAGE_BYTES + 1), "body: "),
    (encoded(protocol=2), "protocol:"),
    (encoded(protocol=True), "protocol:"),
    (encoded(protocol="1"), "protocol:"),
    (encoded(cluster=""), "cluster:"),
    (encoded(cluster="a/b"), "cluster:"),
    (encoded(cluster="\ud800"), "cluster:"),
    (encoded(cluster=7), "cluster:"),
    (encoded(replication_factor=0), "replication_factor:"),
    (encoded(replication_factor=-1), "replication_factor:"),
    (encoded(replication_factor=2**63), "replication_factor:"),
    (encoded(replication_factor=True), "replication_factor:"),
    (encoded(replication_factor=1.5), "replication_factor:"),
    (encoded(replication_factor="3"), "replication_factor:"),
    (encoded(sender="../../x"), "sender:"),
    (encoded(sender="a/b"), "sender:"),
    (encoded(sender="x" * 256), "sender:"),
    (encoded(sender="\ud800"), "sender:"),
    (encoded(sender=None), "sender:"),
    (encoded(members="nope"), "members:"),
    (encoded(members=[]), "members:"),
    (encoded(members={"node-9": MEMBER}), "members:"),
    (encoded(members=[MEMBER] * (MAX_MEMBERS + 1)), "members:"),
    (encoded(members=[1]), "members[0]:"),
    (encoded(members=[MEMBER, MEMBER]), "members[1].id: node-9 is listed twice"),
    (encoded(sender="node-8"), "members: the sender must list itself"),
    (with_member(id="../../x"), "members[0].id:"),
    (with_member(id="a/b"), "members[0].id:"),
    (with_member(id="x" * 256), "members[0].id:"),
    (with_member(id="\ud800"), "members[0].id:"),
    (with_member(id=9), "members[0].id:"),
    (with_member(grpc="nohostport"), "members[0].grpc:"),
    (with_member(grpc="h:0"), "members[0].grpc:"),
    (with_member(grpc="h:65536"), "members[0].grpc:"),
    (with_member(grpc="evil/x?y#:80"), "members[0].grpc:"),
    (with_member(grpc="user@h:80"), "members[0].grpc:"),
    (with_member(grpc="h" * 300 + ":1"), "members[0].grpc:"),
    (with_member(grpc="\ud800:1"), "members[0].grpc:"),
    (with_member(gossip=["h", 2]), "members[0].gossip:"),
    (with_member(status="zombie"), "members[0].status:"),
    (with_member(status="ALIVE"), "members[0].status:"),
    (with_member(status=0), "members[0].status:"),
    (with_member(inc=-1), "members[0].inc:"),
    (with_member(inc=2**63), "members[0].inc:"),
    (with_member(inc=2**64), "members[0].inc:"),
    (with_member(inc=1.0), "members[0].inc:"),
    (with_member(inc=True), "members[0].inc:"),
    (with_member(inc="1"), "members[0].inc:"),
    (with_member(inc=None), "members[0].inc:"),
    (encoded().replace(b'"inc": 1', b'"inc": ' + HUGE), "body: a number has more than"),
    (encoded().replace(b'"inc": 1', b'"inc": -' + HUGE), "body: a number has more than"),
    (encoded().replace(b'"inc": 1', b'"inc": 1' + b"0" * 30), "body: a number has more than"),
    (with_member(age=-1), "members[0].age:"),
    (with_member(age=1e9), "members[0].age:"),
    (with_member(age="1"), "members[0].age:"),
    (with_member(age=False), "members[0].age:"),
    (encoded().replace(b'"inc": 1', b'"inc": 1, "age": 1e999'), "members[0].age:"),
    (encoded().replace(b'"inc": 1', b'"inc": 1, "age": NaN'), "body: NaN"),
    (encoded().replace(b'"inc": 1', b'"inc": 1, "age": -Infinity'), "body: NaN"),
]
