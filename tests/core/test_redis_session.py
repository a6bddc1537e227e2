"""Per-connection state and the commands answered from it (a3redis.core.redis_session)."""

from __future__ import annotations

from typing import Any

import pytest

from a3redis.core import redis_commands as rc
from a3redis.core.consistency import Consistency
from a3redis.core.redis_pipeline import plan
from a3redis.core.redis_session import (
    REDIS_VERSION,
    ServerSettings,
    Session,
    client_kill_reply,
    client_list_reply,
    clients_to_kill,
)
from a3redis.core.resp_values import OK, PONG, ErrorReply, Reply, Status, Verbatim

CONNECTED_MS = 1_700_000_000_000
SETTINGS = ServerSettings(a3redis_version="0.1.0")


def new_session(client_id: int = 7, settings: ServerSettings = SETTINGS) -> Session:
    return Session(settings, client_id, "127.0.0.1:50000", CONNECTED_MS, "127.0.0.1:6380")


def run(session: Session, *texts: str, wall_ms: int = CONNECTED_MS) -> list[Reply]:
    """Session commands only: they need no step, so the plan answers them at once."""
    pipeline = plan(session, [text.encode("latin-1").split() for text in texts], wall_ms)
    assert pipeline.steps == []
    return pipeline.replies([])


def one(session: Session, text: str, wall_ms: int = CONNECTED_MS) -> Any:
    (reply,) = run(session, text, wall_ms=wall_ms)
    return reply


# ----- connection ----------------------------------------------------------------------------


def test_ping_and_echo() -> None:
    session = new_session()
    assert run(session, "PING", "PING hi", "ECHO there") == [PONG, b"hi", b"there"]


def test_hello_3_switches_to_resp3_and_answers_the_map_redis_py_needs() -> None:
    session = new_session()
    reply = one(session, "HELLO 3")
    assert session.protocol == 3
    assert reply == {
        b"server": b"redis",
        b"version": REDIS_VERSION.encode(),
        b"proto": 3,
        b"id": 7,
        b"mode": b"cluster",
        b"role": b"master",
        b"modules": [],
        b"a3redis_version": b"0.1.0",
    }


def test_hello_without_a_version_reports_the_current_protocol() -> None:
    session = new_session()
    assert one(session, "HELLO")[b"proto"] == 2
    one(session, "HELLO 3")
    assert one(session, "HELLO")[b"proto"] == 3
    assert one(session, "HELLO 2")[b"proto"] == 2
    assert session.protocol == 2


def test_hello_with_auth_accepts_the_default_user_and_sets_the_name() -> None:
    session = new_session()
    reply = one(session, "HELLO 3 AUTH default anything SETNAME app")
    assert reply[b"proto"] == 3
    assert session.name == b"app"


def test_hello_with_an_unknown_user_changes_nothing() -> None:
    session = new_session()
    reply = one(session, "HELLO 3 AUTH bob secret SETNAME app")
    assert reply == ErrorReply("WRONGPASS invalid username-password pair or user is disabled.")
    assert session.protocol == 2
    assert session.name is None


def test_a_bad_hello_version_keeps_the_protocol() -> None:
    session = new_session()
    assert one(session, "HELLO 4") == ErrorReply("NOPROTO unsupported protocol version")
    assert session.protocol == 2


def test_auth_answers_as_redis_without_requirepass() -> None:
    session = new_session()
    assert run(session, "AUTH pw", "AUTH default pw", "AUTH bob pw") == [
        ErrorReply(
            "ERR AUTH <password> called without any password configured for the default user. "
            "Are you sure your configuration is correct?"
        ),
        OK,
        ErrorReply("WRONGPASS invalid username-password pair or user is disabled."),
    ]


def test_select_0_is_ok_and_another_database_is_the_cluster_mode_error() -> None:
    session = new_session()
    assert run(session, "SELECT 0", "SELECT 1", "SELECT -1") == [
        OK,
        ErrorReply("ERR SELECT is not allowed in cluster mode"),
        ErrorReply("ERR SELECT is not allowed in cluster mode"),
    ]


