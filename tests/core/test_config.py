"""Config.from_env: typed defaults, and errors that say what to write instead."""

from __future__ import annotations

import atexit
import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from a3redis.config import Config, ConfigError, TokensFile, check_protected_mode
from a3redis.core.client_tokens import Role
from a3redis.core.consistency import Consistency
from a3redis.core.peer_auth import Secret
from a3redis.core.validation import Limits
from a3redis.net.address import Address
from a3redis.net.tls import TlsFiles
from a3redis.runtime.logs import LogFormat
from a3redis.storage.policy import FsyncPolicy
from tests.support.certificates import Authority

# A secret file for the tables below: 40 bytes and a newline.
SECRET_FILE = Path(__file__).resolve().parent / "data" / "cluster-secret"
FILE_SECRET = Secret(b"a3redis-test-cluster-secret-of-40-bytes!")
TEXT_SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret"

# TLS files for the tables below, made when the tests are collected (never kept in the tree).
TLS_DIR = Path(tempfile.mkdtemp(prefix="a3redis-config-tls-"))
atexit.register(shutil.rmtree, TLS_DIR, True)
CA = Authority.create(TLS_DIR)
NODE = CA.issue(TLS_DIR, "node-1")
OTHER_NODE = Authority.create(TLS_DIR / "other", "another CA").issue(TLS_DIR / "other", "node-1")
TLS_ENV = {"TLS_CERT_FILE": str(NODE.cert), "TLS_KEY_FILE": str(NODE.key)}


def test_defaults_for_node_3() -> None:
    config = Config.from_env({"NODE_NUM": "3"})
    assert config == Config(
        node_num=3,
        node_id="node-3",
        grpc_port=50053,
        gossip_port=8003,
        resp_port=6382,
        bind_host="127.0.0.1",
        advertise_host="127.0.0.1",
        peers=(),
        total_nodes=None,
        replication_factor=3,
        cluster_name="a3redis",
        data_dir=Path("./data/node3"),
        fsync=FsyncPolicy.ALWAYS,
        limits=Limits(max_key_bytes=1024, max_value_bytes=1024 * 1024),
        read_consistency=Consistency.QUORUM,
        write_consistency=Consistency.QUORUM,
        compact_min_bytes=64 * 1024 * 1024,
        shutdown_grace=1.5,
        gossip_interval=1.0,
        failure_timeout=10.0,
        dead_member_reap=259200.0,
        join_timeout=30.0,
        request_timeout=3.0,
        peer_timeout=2.0,
        hint_window=10800.0,
        sync_interval=30.0,
        chunk_count=16,
        merkle_fanout=16,
        repair_max_keys_per_second=5000.0,
        stream_max_keys_per_second=200000.0,
        stream_busy_keys_per_second=10000.0,
        tombstone_grace=86400.0,
        clock_offset_ms=0,
        debug_log=False,
        debug_endpoints=False,
        max_connections=1024,
        resp_max_connections=10_000,
        resp_idle_timeout=0.0,
        resp_max_reply_buffer=64 * 1024 * 1024,
        slowlog_log_slower_than=10_000,
        slowlog_max_len=128,
        allow_flush=False,
        replica_frames=True,
        log_format=LogFormat.TEXT,
        client_tokens=None,
        metrics_require_token=False,
        status_require_token=False,
        cluster_secret_file=None,
        cluster_secret=None,
        cluster_secret_previous_file=None,
        cluster_secret_previous=None,
        insecure=False,
        tls_cert_file=None,
        tls_key_file=None,
        tls_ca_file=None,
        tls_require_client_cert=False,
    )
    assert config.tls is None
    assert str(config.grpc_address) == "127.0.0.1:50053"
    assert str(config.gossip_address) == "127.0.0.1:8003"


def test_empty_environment_is_node_1() -> None:
    config = Config.from_env({})
    assert (config.node_num, config.node_id, config.grpc_port, config.gossip_port) == (
        1,
        "node-1",
        50051,
        8001,
    )
    assert config.data_dir == Path("data/node1")


# (variable, value, the Config attribute it sets, the expected value)
TOKENS_FILE = Path(__file__).parent / "client_tokens.example"


