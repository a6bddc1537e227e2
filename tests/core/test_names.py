"""The one rule for node ids, cluster names and addresses, wherever they come from."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from a3redis.config import Config, ConfigError
from a3redis.core.names import is_address, is_host, is_node_id, split_address
from a3redis.net.address import Address

GOOD_IDS = ["node-1", "a", "A.b_c-9", "x" * 64, "0", "a..b"]
BAD_IDS = [
    "",
    ".",
    "..",
    "../../x",
    "a/b",
    "a\\b",
    "-lead",
    "_lead",
    ".hidden",
    "x" * 65,
    "x" * 256,
    "\ud800",
    "n\u00f6de",
    "node 1",
    "node\x00",
    "node\n",
]


@pytest.mark.parametrize("text", GOOD_IDS)
def test_good_ids(text: str) -> None:
    assert is_node_id(text)


@pytest.mark.parametrize("text", BAD_IDS, ids=ascii)
def test_bad_ids(text: str) -> None:
    assert not is_node_id(text)


@pytest.mark.parametrize("value", [None, 1, b"node-1", ["node-1"], {"id": 1}])
def test_only_strings_are_ids(value: object) -> None:
    assert not is_node_id(value)


@given(st.text(max_size=80))
def test_an_accepted_id_is_a_safe_file_name_and_encodes_everywhere(text: str) -> None:
    if is_node_id(text):
        assert text not in (".", "..") and "/" not in text and "\\" not in text
        assert text.encode("ascii").decode("ascii") == text
        assert 1 <= len(text) <= 64


@given(st.text(min_size=1, max_size=70).filter(lambda t: t == t.strip()))
def test_config_applies_the_same_rule_to_node_id_and_cluster_name(text: str) -> None:
    for variable in ("NODE_ID", "CLUSTER_NAME"):
        try:
            Config.from_env({variable: text})
            accepted = True
        except ConfigError:
            accepted = False
        assert accepted == is_node_id(text), (variable, text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8001", ("127.0.0.1", 8001)),
        ("db-1.example:1", ("db-1.example", 1)),
        ("[::1]:65535", ("::1", 65535)),
        ("[fe80::1%eth0]:9", ("fe80::1%eth0", 9)),
        ("h" * 253 + ":80", ("h" * 253, 80)),
    ],
)
def test_good_addresses(text: str, expected: tuple[str, int]) -> None:
    assert split_address(text) == expected
    assert is_address(text)
    assert str(Address.parse(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "host",
        "host:",
        ":80",
        "host:0",
        "host:65536",
        "host:99999999999999999999",
        "host:-1",
        "host:+80",
        "host:8_0",
        "host:\uff18\uff10",
        "::1:80",
        "[::1]80",
        "[host]:80",
        "h" * 254 + ":80",
        "user@host:80",
        "host/path:80",
        "host?:80",
        "ho st:80",
        "h\u00f6st:80",
        "\ud800:80",
        "http://host:80",
    ],
    ids=ascii,
)
def test_bad_addresses(text: str) -> None:
    assert not is_address(text)
    with pytest.raises(ValueError) as caught:
        split_address(text)
    # The message describes the form; it never repeats the input.
    assert repr(text) not in str(caught.value)


def test_hosts() -> None:
    assert is_host("::") and is_host("0.0.0.0") and is_host("node_1.local")
    assert not is_host("") and not is_host("a b") and not is_host("[::1]") and not is_host(5)