def test_quit_answers_ok_and_closes() -> None:
    session = new_session()
    assert run(session, "QUIT") == [OK]
    assert session.closing


# ----- CLIENT --------------------------------------------------------------------------------


def test_client_name_id_and_library() -> None:
    session = new_session()
    assert run(
        session,
        "CLIENT GETNAME",
        "CLIENT SETNAME app",
        "CLIENT GETNAME",
        "CLIENT ID",
        "CLIENT SETINFO LIB-NAME redis-py",
        "CLIENT SETINFO lib-ver 8.2.0",
    ) == [None, OK, b"app", 7, OK, OK]
    assert (session.lib_name, session.lib_ver) == (b"redis-py", b"8.2.0")


def test_an_empty_client_name_removes_the_name() -> None:
    session = new_session()
    run(session, "CLIENT SETNAME app")
    pipeline = plan(session, [[b"CLIENT", b"SETNAME", b""], [b"CLIENT", b"GETNAME"]], CONNECTED_MS)
    assert pipeline.replies([]) == [OK, None]


def test_client_info_is_one_line_in_redis_s_field_order() -> None:
    session = new_session()
    run(session, "CLIENT SETNAME app", "CLIENT SETINFO LIB-NAME redis-py", "READONLY")
    reply = one(session, "CLIENT INFO", wall_ms=CONNECTED_MS + 5_500)
    assert isinstance(reply, Verbatim)
    line = reply.text.decode()
    assert line.endswith("\n")
    fields = dict(field.split("=", 1) for field in line.split())
    assert list(fields)[:8] == ["id", "addr", "laddr", "fd", "name", "age", "idle", "flags"]
    assert list(fields)[-4:] == ["redir", "resp", "lib-name", "lib-ver"]
    assert fields["id"] == "7"
    assert fields["addr"] == "127.0.0.1:50000"
    assert fields["laddr"] == "127.0.0.1:6380"
    assert fields["name"] == "app"
    assert fields["age"] == "5"
    assert fields["flags"] == "r"
    assert fields["cmd"] == "client|info"
    assert fields["resp"] == "2"
    assert fields["lib-name"] == "redis-py"
    assert fields["lib-ver"] == ""


def test_client_list_shows_the_sessions_asked_for() -> None:
    first, second = new_session(3), new_session(9)
    run(second, "CLIENT SETNAME other")

    def ids(command: rc.ClientList) -> list[str]:
        reply = client_list_reply(command, [second, first], CONNECTED_MS)
        assert isinstance(reply, Verbatim)
        return [line.split()[0] for line in reply.text.decode().splitlines()]

    assert ids(rc.ClientList(None, None)) == ["id=3", "id=9"]
    assert ids(rc.ClientList(b"normal", None)) == ["id=3", "id=9"]
    assert ids(rc.ClientList(b"pubsub", None)) == []
    assert ids(rc.ClientList(None, (9, 4, 3))) == ["id=9", "id=3"]


def test_client_flags_are_in_redis_s_order_a_monitor_first() -> None:
    session = new_session()
    assert session.client_flags() == "N"
    run(session, "READONLY", "CLIENT NO-EVICT on")
    session.monitoring = True  # the shell's MONITOR step
    assert session.client_flags() == "Ore"
    run(session, "RESET")  # ends monitoring, READONLY and NO-EVICT
    assert session.client_flags() == "N"


def test_client_kill_matches_every_filter_given_and_skips_the_asker_unless_told() -> None:
    me = new_session(1)
    other = Session(SETTINGS, 2, "10.0.0.2:4000", CONNECTED_MS, "127.0.0.1:6380")
    third = Session(SETTINGS, 3, "10.0.0.3:4000", CONNECTED_MS, "127.0.0.1:6381")
    everyone = [third, me, other]

    def killed(command: rc.ClientKill) -> list[int]:
        return [session.client_id for session in clients_to_kill(command, everyone, me)]

    assert killed(rc.ClientKill()) == [2, 3]
    assert killed(rc.ClientKill(skip_me=False)) == [1, 2, 3]
    assert killed(rc.ClientKill(client_id=2)) == [2]
    assert killed(rc.ClientKill(client_id=1)) == []  # SKIPME yes by default
    assert killed(rc.ClientKill(addr=b"10.0.0.3:4000")) == [3]
    assert killed(rc.ClientKill(laddr=b"127.0.0.1:6380")) == [2]
    assert killed(rc.ClientKill(laddr=b"127.0.0.1:6380", client_id=3)) == []
    assert killed(rc.ClientKill(type=b"normal", user=b"default")) == [2, 3]
    assert killed(rc.ClientKill(type=b"pubsub")) == []
    old_form = rc.ClientKill(addr=me.peer.encode(), skip_me=False, old_form=True)
    assert killed(old_form) == [1]


