"""MONITOR's lines: their format, their escapes, and which commands they show."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from a3redis.core.redis_monitor import monitor_line, quoted, shown_to_monitors


def words(text: str) -> list[bytes]:
    return [word.encode() for word in text.split()]


def test_a_line_is_redis_s() -> None:
    line = monitor_line([b"SET", b"k", b"v"], 1_700_000_000.25, "127.0.0.1:5000")
    assert line == b'+1700000000.250000 [0 127.0.0.1:5000] "SET" "k" "v"\r\n'


def test_words_are_quoted_and_escaped_as_sdscatrepr_does() -> None:
    assert quoted(b"plain words") == b'"plain words"'
    assert quoted(b'a"b\\c') == b'"a\\"b\\\\c"'
    assert quoted(b"\n\r\t\a\b") == b'"\\n\\r\\t\\a\\b"'
    assert quoted(b"\x00\x7f\xff~ ") == b'"\\x00\\x7f\\xff~ "'
    assert quoted(b"") == b'""'


@given(st.lists(st.binary(max_size=20), min_size=1, max_size=5))
def test_no_word_can_split_or_forge_a_line(request: list[bytes]) -> None:
    line = monitor_line([b"GET", *request], 1.5, "10.0.0.1:1")
    assert line.endswith(b"\r\n") and b"\r" not in line[:-2] and b"\n" not in line[:-2]
    assert all(0x20 <= byte < 0x7F for byte in line[:-2])


def test_passwords_are_redacted() -> None:
    assert monitor_line(words("AUTH default hunter2"), 0.0, "p").endswith(
        b'"AUTH" "(redacted)" "(redacted)"\r\n'
    )
    assert b"hunter2" not in monitor_line(words("HELLO 3 AUTH default hunter2"), 0.0, "p")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("GET k", True),
        ("set k v", True),
        ("CLIENT SETNAME x", True),
        ("AUTH secret", True),  # redacted, not hidden
        ("NOSUCH k", False),  # unknown
        ("GET", False),  # wrong number of words
        ("CLIENT NOSUCH", False),  # unknown subcommand
        ("CONFIG GET maxmemory", False),  # administrative
        ("CLIENT KILL ID 4", False),
        ("SLOWLOG GET", False),
        ("MONITOR", False),
        ("SAVE", False),
    ],
)
def test_monitors_see_known_commands_that_are_not_administrative(text: str, shown: bool) -> None:
    assert shown_to_monitors(words(text)) is shown


def test_an_empty_request_is_not_shown() -> None:
    assert not shown_to_monitors([])
