"""Node configuration, read once from the environment.

Rules: every setting has one typed field here and one environment variable;
`Config.from_env` either returns a complete, valid Config or raises
ConfigError naming the variable, the value and the accepted form. Nothing
else in the node reads the environment.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from a3redis.core.consistency import Consistency
from a3redis.core.names import NODE_ID_RULE, is_host, is_node_id, split_address
from a3redis.core.validation import Limits
from a3redis.logs import LogFormat
from a3redis.storage.store import FsyncPolicy

T = TypeVar("T")

_INT = re.compile(r"-?[0-9]{1,20}")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """An environment variable has a value the node cannot use."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Address:
        """`HOST:PORT`, or `[IPV6]:PORT`; the port is from 1 to 65535 (a3redis.core.names)."""
        text = text.strip()
        try:
            host, port = split_address(text)
        except ValueError:
            raise ValueError(f"{text[:300]!r} is not HOST:PORT or [IPV6]:PORT") from None
        return cls(host, port)


@dataclass(frozen=True, slots=True)
class Config:
    node_num: int
    node_id: str
    grpc_port: int
    gossip_port: int
    bind_host: str
    advertise_host: str
    peers: tuple[Address, ...]
    total_nodes: int | None
    replication_factor: int
    cluster_name: str
    data_dir: Path
    fsync: FsyncPolicy
    limits: Limits
    read_consistency: Consistency
    write_consistency: Consistency
    compact_min_bytes: int
    shutdown_grace: float
    gossip_interval: float
    failure_timeout: float
    dead_member_reap: float
    request_timeout: float
    peer_timeout: float
    hint_window: float
    sync_interval: float
    chunk_count: int
    merkle_fanout: int
    repair_max_keys_per_second: float
    tombstone_grace: float
    clock_offset_ms: int
    debug_log: bool
    debug_endpoints: bool
    max_connections: int
    log_format: LogFormat

    @property
    def grpc_address(self) -> Address:
        return Address(self.advertise_host, self.grpc_port)

    @property
    def gossip_address(self) -> Address:
        return Address(self.advertise_host, self.gossip_port)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        read = _Reader(env)
        node_num = read.value("NODE_NUM", "1", _int_in(1, 10_000), "an integer from 1 to 10000")
        bind_host = read.value("BIND_HOST", "127.0.0.1", _host, "an IP address or host name")
        default_advertise = socket.gethostname() if bind_host in ("0.0.0.0", "::") else bind_host
        limits = Limits(
            max_key_bytes=read.value(
                "MAX_KEY_BYTES", "1024", _int_in(1, 65_535), "an integer from 1 to 65535"
            ),
            max_value_bytes=read.value(
                "MAX_VALUE_BYTES",
                str(1024 * 1024),
                _int_in(0, 16 * 1024 * 1024),
                "an integer from 0 to 16777216",
            ),
            max_clock_skew_ms=round(
                1000
                * read.value(
                    "MAX_CLOCK_SKEW", "60", _float_in(1.0, 3600.0), "seconds, from 1 to 3600"
                )
            ),
        )
        consistency_form = "one of one, quorum, all, local"
        return cls(
            node_num=node_num,
            node_id=read.value(
                "NODE_ID",
                f"node-{node_num}",
                _node_id,
                NODE_ID_RULE,
            ),
            grpc_port=read.value(
                "GRPC_PORT",
                str(50050 + node_num),
                _int_in(0, 65535),
                "a port number from 0 to 65535",
            ),
            gossip_port=read.value(
                "GOSSIP_PORT",
                str(8000 + node_num),
                _int_in(0, 65535),
                "a port number from 0 to 65535",
            ),
            bind_host=bind_host,
            advertise_host=read.value(
                "ADVERTISE_HOST", default_advertise, _host, "an IP address or host name"
            ),
            peers=read.value("PEERS", "", _peers, "comma-separated HOST:PORT addresses"),
            total_nodes=read.value(
                "TOTAL_NODES", "", _optional(_int_in(1, 10_000)), "an integer from 1 to 10000"
            ),
            replication_factor=read.value(
                "REPLICATION_FACTOR", "3", _int_in(1, 15), "an integer from 1 to 15"
            ),
            cluster_name=read.value(
                "CLUSTER_NAME",
                "a3redis",
                _node_id,
                NODE_ID_RULE,
            ),
            data_dir=read.value("DATA_DIR", f"./data/node{node_num}", _path, "a directory path"),
            fsync=read.value(
                "FSYNC",
                "always",
                lambda text: FsyncPolicy(text.lower()),
                "one of always, everysec, no",
            ),
            limits=limits,
            read_consistency=read.value(
                "READ_CONSISTENCY", "quorum", _consistency, consistency_form
            ),
            write_consistency=read.value(
                "WRITE_CONSISTENCY", "quorum", _consistency, consistency_form
            ),
            compact_min_bytes=read.value(
                "COMPACT_MIN_BYTES",
                str(64 * 1024 * 1024),
                _int_in(4096, 2**40),
                "a byte count of at least 4096",
            ),
            shutdown_grace=read.value(
                "SHUTDOWN_GRACE", "1.5", _float_in(0.0, 60.0), "seconds, from 0 to 60"
            ),
            gossip_interval=read.value(
                "GOSSIP_INTERVAL", "1.0", _float_in(0.05, 60.0), "seconds, from 0.05 to 60"
            ),
            failure_timeout=read.value(
                "FAILURE_TIMEOUT", "10", _float_in(0.5, 3600.0), "seconds, from 0.5 to 3600"
            ),
            dead_member_reap=read.value(
                "DEAD_MEMBER_REAP",
                str(72 * 3600),
                _float_in(1.0, 365 * 86400.0),
                "seconds, from 1 to 31536000",
            ),
            request_timeout=read.value(
                "REQUEST_TIMEOUT", "3", _float_in(0.05, 600.0), "seconds, from 0.05 to 600"
            ),
            peer_timeout=read.value(
                "PEER_TIMEOUT", "2", _float_in(0.05, 600.0), "seconds, from 0.05 to 600"
            ),
            hint_window=read.value(
                "HINT_WINDOW", "10800", _float_in(0.0, 30 * 86400.0), "seconds, from 0 to 2592000"
            ),
            sync_interval=read.value(
                "SYNC_INTERVAL", "30", _float_in(0.1, 86400.0), "seconds, from 0.1 to 86400"
            ),
            chunk_count=read.value(
                "CHUNK_COUNT", "16", _power_of_two(1, 1024), "a power of two from 1 to 1024"
            ),
            merkle_fanout=read.value(
                "MERKLE_FANOUT", "16", _int_in(2, 256), "an integer from 2 to 256"
            ),
            repair_max_keys_per_second=read.value(
                "REPAIR_MAX_KEYS_PER_SECOND",
                "5000",
                _float_in(0.0, 1e9),
                "keys per second, 0 for no limit",
            ),
            tombstone_grace=read.value(
                "TOMBSTONE_GRACE",
                "86400",
                _float_in(1.0, 365 * 86400.0),
                "seconds, from 1 to 31536000",
            ),
            clock_offset_ms=read.value(
                "A3REDIS_CLOCK_OFFSET_MS",
                "0",
                _int_in(-86_400_000, 86_400_000),
                "milliseconds within a day (tests only)",
            ),
            debug_log=read.value("DEBUG_LOG", "0", _bool, "one of 1, 0, true, false"),
            max_connections=read.value(
                "MAX_CONNECTIONS", "1024", _int_in(1, 1_000_000), "an integer from 1 to 1000000"
            ),
            debug_endpoints=read.value("DEBUG_ENDPOINTS", "0", _bool, "one of 1, 0, true, false"),
            log_format=read.value(
                "LOG_FORMAT",
                "text",
                lambda text: LogFormat(text.lower()),
                "one of text, json",
            ),
        )


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def value(self, name: str, default: str, parse: Callable[[str], T], form: str) -> T:
        raw = self._env.get(name, default)
        try:
            return parse(raw.strip())
        except ValueError as error:
            detail = f" ({error})" if str(error) and "invalid literal" not in str(error) else ""
            raise ConfigError(f"{name}={raw!r} is invalid: expected {form}{detail}") from None


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not _INT.fullmatch(text):
            # int() would also take "1_000", "+7" or non-ASCII digits.
            raise ValueError("")
        number = int(text)
        if not low <= number <= high:
            raise ValueError("out of range")
        return number

    return parse


def _power_of_two(low: int, high: int) -> Callable[[str], int]:
    within = _int_in(low, high)

    def parse(text: str) -> int:
        number = within(text)
        if number & (number - 1):
            raise ValueError("not a power of two")
        return number

    return parse


def _float_in(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        number = float(text)
        if not low <= number <= high:
            raise ValueError("out of range")
        return number

    return parse


def _optional(parse: Callable[[str], T]) -> Callable[[str], T | None]:
    def parse_optional(text: str) -> T | None:
        return parse(text) if text else None

    return parse_optional


def _node_id(text: str) -> str:
    # The rule gossip applies to every id it hears (a3redis.core.names).
    if not is_node_id(text):
        raise ValueError("")
    return text


def _host(text: str) -> str:
    if not is_host(text):
        raise ValueError("")
    return text


def _path(text: str) -> Path:
    if not text:
        raise ValueError("empty")
    return Path(text)


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("")


def _peers(text: str) -> tuple[Address, ...]:
    return tuple(Address.parse(part) for part in text.split(",") if part.strip())


def _consistency(text: str) -> Consistency:
    try:
        return Consistency.parse(text)
    except ValueError:
        raise ValueError("") from None
