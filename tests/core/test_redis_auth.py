"""The Redis front end with client tokens: AUTH, HELLO AUTH, NOAUTH and NOPERM (core only)."""

from __future__ import annotations

from typing import Any

import pytest

from a3redis.core import client_tokens
from a3redis.core.consistency import Consistency
from a3redis.core.redis_pipeline import ReadStep, WriteStep, plan
from a3redis.core.redis_session import (
    AUTH_WITHOUT_PASSWORD,
    HELLO_NO_AUTH,
    NO_AUTH,
    WRONG_PASSWORD,
    ServerSettings,
    Session,
)
from a3redis.core.resp_values import OK, PONG, ErrorReply, Status

READER = "reader-token-00001"
WRITER = "writer-token-00001"
ADMIN = "admin-token-000001"
TOKENS = client_tokens.parse(
    f"{READER} readonly\n{WRITER} readwrite\n{ADMIN} admin\n".encode(), bytes(32)
)
WITH_TOKENS = ServerSettings(
    a3redis_version="0.1.0", tokens=client_tokens.TokenHolder(TOKENS), allow_flush=True
)


def new_session(settings: ServerSettings = WITH_TOKENS) -> Session:
    return Session(settings, 1, "127.0.0.1:50000", 0)


def answers(session: Session, *texts: str) -> list[Any]:
    """The replies, with every key read finding nothing and every write stored."""
    pipeline = plan(session, [text.encode().split() for text in texts], 0)
    results: list[Any] = [
        [None] * len(step.keys)
        if isinstance(step, ReadStep)
        else []
        if isinstance(step, WriteStep)
        else OK
        for step in pipeline.steps
    ]
    return pipeline.replies(results)


def test_an_unauthenticated_connection_runs_only_no_auth_commands() -> None:
    session = new_session()
    assert answers(session, "PING", "GET k", "SET k v", "CLIENT SETNAME x", "HELLO 3") == [
        NO_AUTH,
        NO_AUTH,
        NO_AUTH,
        NO_AUTH,
        HELLO_NO_AUTH,
    ]
    # Nothing was planned for them.
    assert plan(session, [[b"GET", b"k"], [b"SET", b"k", b"v"]], 0).steps == []
    # As in Redis, an unknown command is still unknown.
    (unknown,) = answers(session, "NOSUCH x")
    assert isinstance(unknown, ErrorReply) and unknown.text.startswith("ERR unknown command")


@pytest.mark.parametrize("auth", [f"AUTH {WRITER}", f"AUTH default {WRITER}"])
def test_auth_with_a_token_unlocks_the_connection(auth: str) -> None:
    session = new_session()
    assert answers(session, auth, "PING") == [OK, PONG]
    assert session.role is client_tokens.Role.READWRITE
    assert len(plan(session, [[b"SET", b"k", b"v"]], 0).steps) == 1


@pytest.mark.parametrize(
    "auth", ["AUTH wrong-token-000000", f"AUTH alice {WRITER}", f"AUTH {WRITER[:-1]}"]
)
def test_a_wrong_token_or_user_is_a_wrong_pair(auth: str) -> None:
    session = new_session()
    assert answers(session, auth, "PING") == [WRONG_PASSWORD, NO_AUTH]
    assert WRONG_PASSWORD.text == ("WRONGPASS invalid username-password pair or user is disabled.")


def test_a_failed_auth_keeps_the_role_and_reset_drops_it() -> None:
    session = new_session()
    assert answers(session, f"AUTH {ADMIN}", "AUTH nope-nope-nope-nope", "PING") == [
        OK,
        WRONG_PASSWORD,
        PONG,
    ]
    assert session.role is client_tokens.Role.ADMIN
    assert answers(session, "RESET", "PING") == [Status("RESET"), NO_AUTH]


def test_hello_auth_authenticates_and_switches_protocol() -> None:
    session = new_session()
    (reply,) = answers(session, f"HELLO 3 AUTH default {READER}")
    assert reply[b"proto"] == 3 and session.protocol == 3
    assert session.role is client_tokens.Role.READONLY
    assert answers(session, "HELLO 3 AUTH default wrong-token-0000") == [WRONG_PASSWORD]
    session = new_session()
    assert answers(session, f"HELLO 3 AUTH other {READER}") == [WRONG_PASSWORD]
    assert session.role is None and session.protocol == 2


