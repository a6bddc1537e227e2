"""INFO and CONFIG GET: Redis 7's section choice, text format and setting lookup."""

from __future__ import annotations

import importlib
import re
from typing import Any

import pytest

from a3redis.core.redis_glob import MAX_PATTERN_BYTES
from a3redis.core.redis_info import (
    SECTIONS,
    InfoValue,
    RuntimeSetting,
    command_stat_fields,
    config_get,
    config_set,
    error_stat_fields,
    human_bytes,
    keyspace_fields,
    memory_fields,
    render_info,
    selected_sections,
)
from a3redis.core.resp_values import ErrorReply, Verbatim

KNOWN = [section.name for section in SECTIONS]
DEFAULTS = [name for name in KNOWN if name != "commandstats"]


def facts() -> dict[str, dict[str, InfoValue]]:
    """Every known section with one field, plus a section SECTIONS does not know."""
    filled: dict[str, dict[str, InfoValue]] = {
        section.name: {f"{section.name}_field": 1} for section in SECTIONS
    }
    filled["server"] = {"redis_version": "7.2.0", "a3redis_version": "0.1.0", "tcp_port": 6380}
    filled["extra"] = {"extra_field": "x"}
    return filled


def titles(arguments: list[bytes]) -> list[str]:
    reply = render_info(facts(), arguments)
    assert isinstance(reply, Verbatim) and reply.format == "txt"
    return re.findall(r"^# (\w+)\r$", reply.text.decode(), re.MULTILINE)


# The choices were compared with redis-server 7.0.15's INFO.
@pytest.mark.parametrize(
    ("arguments", "chosen"),
    [
        ([], DEFAULTS),
        ([b"default"], DEFAULTS),
        ([b"DEFAULT"], DEFAULTS),
        ([b"all"], KNOWN),
        ([b"everything"], [*KNOWN, "extra"]),
        ([b"server"], ["server"]),
        ([b"SERVER", b"cLiEnTs"], ["server", "clients"]),
        ([b"keyspace", b"server"], ["server", "keyspace"]),  # Redis's order, not the asked one
        ([b"commandstats", b"server"], ["server", "commandstats"]),
        ([b"server", b"server"], ["server"]),
        ([b"nope"], []),
        ([b"extra"], ["extra"]),  # a section SECTIONS does not know, when named
        ([b"all", b"extra"], [*KNOWN, "extra"]),
        ([b"default", b"commandstats"], KNOWN),
        ([b"\xff"], []),
    ],
)
def test_info_chooses_sections_as_redis_7(arguments: list[bytes], chosen: list[str]) -> None:
    assert selected_sections(arguments, [*KNOWN, "extra"]) == chosen


def test_only_the_sections_handed_over_are_shown() -> None:
    assert selected_sections([b"all"], ["keyspace", "server"]) == ["server", "keyspace"]
    assert selected_sections([b"memory"], ["server"]) == []


def test_info_text_is_redis_format() -> None:
    reply = render_info(facts(), [b"server", b"cluster"])
    assert reply == Verbatim(
        b"# Server\r\nredis_version:7.2.0\r\na3redis_version:0.1.0\r\ntcp_port:6380\r\n"
        b"\r\n"
        b"# Cluster\r\ncluster_field:1\r\n"
    )


def test_section_titles_are_redis_ones() -> None:
    assert titles([b"all"]) == [section.title for section in SECTIONS]
    assert titles([b"cpu", b"extra"]) == ["CPU", "Extra"]


def test_nothing_chosen_is_empty_text() -> None:
    assert render_info(facts(), [b"nope"]) == Verbatim(b"")


def test_a_value_cannot_forge_a_line() -> None:
    reply = render_info({"server": {"config_file": "a\r\nrole:slave\nb", "loading": True}}, [])
    assert reply == Verbatim(b"# Server\r\nconfig_file:a  role:slave b\r\nloading:1\r\n")


@pytest.mark.parametrize("field", ["Bad", "a:b", "a b", "a\r\n", ""])
def test_a_malformed_field_name_is_a_bug(field: str) -> None:
    with pytest.raises(ValueError, match="field names"):
        render_info({"server": {field: 1}}, [])