def test_client_kill_answers_ok_or_no_such_client_in_the_old_form_and_a_count_in_the_new() -> None:
    old_form = rc.ClientKill(addr=b"10.0.0.9:1", skip_me=False, old_form=True)
    assert client_kill_reply(old_form, 1) == OK
    assert client_kill_reply(old_form, 0) == ErrorReply("ERR No such client")
    assert client_kill_reply(rc.ClientKill(type=b"normal"), 0) == 0
    assert client_kill_reply(rc.ClientKill(type=b"normal"), 4) == 4


def test_client_list_is_a_step_for_the_shell_which_holds_every_session() -> None:
    session = new_session()
    pipeline = plan(session, [[b"CLIENT", b"LIST"]], CONNECTED_MS)
    assert [type(step).__name__ for step in pipeline.steps] == ["ServerStep"]


def test_client_no_evict_and_no_touch_show_in_the_flags() -> None:
    session = new_session()
    assert run(session, "CLIENT NO-EVICT on", "CLIENT NO-TOUCH ON") == [OK, OK]
    assert session.client_flags() == "eT"
    run(session, "CLIENT NO-EVICT off", "CLIENT NO-TOUCH off")
    assert session.client_flags() == "N"


def test_client_reply_off_silences_until_on() -> None:
    session = new_session()
    replies = run(
        session, "PING a", "CLIENT REPLY OFF", "PING b", "ECHO c", "CLIENT REPLY ON", "PING d"
    )
    assert replies == [b"a", OK, b"d"]


def test_client_reply_skip_silences_itself_and_the_next_command_only() -> None:
    session = new_session()
    replies = run(session, "CLIENT REPLY SKIP", "PING a", "PING b")
    assert replies == [b"b"]


def test_client_reply_skip_while_off_changes_nothing() -> None:
    session = new_session()
    replies = run(
        session, "CLIENT REPLY OFF", "CLIENT REPLY SKIP", "PING a", "CLIENT REPLY ON", "PING b"
    )
    assert replies == [OK, b"b"]


def test_client_reply_mode_lasts_across_pipelines() -> None:
    session = new_session()
    assert run(session, "CLIENT REPLY SKIP") == []
    assert run(session, "PING a", "PING b") == [b"b"]
    assert run(session, "CLIENT REPLY OFF") == []
    assert run(session, "PING c") == []
    assert run(session, "CLIENT REPLY ON", "PING d") == [OK, b"d"]


# ----- consistency ---------------------------------------------------------------------------


def test_a3_consistency_without_arguments_reports_the_server_defaults() -> None:
    settings = ServerSettings("0.1.0", read_default=Consistency.ONE, write_default=Consistency.ALL)
    session = new_session(settings=settings)
    assert one(session, "A3.CONSISTENCY") == {b"read": b"one", b"write": b"all"}
    assert (session.read_level, session.write_level) == (None, None)


def test_a3_consistency_sets_either_level() -> None:
    session = new_session()
    assert one(session, "A3.CONSISTENCY READ one") == {b"read": b"one", b"write": b"quorum"}
    assert one(session, "a3.consistency write ALL") == {b"read": b"one", b"write": b"all"}
    assert (session.read_level, session.write_level) == (Consistency.ONE, Consistency.ALL)


def read_level(session: Session) -> Consistency | None:
    return session.read_level