def test_a_readonly_token_reads_but_may_not_write() -> None:
    session = new_session()
    answers(session, f"AUTH {READER}")
    pipeline = plan(session, [[b"GET", b"k"], [b"SET", b"k", b"v"], [b"DEL", b"k"]], 0)
    assert pipeline.steps == [ReadStep((b"k",), None)]
    assert pipeline.replies([[None]]) == [
        None,
        ErrorReply("NOPERM User default has no permissions to run the 'set' command"),
        ErrorReply("NOPERM User default has no permissions to run the 'del' command"),
    ]


def test_flushall_needs_an_admin_token() -> None:
    session = new_session()
    answers(session, f"AUTH {WRITER}")
    assert answers(session, "FLUSHALL") == [
        ErrorReply("NOPERM User default has no permissions to run the 'flushall' command")
    ]
    answers(session, f"AUTH {ADMIN}")
    assert len(plan(session, [[b"FLUSHALL"]], 0).steps) == 1


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("SAVE", "save"),
        ("BGSAVE", "bgsave"),
        ("SLOWLOG GET", "slowlog|get"),
        ("SLOWLOG LEN", "slowlog|len"),
        ("SLOWLOG RESET", "slowlog|reset"),
        ("CLIENT KILL ID 5", "client|kill"),
        ("MONITOR", "monitor"),
        ("CONFIG SET slowlog-max-len 5", "config|set"),
    ],
)
def test_syncing_the_slow_log_and_killing_clients_need_an_admin_token(text: str, name: str) -> None:
    """SAVE makes the node sync; the slow log holds other clients' commands; CLIENT KILL
    ends their connections."""
    session = new_session()
    answers(session, f"AUTH {WRITER}")
    assert answers(session, text) == [
        ErrorReply(f"NOPERM User default has no permissions to run the '{name}' command")
    ]
    answers(session, f"AUTH {ADMIN}")
    assert len(plan(session, [text.encode().split()], 0).steps) == 1


def test_a_readonly_token_may_ask_role_and_memory_usage() -> None:
    session = new_session()
    answers(session, f"AUTH {READER}")
    assert answers(session, "ROLE", "MEMORY USAGE k") == [[b"master", 0, []], None]


def test_without_tokens_auth_answers_as_redis_without_a_password() -> None:
    session = new_session(ServerSettings(a3redis_version="0.1.0"))
    assert answers(session, "AUTH anything", "AUTH default anything", "PING") == [
        AUTH_WITHOUT_PASSWORD,
        OK,
        PONG,
    ]
    assert session.role is None


def test_a_tokens_levels_are_its_connections_defaults_until_the_connection_chooses() -> None:
    eventual = "eventual-token-0001"
    tokens = client_tokens.parse(
        f"{WRITER} readwrite\n{eventual} readwrite read=one write=all\n".encode(), bytes(32)
    )
    settings = ServerSettings(a3redis_version="0.1.0", tokens=client_tokens.TokenHolder(tokens))
    session = new_session(settings)

    def levels(*texts: str) -> list[Consistency | None]:
        steps = plan(session, [text.encode().split() for text in texts], 0).steps
        return [step.consistency for step in steps if isinstance(step, ReadStep | WriteStep)]

    assert answers(session, f"AUTH {WRITER}") == [OK]
    assert levels("GET k", "SET k v") == [None, None]  # the node's defaults
    assert answers(session, f"AUTH {eventual}") == [OK]
    assert levels("GET k", "SET k v") == [Consistency.ONE, Consistency.ALL]
    answers(session, "A3.CONSISTENCY READ quorum")
    assert levels("GET k", "SET k v") == [Consistency.QUORUM, Consistency.ALL]
    answers(session, "RESET")
    answers(session, f"AUTH {WRITER}")
    assert levels("GET k", "SET k v") == [None, None]


def test_a_lone_get_or_set_is_refused_as_in_a_pipeline() -> None:
    session = new_session()
    assert answers(session, "GET k") == [NO_AUTH]
    assert answers(session, "SET k v") == [NO_AUTH]
    assert plan(session, [[b"GET", b"k"]], 0).steps == []
    answers(session, f"AUTH {READER}")
    assert answers(session, "GET k") == [None]
    assert answers(session, "SET k v") == [
        ErrorReply("NOPERM User default has no permissions to run the 'set' command")
    ]
    answers(session, f"AUTH {WRITER}")
    assert answers(session, "SET k v") == [OK]