def test_field_names_are_unique_across_sections() -> None:
    # redis-py's parse_info merges every section into one dict.
    names = [field for section in SECTIONS for field in section.fields]
    assert len(names) == len(set(names))
    assert all(re.fullmatch("[a-z0-9_]+", name) for name in names)
    assert len({section.name for section in SECTIONS}) == len(SECTIONS)


def test_the_keyspace_section_leaves_out_an_empty_db0() -> None:
    assert keyspace_fields(0) == {}
    assert keyspace_fields(12) == {"db0": "keys=12,expires=0,avg_ttl=0"}
    assert keyspace_fields(12, 5) == {"db0": "keys=12,expires=5,avg_ttl=0"}


@pytest.mark.parametrize(
    ("count", "written"),
    [
        (0, "0B"),
        (1023, "1023B"),
        (1024, "1.00K"),
        (1536, "1.50K"),
        (72_056_832, "68.72M"),
        (3 * 1024**3, "3.00G"),
        (5 * 1024**4, "5.00T"),
        (2048 * 1024**5, "2048.00P"),  # Redis's largest unit
    ],
)
def test_sizes_are_written_as_redis_writes_them(count: int, written: str) -> None:
    assert human_bytes(count) == written


def test_the_memory_section() -> None:
    fields = memory_fields(used=3 * 1024**2, peak=2 * 1024**2, dataset=1500)
    # The peak is never below what is held now (ru_maxrss lags the statm reading).
    assert fields["used_memory_peak"] == fields["used_memory"] == 3 * 1024**2
    assert fields["used_memory_human"] == fields["used_memory_peak_human"] == "3.00M"
    assert fields["used_memory_dataset"] == 1500
    assert fields["maxmemory"] == 0 and fields["maxmemory_policy"] == "noeviction"
    assert memory_fields(used=1024, peak=4096, dataset=0)["used_memory_peak_human"] == "4.00K"


def test_command_and_error_stats_are_written_and_parsed_as_redis_writes_them() -> None:
    helpers: Any = importlib.import_module("redis._parsers.helpers")
    commands = command_stat_fields(
        {"get": (4, 1, 0.001), "a3.consistency": (1, 0, 0.0), "never": (0, 0, 0.0)}
    )
    assert commands == {
        "cmdstat_a3.consistency": (
            "calls=1,usec=0,usec_per_call=0.00,rejected_calls=0,failed_calls=0"
        ),
        "cmdstat_get": "calls=4,usec=1000,usec_per_call=250.00,rejected_calls=0,failed_calls=1",
    }
    errors = error_stat_fields({"ERR": 3, "WRONGPASS": 1, "bad code": 2, "NONE": 0})
    assert errors == {"errorstat_ERR": "count=3", "errorstat_WRONGPASS": "count=1"}
    reply = render_info({"commandstats": commands, "errorstats": errors}, [b"everything"])
    assert isinstance(reply, Verbatim)
    parsed = helpers.parse_info(reply.text)
    assert parsed["cmdstat_get"]["calls"] == 4 and parsed["cmdstat_get"]["failed_calls"] == 1
    assert parsed["errorstat_ERR"] == {"count": 3}


def test_redis_py_parses_the_text() -> None:
    # redis-py's parsers are untyped: called through Any.
    helpers: Any = importlib.import_module("redis._parsers.helpers")

    node = facts()
    node["keyspace"] = dict(keyspace_fields(3))
    reply = render_info(node, [b"everything"])
    assert isinstance(reply, Verbatim)
    parsed = helpers.parse_info(reply.text)
    assert parsed["redis_version"] == "7.2.0"
    assert parsed["tcp_port"] == 6380
    assert parsed["db0"] == {"keys": 3, "expires": 0, "avg_ttl": 0}
    assert parsed["extra_field"] == "x"


SETTINGS = {"save": "", "appendonly": "yes", "appendfsync": "always", "maxmemory": "0"}