def test_readonly_reads_at_one_and_readwrite_restores_the_level_before() -> None:
    session = new_session()
    run(session, "A3.CONSISTENCY READ all")
    assert run(session, "READONLY") == [OK]
    assert read_level(session) is Consistency.ONE
    assert run(session, "READWRITE") == [OK]
    assert read_level(session) is Consistency.ALL
    run(session, "READWRITE")
    assert read_level(session) is Consistency.ALL


def test_an_explicit_read_level_ends_readonly() -> None:
    session = new_session()
    run(session, "READONLY", "A3.CONSISTENCY READ quorum", "READWRITE")
    assert session.read_level is Consistency.QUORUM
    assert not session.readonly


def test_reset_brings_back_a_new_connection_s_state() -> None:
    session = new_session()
    run(
        session,
        "HELLO 3 SETNAME app",
        "CLIENT SETINFO LIB-NAME x",
        "A3.CONSISTENCY READ one WRITE all",
        "READONLY",
        "CLIENT NO-EVICT on",
        "CLIENT REPLY OFF",
    )
    assert run(session, "RESET") == [Status("RESET")]
    assert session.protocol == 2
    assert (session.name, session.lib_name) == (None, None)
    assert (session.read_level, session.write_level, session.readonly) == (None, None, False)
    assert session.client_flags() == "N"
    assert run(session, "PING") == [PONG]
    assert session.client_id == 7


# ----- COMMAND and the other server-wide answers ---------------------------------------------


def test_command_count_and_command_list_cover_the_table() -> None:
    session = new_session()
    assert one(session, "COMMAND COUNT") == len(rc.TOP_LEVEL)
    names = one(session, "COMMAND LIST")
    assert b"get" in names
    assert b"client|setname" in names
    assert b"a3.consistency" in names
    assert b"lpush" not in names
    assert len(one(session, "COMMAND")) == len(rc.TOP_LEVEL)


def test_command_list_filters_as_redis_does() -> None:
    session = new_session()
    assert one(session, "COMMAND LIST FILTERBY MODULE json") == []
    read = one(session, "COMMAND LIST FILTERBY ACLCAT READ")
    assert b"get" in read
    assert b"set" not in read
    assert one(session, "COMMAND LIST FILTERBY ACLCAT nonsense") == []
    assert sorted(one(session, "COMMAND LIST FILTERBY PATTERN g*")) == [
        b"get",
        b"getdel",
        b"getex",
        b"getrange",
        b"getset",
    ]
    assert one(session, "COMMAND LIST FILTERBY PATTERN CLIENT|[^s]*ame") == [b"client|getname"]


def test_command_info_answers_null_for_a_command_it_does_not_have() -> None:
    session = new_session()
    reply = one(session, "COMMAND INFO get lpush client|id")
    assert [entry if entry is None else entry[0] for entry in reply] == [
        b"get",
        None,
        b"client|id",
    ]
    assert one(session, "COMMAND INFO") == one(session, "COMMAND")


def test_command_docs_leave_out_commands_it_does_not_have() -> None:
    session = new_session()
    assert list(one(session, "COMMAND DOCS GET lpush")) == [b"get"]
    every = one(session, "COMMAND DOCS")
    assert len(every) == len(rc.TOP_LEVEL)
    assert set(every[b"client"][b"subcommands"]) >= {b"client|setname", b"client|reply"}


@pytest.mark.parametrize(
    "container", ["CLIENT", "COMMAND", "CONFIG", "CLUSTER", "FUNCTION", "SCRIPT"]
)
def test_help_lists_the_subcommands_in_redis_s_shape(container: str) -> None:
    lines = one(new_session(), f"{container} HELP")
    assert lines[0] == Status(
        f"{container} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    )
    assert lines[-2:] == [Status("HELP"), Status("    Print this help.")]
    assert all(isinstance(line, Status) for line in lines)
    assert len(lines) % 2 == 1


def test_time_answers_seconds_and_microseconds() -> None:
    assert one(new_session(), "TIME", wall_ms=1_700_000_123_456) == [b"1700000123", b"456000"]


def test_function_and_script_flush_have_nothing_to_flush() -> None:
    assert run(new_session(), "FUNCTION FLUSH", "SCRIPT FLUSH ASYNC") == [OK, OK]
