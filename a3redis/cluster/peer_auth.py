"""The cluster secret in the shells: sign what this node sends to members, check what they send.

Rules: every decision is the core's (a3redis.core.peer_auth); this module reads
the node's wall clock, draws nonces from os.urandom, carries credentials as
HTTP headers or gRPC metadata (the same four names, HEADERS), counts each
refusal by channel and reason (`refused`, shown as
a3redis_peer_auth_refused_total) and logs it at most once per sender per
LOG_INTERVAL. A node without a cluster secret has no PeerGuard (None), and
its messages carry no credentials.

Per message, signing costs one HMAC over the body and one nonce; checking
costs one HMAC (two for a message signed with the previous secret) and a dict
lookup in the replay cache. The body is the exact bytes sent: gossip's JSON as
posted, a Replica request as serialized once by the caller (who then sends
those very bytes), so nothing is serialized twice.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import trio

from a3redis.config import Config
from a3redis.core.peer_auth import (
    MAX_SECRET_BYTES,
    NONCE_BYTES,
    Credentials,
    Keyring,
    PeerAuth,
    Refusal,
    ReplayGuard,
    nonce_capacity,
    replay_window_ms,
    secret_from_file,
    secret_from_text,
)
from a3redis.core.throttle import LogThrottle, Tally

log = logging.getLogger("a3redis.cluster.peer_auth")

SENDER = "x-a3-sender"
TIMESTAMP = "x-a3-timestamp"
NONCE = "x-a3-nonce"
SIGNATURE = "x-a3-signature"
HEADERS = (SENDER, TIMESTAMP, NONCE, SIGNATURE)
# A refusal is logged at most once per sender (or source address) per this many seconds.
LOG_INTERVAL = 60.0
# The sender named by an operator's tools (the CLI) when they sign with the secret.
OPERATOR = "operator"


class Headers(Protocol):
    """What credentials are read from: HTTP headers (case-insensitive) or a dict."""

    def get(self, key: str, /) -> str | None: ...


class PeerGuard:
    """This node's signer and checker of messages between members."""

    def __init__(self, auth: PeerAuth, wall_ms: Callable[[], int]) -> None:
        self.auth = auth
        self._wall_ms = wall_ms
        # (channel, reason) -> messages refused: a3redis_peer_auth_refused_total.
        self.refused = Tally()
        self._log_throttle = LogThrottle(LOG_INTERVAL)

    @classmethod
    def from_config(cls, config: Config, wall_ms: Callable[[], int]) -> PeerGuard | None:
        """The guard of a node with a cluster secret; None without one."""
        secrets = config.cluster_secrets
        if secrets is None:
            return None
        window_ms = replay_window_ms(config.limits.max_clock_skew_ms)
        guard = ReplayGuard(window_ms, nonce_capacity(window_ms))
        return cls(PeerAuth(Keyring(*secrets), config.node_id, guard), wall_ms)

    # ----- sending ------------------------------------------------------------------------

    def sign(self, channel: str, body: bytes) -> Credentials:
        return self.auth.sign(channel, body, self._wall_ms(), os.urandom(NONCE_BYTES))

    def fields(self, channel: str, body: bytes) -> tuple[str, str, str, str]:
        """The values of HEADERS, in that order, that sign `body` for `channel` (a
        replica frame carries them as they are: a3redis.core.replica_frames)."""
        signed = self.sign(channel, body)
        return signed.sender, signed.timestamp_ms, signed.nonce, signed.signature

    def headers(self, channel: str, body: bytes) -> dict[str, str]:
        """HTTP headers that sign `body` for `channel`."""
        return dict(zip(HEADERS, self.fields(channel, body), strict=True))

    def metadata(self, channel: str, body: bytes) -> tuple[tuple[str, str], ...]:
        """gRPC metadata that signs `body` for `channel` (a3redis.net.h2_tuning sends the
        per-call values as never-indexed header fields)."""
        return tuple(zip(HEADERS, self.fields(channel, body), strict=True))

    # ----- receiving ----------------------------------------------------------------------

    def check(self, channel: str, headers: Headers, body: bytes, source: str) -> Refusal | None:
        """None if `body` came signed by a member for `channel`; otherwise the refusal,
        counted and logged (at most once per source per LOG_INTERVAL)."""
        credentials = Credentials.parse(
            headers.get(SENDER), headers.get(TIMESTAMP), headers.get(NONCE), headers.get(SIGNATURE)
        )
        refusal = self.auth.verify(channel, credentials, body, self._wall_ms())
        if refusal is not None:
            self._refused(channel, refusal, credentials, source)
        return refusal

    def check_metadata(
        self, channel: str, metadata: Iterable[tuple[str, object]], body: bytes
    ) -> Refusal | None:
        """`check` for gRPC metadata (the claimed sender names the source in logs)."""
        found: dict[str, str] = {}
        for name, value in metadata:
            if name in HEADERS and isinstance(value, str):
                found[name] = value
        return self.check(channel, found, body, found.get(SENDER, "unknown"))

    def _refused(
        self, channel: str, refusal: Refusal, credentials: Credentials | Refusal, source: str
    ) -> None:
        self.refused.add((channel, refusal.value))
        # Only a well-formed sender id reaches a log line (it may still be a lie).
        sender = credentials.sender if isinstance(credentials, Credentials) else None
        key = f"{source[:100]}|{sender}"
        should, held_back = self._log_throttle.should_log(key, trio.current_time())
        if should:
            more = f" ({held_back} more since the last line)" if held_back else ""
            log.warning(
                "refused %s from %s%s: %s (not signed with this cluster's secret, or stale "
                "or replayed)%s",
                channel,
                _printable(source),
                f" claiming to be {sender}" if sender else "",
                refusal.value,
                more,
            )


def operator_headers(env: Mapping[str, str], channel: str) -> dict[str, str]:
    """Headers that sign an operator's empty-bodied request for `channel` with the cluster
    secret in `env` (CLUSTER_SECRET_FILE or CLUSTER_SECRET); none when neither is set.
    ValueError names the variable when its secret cannot be used."""
    path, text = env.get("CLUSTER_SECRET_FILE", "").strip(), env.get("CLUSTER_SECRET", "").strip()
    if not path and not text:
        return {}
    try:
        if path:
            with open(path, "rb") as file:
                secret = secret_from_file(file.read(MAX_SECRET_BYTES + 3))
        else:
            secret = secret_from_text(text)
    except (OSError, ValueError) as error:
        variable = "CLUSTER_SECRET_FILE" if path else "CLUSTER_SECRET"
        reason = error.strerror if isinstance(error, OSError) else str(error)
        raise ValueError(f"{variable}: cannot use its secret ({reason})") from None
    guard = PeerGuard(PeerAuth(Keyring(secret), OPERATOR), lambda: time.time_ns() // 1_000_000)
    return guard.headers(channel, b"")


def _printable(text: str) -> str:
    """`text` for a log line: at most 100 characters, each printable ASCII or `?`."""
    return re.sub(r"[^!-~]", "?", text[:100])