class ReadFrom:
    """Equal to a TokensFile read from `path` (its digests' key is random per read)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TokensFile)
            and other.path == self.path
            and other.tokens.role_of("readonly-token-0001") is Role.READONLY
            and other.tokens.role_of("admin-token-000001") is Role.ADMIN
        )


SETTINGS: list[tuple[str, str, str, Any]] = [
    ("NODE_NUM", "7", "node_num", 7),
    ("NODE_ID", "alpha.1_b-2", "node_id", "alpha.1_b-2"),
    ("GRPC_PORT", "6000", "grpc_port", 6000),
    ("GOSSIP_PORT", "0", "gossip_port", 0),
    ("BIND_HOST", "10.0.0.5", "bind_host", "10.0.0.5"),
    ("ADVERTISE_HOST", "db1.example", "advertise_host", "db1.example"),
    ("PEERS", "h1:1,h2:2", "peers", (Address("h1", 1), Address("h2", 2))),
    ("TOTAL_NODES", "5", "total_nodes", 5),
    ("REPLICATION_FACTOR", "15", "replication_factor", 15),
    ("CLUSTER_NAME", "prod-eu", "cluster_name", "prod-eu"),
    ("DATA_DIR", "/var/lib/a3", "data_dir", Path("/var/lib/a3")),
    ("FSYNC", "everysec", "fsync", FsyncPolicy.EVERYSEC),
    ("MAX_KEY_BYTES", "65535", "limits", Limits(max_key_bytes=65535)),
    ("MAX_VALUE_BYTES", "0", "limits", Limits(max_value_bytes=0)),
    ("MAX_CLOCK_SKEW", "2.5", "limits", Limits(max_clock_skew_ms=2500)),
    ("READ_CONSISTENCY", "one", "read_consistency", Consistency.ONE),
    ("WRITE_CONSISTENCY", "CONSISTENCY_ALL", "write_consistency", Consistency.ALL),
    ("COMPACT_MIN_BYTES", "4096", "compact_min_bytes", 4096),
    ("SHUTDOWN_GRACE", "0", "shutdown_grace", 0.0),
    ("GOSSIP_INTERVAL", "0.2", "gossip_interval", 0.2),
    ("FAILURE_TIMEOUT", "3", "failure_timeout", 3.0),
    ("DEAD_MEMBER_REAP", "2.5", "dead_member_reap", 2.5),
    ("JOIN_TIMEOUT", "0", "join_timeout", 0.0),
    ("REQUEST_TIMEOUT", "7.5", "request_timeout", 7.5),
    ("PEER_TIMEOUT", "0.5", "peer_timeout", 0.5),
    ("HINT_WINDOW", "60", "hint_window", 60.0),
    ("SYNC_INTERVAL", "0.5", "sync_interval", 0.5),
    ("CHUNK_COUNT", "64", "chunk_count", 64),
    ("MERKLE_FANOUT", "4", "merkle_fanout", 4),
    ("REPAIR_MAX_KEYS_PER_SECOND", "0", "repair_max_keys_per_second", 0.0),
    ("STREAM_MAX_KEYS_PER_SECOND", "50000", "stream_max_keys_per_second", 50000.0),
    ("STREAM_BUSY_KEYS_PER_SECOND", "5000", "stream_busy_keys_per_second", 5000.0),
    ("A3REDIS_CLOCK_OFFSET_MS", "-5000", "clock_offset_ms", -5000),
    ("TOMBSTONE_GRACE", "60", "tombstone_grace", 60.0),
    ("DEBUG_LOG", "true", "debug_log", True),
    ("DEBUG_ENDPOINTS", "1", "debug_endpoints", True),
    ("MAX_CONNECTIONS", "10", "max_connections", 10),
    ("RESP_PORT", "0", "resp_port", 0),
    ("RESP_MAX_CONNECTIONS", "10", "resp_max_connections", 10),
    ("RESP_IDLE_TIMEOUT", "2.5", "resp_idle_timeout", 2.5),
    ("RESP_MAX_REPLY_BUFFER", "1048576", "resp_max_reply_buffer", 1048576),
    ("SLOWLOG_LOG_SLOWER_THAN", "-1", "slowlog_log_slower_than", -1),
    ("SLOWLOG_MAX_LEN", "0", "slowlog_max_len", 0),
    ("ALLOW_FLUSH", "1", "allow_flush", True),
    ("REPLICA_FRAMES", "0", "replica_frames", False),
    ("LOG_FORMAT", "JSON", "log_format", LogFormat.JSON),
    ("CLIENT_TOKENS_FILE", str(TOKENS_FILE), "client_tokens", ReadFrom(TOKENS_FILE)),
    ("METRICS_REQUIRE_TOKEN", "1", "metrics_require_token", True),
    ("STATUS_REQUIRE_TOKEN", "true", "status_require_token", True),
    ("CLUSTER_SECRET_FILE", str(SECRET_FILE), "cluster_secret_file", FILE_SECRET),
    ("CLUSTER_SECRET", TEXT_SECRET, "cluster_secret", Secret(TEXT_SECRET.encode())),
    ("CLUSTER_SECRET_PREVIOUS_FILE", str(SECRET_FILE), "cluster_secret_previous_file", FILE_SECRET),
    (
        "CLUSTER_SECRET_PREVIOUS",
        TEXT_SECRET,
        "cluster_secret_previous",
        Secret(TEXT_SECRET.encode()),
    ),
    ("INSECURE", "1", "insecure", True),
    ("TLS_CERT_FILE", str(NODE.cert), "tls_cert_file", NODE.cert),
    ("TLS_KEY_FILE", str(NODE.key), "tls_key_file", NODE.key),
    ("TLS_CA_FILE", str(CA.file), "tls_ca_file", CA.file),
    ("TLS_REQUIRE_CLIENT_CERT", "1", "tls_require_client_cert", True),
]


@pytest.mark.parametrize(("name", "value", "attribute", "expected"), SETTINGS)
def test_each_variable_sets_its_field(name: str, value: str, attribute: str, expected: Any) -> None:
    # A previous secret is taken only beside a current one.
    beside = {"CLUSTER_SECRET": TEXT_SECRET} if "PREVIOUS" in name else {}
    # TLS settings are taken only together (a certificate with its key, a CA beside them).
    if name.startswith("TLS_"):
        beside = {**TLS_ENV, "TLS_CA_FILE": str(CA.file)}
    config = Config.from_env({name: value, **beside})
    assert getattr(config, attribute) == expected
    assert getattr(Config.from_env({}), attribute) != expected


def test_every_field_has_a_variable() -> None:
    covered = {attribute for _, _, attribute, _ in SETTINGS}
    assert covered == {field.name for field in dataclasses.fields(Config)}


PORT = "a port number from 0 to 65535"
TOKENS_FORM = "a readable tokens file: `<token> <role>` lines"
BAD_VALUES = [
    ("GRPC_PORT", "abc", PORT),
    ("GRPC_PORT", "70000", PORT),
    ("GRPC_PORT", "-1", PORT),
    ("GRPC_PORT", "5_0052", PORT),
    ("GRPC_PORT", "\u0665\u0660\u0660\u0665\u0662", PORT),
    ("GOSSIP_PORT", "65536", PORT),
    ("NODE_NUM", "0", "an integer from 1 to 10000"),
    ("NODE_NUM", "1.5", "an integer from 1 to 10000"),
    ("NODE_NUM", "", "an integer from 1 to 10000"),
    ("FSYNC", "sometimes", "one of always, everysec, no"),
    ("REPLICATION_FACTOR", "0", "an integer from 1 to 15"),
    ("REPLICATION_FACTOR", "16", "an integer from 1 to 15"),
    ("TOTAL_NODES", "0", "an integer from 1 to 10000"),
    ("MAX_KEY_BYTES", "-1", "an integer from 1 to 65535"),
    ("MAX_KEY_BYTES", "0", "an integer from 1 to 65535"),
    ("MAX_VALUE_BYTES", "16777217", "an integer from 0 to 16777216"),
    ("MAX_CLOCK_SKEW", "0.5", "seconds, from 1 to 3600"),
    ("MAX_CLOCK_SKEW", "3601", "seconds, from 1 to 3600"),
    ("MAX_CLOCK_SKEW", "nan", "seconds, from 1 to 3600"),
    ("MAX_CLOCK_SKEW", "soon", "seconds, from 1 to 3600"),
    ("COMPACT_MIN_BYTES", "4095", "a byte count of at least 4096"),
    ("PEERS", "nohostport", "comma-separated HOST:PORT addresses"),
    ("PEERS", "127.0.0.1:", "comma-separated HOST:PORT addresses"),
    ("PEERS", ":50052", "comma-separated HOST:PORT addresses"),
    ("PEERS", "127.0.0.1:0", "comma-separated HOST:PORT addresses"),
    ("PEERS", "127.0.0.1:65536", "comma-separated HOST:PORT addresses"),
    ("PEERS", "127.0.0.1:50052,oops", "comma-separated HOST:PORT addresses"),
    ("PEERS", "http://127.0.0.1:50052", "comma-separated HOST:PORT addresses"),
    ("PEERS", "a host:50052", "comma-separated HOST:PORT addresses"),
    ("PEERS", "::1", "comma-separated HOST:PORT addresses"),
    ("PEERS", "::1:50052", "comma-separated HOST:PORT addresses"),
    ("PEERS", "[::1]50052", "comma-separated HOST:PORT addresses"),
    ("PEERS", "[::1", "comma-separated HOST:PORT addresses"),
    ("PEERS", "[::1]:", "comma-separated HOST:PORT addresses"),
    ("PEERS", "h:\uff15\uff10\uff10\uff15\uff12", "comma-separated HOST:PORT addresses"),
    ("DEBUG_LOG", "maybe", "one of 1, 0, true, false"),
    ("DEBUG_ENDPOINTS", "yes please", "one of 1, 0, true, false"),
    ("MAX_CONNECTIONS", "0", "an integer from 1 to 1000000"),
    ("RESP_PORT", "65536", PORT),
    ("RESP_PORT", "-1", PORT),
    ("RESP_MAX_CONNECTIONS", "0", "an integer from 1 to 1000000"),
    ("RESP_IDLE_TIMEOUT", "-1", "seconds, from 0 to 2592000; 0 for never"),
    ("RESP_MAX_REPLY_BUFFER", "1000", "a byte count from 1048576 to 1099511627776"),
    ("SLOWLOG_LOG_SLOWER_THAN", "-2", "microseconds, from -1 to 1099511627776; -1: none"),
    ("SLOWLOG_MAX_LEN", "1000001", "an integer from 0 to 1000000"),
    ("ALLOW_FLUSH", "sure", "one of 1, 0, true, false"),
    ("REPLICA_FRAMES", "maybe", "one of 1, 0, true, false"),
    ("LOG_FORMAT", "yaml", "one of text, json"),
    ("NODE_ID", "bad id", "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"),
    ("NODE_ID", "-lead", "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"),
    ("NODE_ID", "n" * 65, "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"),
    ("NODE_ID", "", "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"),
    (
        "CLUSTER_NAME",
        "a/b",
        "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
    ),
    ("READ_CONSISTENCY", "most", "one of one, quorum, all, local"),
    ("WRITE_CONSISTENCY", "quorom", "one of one, quorum, all, local"),
    ("SHUTDOWN_GRACE", "x", "seconds, from 0 to 60"),
    ("SHUTDOWN_GRACE", "61", "seconds, from 0 to 60"),
    ("SHUTDOWN_GRACE", "-0.5", "seconds, from 0 to 60"),
    ("SHUTDOWN_GRACE", "nan", "seconds, from 0 to 60"),
    ("SHUTDOWN_GRACE", "inf", "seconds, from 0 to 60"),
    ("GOSSIP_INTERVAL", "0", "seconds, from 0.05 to 60"),
    ("FAILURE_TIMEOUT", "soon", "seconds, from 0.5 to 3600"),
    ("DEAD_MEMBER_REAP", "0.5", "seconds, from 1 to 31536000"),
    ("JOIN_TIMEOUT", "-1", "seconds, from 0 to 3600"),
    ("REQUEST_TIMEOUT", "0", "seconds, from 0.05 to 600"),
    ("PEER_TIMEOUT", "-1", "seconds, from 0.05 to 600"),
    ("HINT_WINDOW", "forever", "seconds, from 0 to 2592000"),
    ("SYNC_INTERVAL", "0", "seconds, from 0.1 to 86400"),
    ("CHUNK_COUNT", "12", "a power of two from 1 to 1024"),
    ("MERKLE_FANOUT", "1", "an integer from 2 to 256"),
    ("REPAIR_MAX_KEYS_PER_SECOND", "-1", "keys per second, 0 for no limit"),
    ("STREAM_MAX_KEYS_PER_SECOND", "fast", "keys per second, 0 for no limit"),
    ("STREAM_BUSY_KEYS_PER_SECOND", "-1", "keys per second, 0 for no limit"),
    ("A3REDIS_CLOCK_OFFSET_MS", "soon", "milliseconds within a day (tests only)"),
    ("TOMBSTONE_GRACE", "0", "seconds, from 1 to 31536000"),
    ("BIND_HOST", "", "an IP address or host name"),
    ("ADVERTISE_HOST", "user@host", "an IP address or host name"),
    ("ADVERTISE_HOST", "h\u00f6st", "an IP address or host name"),
    ("ADVERTISE_HOST", "h" * 254, "an IP address or host name"),
    ("NODE_ID", "\ud800", "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"),
    ("PEERS", "h\u00f6st:1", "comma-separated HOST:PORT addresses"),
    ("DATA_DIR", "", "a directory path"),
    ("CLIENT_TOKENS_FILE", "/nonexistent/tokens", TOKENS_FORM),
    ("CLIENT_TOKENS_FILE", str(Path(__file__).parent), TOKENS_FORM),
    ("METRICS_REQUIRE_TOKEN", "2", "one of 1, 0, true, false"),
    ("STATUS_REQUIRE_TOKEN", "maybe", "one of 1, 0, true, false"),
    ("INSECURE", "please", "one of 1, 0, true, false"),
    (
        "TLS_CERT_FILE",
        "/nonexistent/node.pem",
        "a readable PEM file of certificates (cannot read it: No such file or directory)",
    ),
    (
        "TLS_CERT_FILE",
        str(NODE.key),
        "a readable PEM file of certificates (it holds a private key: keep the key in its own "
        "file (TLS_KEY_FILE))",
    ),
    (
        "TLS_KEY_FILE",
        str(NODE.cert),
        "a readable PEM private key file (no PEM private key (-----BEGIN PRIVATE KEY-----) in it)",
    ),
    ("TLS_CA_FILE", str(SECRET_FILE), "a readable PEM file of certificates (no PEM certificate"),
    ("TLS_REQUIRE_CLIENT_CERT", "maybe", "one of 1, 0, true, false"),
    (
        "CLUSTER_SECRET_FILE",
        "/nonexistent/secret",
        "a readable file holding a secret of 32 to 4096 bytes (one trailing newline is "
        "ignored) (cannot read it: No such file or directory)",
    ),
    (
        "CLUSTER_SECRET_PREVIOUS_FILE",
        str(Path(__file__).resolve().parent),
        "a readable file holding a secret of 32 to 4096 bytes",
    ),
]

# Secrets given in the environment: the message names the variable, never the value.
HIDDEN_BAD_VALUES = [
    ("CLUSTER_SECRET", "s" * 31, "a secret of 32 to 4096 bytes (31 bytes, fewer than 32)"),
    ("CLUSTER_SECRET_PREVIOUS", "\ud800" * 40, "a secret of 32 to 4096 bytes (not valid UTF-8)"),
]


@pytest.mark.parametrize(("name", "value", "form"), BAD_VALUES, ids=lambda v: ascii(v)[:30])
def test_bad_value_names_the_variable_and_the_accepted_form(
    name: str, value: str, form: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"NODE_NUM": "2", name: value})
    message = str(caught.value)
    assert message.startswith(f"{name}={value!r} is invalid: expected {form}"), message
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(("name", "value", "form"), HIDDEN_BAD_VALUES, ids=lambda v: ascii(v)[:30])
def test_a_bad_secret_names_the_variable_and_never_shows_the_value(
    name: str, value: str, form: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"CLUSTER_SECRET": TEXT_SECRET, name: value})
    message = str(caught.value)
    assert message == f"{name}=<{len(value)} characters, hidden> is invalid: expected {form}"
    assert value[:8] not in message


def test_every_variable_has_a_bad_value_case() -> None:
    checked = {name for name, _, _ in BAD_VALUES + HIDDEN_BAD_VALUES}
    assert checked >= {name for name, _, _, _ in SETTINGS}


def test_peers_in_the_seed_form() -> None:
    config = Config.from_env({"PEERS": "127.0.0.1:50052,127.0.0.1:50053"})
    assert config.peers == (Address("127.0.0.1", 50052), Address("127.0.0.1", 50053))
    assert [str(peer) for peer in config.peers] == ["127.0.0.1:50052", "127.0.0.1:50053"]


def test_peers_tolerate_spaces_and_empty_items() -> None:
    config = Config.from_env({"PEERS": " 127.0.0.1:50052 , ,host-b:7 ,"})
    assert config.peers == (Address("127.0.0.1", 50052), Address("host-b", 7))


def test_ipv6_peer() -> None:
    config = Config.from_env({"PEERS": "[::1]:50052,[fe80::1%eth0]:9"})
    assert config.peers == (Address("::1", 50052), Address("fe80::1%eth0", 9))
    assert str(config.peers[0]) == "[::1]:50052"


def test_ipv6_bind_host_gives_a_bracketed_address() -> None:
    config = Config.from_env({"BIND_HOST": "::1", "GRPC_PORT": "7000"})
    assert str(config.grpc_address) == "[::1]:7000"


@pytest.mark.parametrize("value", ["ALWAYS", "EverySec", "no", " NO "])
def test_fsync_is_case_insensitive(value: str) -> None:
    assert Config.from_env({"FSYNC": value}).fsync is FsyncPolicy(value.strip().lower())


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("TRUE", True), ("yes", True), ("On", True), ("0", False), ("off", False)],
)
def test_debug_log_booleans(value: str, expected: bool) -> None:
    assert Config.from_env({"DEBUG_LOG": value}).debug_log is expected


hosts = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True) | st.sampled_from(
    ["::1", "::", "fe80::1", "2001:db8::7", "127.0.0.1"]
)


@given(hosts, st.integers(1, 65535))
def test_address_round_trips(host: str, port: int) -> None:
    address = Address(host, port)
    assert Address.parse(str(address)) == address
    assert Address.parse(f"  {address}  ") == address


def test_config_is_immutable() -> None:
    config = Config.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.grpc_port = 1  # type: ignore[misc]


def test_wildcard_bind_advertises_a_reachable_name() -> None:
    config = Config.from_env({"BIND_HOST": "0.0.0.0"})
    assert config.advertise_host not in ("", "0.0.0.0")
    explicit = Config.from_env({"BIND_HOST": "::", "ADVERTISE_HOST": "10.1.2.3"})
    assert str(explicit.grpc_address) == "10.1.2.3:50051"


def test_hints_are_never_kept_longer_than_a_tombstone_may_live() -> None:
    """A hint older than TOMBSTONE_GRACE could bring back a value whose delete was purged."""
    assert Config.from_env({}).hints_kept_for == 3 * 3600
    short_grace = Config.from_env({"HINT_WINDOW": "10800", "TOMBSTONE_GRACE": "60"})
    assert short_grace.hints_kept_for == 60
    assert Config.from_env({"HINT_WINDOW": "5"}).hints_kept_for == 5


def test_a_bad_tokens_file_is_named_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# ops\nreadonly-token-0001 readonly\nshort admin\n")
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"CLIENT_TOKENS_FILE": str(path)})
    assert str(caught.value) == (
        f"CLIENT_TOKENS_FILE={str(path)!r} is invalid: expected {TOKENS_FORM} "
        "(line 3: the token has 5 characters; a token has 16 to 256)"
    )


def test_an_unreadable_tokens_file_says_why() -> None:
    with pytest.raises(ConfigError, match=r"\(cannot read it: No such file or directory\)"):
        Config.from_env({"CLIENT_TOKENS_FILE": "/nonexistent/tokens"})


@pytest.mark.parametrize("name", ["CLUSTER_SECRET", "CLUSTER_SECRET_PREVIOUS"])
def test_both_forms_of_one_secret_are_refused(name: str) -> None:
    env = {"CLUSTER_SECRET": TEXT_SECRET, name: TEXT_SECRET, f"{name}_FILE": str(SECRET_FILE)}
    with pytest.raises(ConfigError, match=f"{name}_FILE and {name} are both set"):
        Config.from_env(env)


def test_a_previous_secret_needs_a_current_one() -> None:
    with pytest.raises(ConfigError, match="without CLUSTER_SECRET"):
        Config.from_env({"CLUSTER_SECRET_PREVIOUS_FILE": str(SECRET_FILE)})


def test_cluster_secrets_come_from_either_form() -> None:
    assert Config.from_env({}).cluster_secrets is None
    from_file = Config.from_env(
        {"CLUSTER_SECRET_FILE": str(SECRET_FILE), "CLUSTER_SECRET_PREVIOUS": TEXT_SECRET}
    )
    assert from_file.cluster_secrets == (FILE_SECRET, Secret(TEXT_SECRET.encode()))
    from_text = Config.from_env({"CLUSTER_SECRET": f"  {TEXT_SECRET}  "})
    assert from_text.cluster_secrets == (Secret(TEXT_SECRET.encode()), None)
    assert TEXT_SECRET not in repr(from_text)


@pytest.mark.parametrize(
    ("env", "refused"),
    [
        ({}, False),
        ({"BIND_HOST": "127.0.0.1"}, False),
        ({"BIND_HOST": "127.3.4.5"}, False),
        ({"BIND_HOST": "::1"}, False),
        ({"BIND_HOST": "localhost"}, False),
        ({"BIND_HOST": "0.0.0.0"}, True),
        ({"BIND_HOST": "::"}, True),
        ({"BIND_HOST": "10.0.0.5"}, True),
        ({"BIND_HOST": "db1.example"}, True),
        ({"BIND_HOST": "0.0.0.0", "INSECURE": "1"}, False),
        ({"BIND_HOST": "0.0.0.0", "CLUSTER_SECRET": TEXT_SECRET}, False),
        ({"BIND_HOST": "0.0.0.0", "CLUSTER_SECRET_FILE": str(SECRET_FILE)}, False),
    ],
)
def test_protected_mode_refuses_a_reachable_node_without_a_secret(
    env: dict[str, str], refused: bool
) -> None:
    config = Config.from_env(env)
    if not refused:
        check_protected_mode(config)
        return
    with pytest.raises(ConfigError) as caught:
        check_protected_mode(config)
    assert "CLUSTER_SECRET_FILE" in str(caught.value)
    assert "INSECURE=1" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_tls_settings_make_the_node_s_tls_files() -> None:
    config = Config.from_env({**TLS_ENV, "TLS_CA_FILE": str(CA.file)})
    assert config.tls == TlsFiles(NODE.cert, NODE.key, CA.file, require_client_cert=False)
    assert Config.from_env(TLS_ENV).tls == TlsFiles(NODE.cert, NODE.key)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TLS_CERT_FILE": str(NODE.cert)}, "TLS_CERT_FILE is set without TLS_KEY_FILE"),
        ({"TLS_KEY_FILE": str(NODE.key)}, "TLS_KEY_FILE is set without TLS_CERT_FILE"),
        ({"TLS_CA_FILE": str(CA.file)}, "TLS_CA_FILE is set without TLS_CERT_FILE"),
        (
            {**TLS_ENV, "TLS_REQUIRE_CLIENT_CERT": "1"},
            "TLS_REQUIRE_CLIENT_CERT=1 needs TLS_CA_FILE",
        ),
        (
            {"TLS_CERT_FILE": str(NODE.cert), "TLS_KEY_FILE": str(OTHER_NODE.key)},
            f"TLS_KEY_FILE={str(OTHER_NODE.key)!r} cannot be used: it does not go with "
            f"TLS_CERT_FILE={str(NODE.cert)!r}",
        ),
    ],
    ids=["cert alone", "key alone", "CA alone", "client certs without a CA", "another key"],
)
def test_tls_settings_that_cannot_work_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env(env)
    assert str(caught.value).startswith(message), caught.value