# Each row was compared with redis-server 7.0.15's CONFIG GET.
@pytest.mark.parametrize(
    ("patterns", "reply"),
    [
        ([b"save"], {b"save": b""}),
        ([b"SAVE"], {b"SAVE": b""}),  # a plain name is answered as the client wrote it
        ([b"save", b"SAVE", b"Save"], {b"save": b""}),  # once per setting
        ([b"SAV*", b"save"], {b"save": b""}),  # a glob answers the setting's own name
        ([b"appendonly", b"nope"], {b"appendonly": b"yes"}),
        ([b"nope"], {}),
        ([b"appendonl\\y"], {}),  # no wildcard: looked up as written
        ([b"append*"], {b"appendonly": b"yes", b"appendfsync": b"always"}),
        ([b"APPEND[FO]*"], {b"appendonly": b"yes", b"appendfsync": b"always"}),
        ([b"*"], {name.encode(): value.encode() for name, value in SETTINGS.items()}),
        ([b"max?emory", b"*memory"], {b"maxmemory": b"0"}),
        ([b"appendonl\\y*"], {b"appendonly": b"yes"}),  # an escape inside a glob
    ],
)
def test_config_get_answers_as_redis_7(patterns: list[bytes], reply: dict[bytes, bytes]) -> None:
    assert config_get(SETTINGS, patterns) == reply


def test_config_get_refuses_an_overlong_pattern() -> None:
    reply = config_get(SETTINGS, [b"*" + b"a" * MAX_PATTERN_BYTES])
    assert reply == ErrorReply(f"ERR pattern longer than {MAX_PATTERN_BYTES} bytes")


RUNTIME = {
    "slowlog-max-len": RuntimeSetting(0, 1000),
    "slowlog-log-slower-than": RuntimeSetting(-1, 10**6),
}
CONFIG_KNOWN = ["save", "maxmemory", "slowlog-max-len", "slowlog-log-slower-than"]


def setting(*words: str) -> dict[str, int] | ErrorReply:
    pairs = [(words[i].encode(), words[i + 1].encode()) for i in range(0, len(words), 2)]
    return config_set(pairs, RUNTIME, CONFIG_KNOWN)


def test_config_set_gives_every_new_value_or_none() -> None:
    assert setting("SLOWLOG-MAX-LEN", "5", "slowlog-log-slower-than", "-1") == {
        "slowlog-max-len": 5,
        "slowlog-log-slower-than": -1,
    }
    assert setting("slowlog-max-len", "0") == {"slowlog-max-len": 0}


FAILED = "ERR CONFIG SET failed (possibly related to argument '{}') - {}"


# Each text was compared with redis-server 7.0.15's CONFIG SET.
@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["nosuch", "1"], "ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'"),
        # The unknown name wins over an earlier bad value: names are checked first.
        (
            ["slowlog-max-len", "x", "nosuch", "1"],
            "ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'",
        ),
        (["maxmemory", "1"], FAILED.format("maxmemory", "can't set immutable config")),
        (
            ["slowlog-max-len", "5", "Slowlog-Max-Len", "6"],
            FAILED.format("Slowlog-Max-Len", "duplicate parameter"),
        ),
        (
            ["slowlog-max-len", "x"],
            FAILED.format("slowlog-max-len", "argument couldn't be parsed into an integer"),
        ),
        (
            ["slowlog-max-len", "-0"],
            FAILED.format("slowlog-max-len", "argument couldn't be parsed into an integer"),
        ),
        (
            ["slowlog-max-len", " 5"],
            FAILED.format("slowlog-max-len", "argument couldn't be parsed into an integer"),
        ),
        (
            ["slowlog-max-len", "1001"],
            FAILED.format("slowlog-max-len", "argument must be between 0 and 1000 inclusive"),
        ),
        (
            ["slowlog-log-slower-than", "-2"],
            FAILED.format(
                "slowlog-log-slower-than", "argument must be between -1 and 1000000 inclusive"
            ),
        ),
    ],
)
def test_config_set_errors_are_redis_s(words: list[str], expected: str) -> None:
    assert setting(*words) == ErrorReply(expected)
