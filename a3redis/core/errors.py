"""The one error type every front end maps to its own codes.

Rules: a request that fails raises a `RequestError` whose `kind` says what
the caller can do about it, independent of any wire protocol; its message
says what happened, precisely enough for a person to act on it. Each front
end (gRPC, RESP, HTTP) owns one table from `ErrorKind` to its codes and
never looks at the exception class. `reason` is a stable machine-readable
name (UPPER_SNAKE) for programs that need more than the kind; `metadata`
holds the facts behind it a program may act on (e.g. `required` and
`alive` replicas), as text; `detail` names a narrower reason where one class
covers several (e.g. KEY_TOO_LARGE). a3redis.core.error_details turns all
three into what a front end sends (gRPC: google.rpc.ErrorInfo); every reason
a client can see is listed in proto/a3redis/v1/kv.proto ("Errors").
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType


class ErrorKind(enum.Enum):
    # The request itself is wrong: sending it again cannot help.
    INVALID = "invalid"
    # The answer would exceed a size limit: ask for less per call.
    TOO_LARGE = "too_large"
    # A newer version of a key won last-write-wins: the write was not stored.
    CONFLICT = "conflict"
    # This cluster can never meet the request (e.g. ALL with more replicas than nodes).
    UNSATISFIABLE = "unsatisfiable"
    # Too few replicas are reachable now: retrying later may succeed.
    UNAVAILABLE = "unavailable"
    # Replicas did not answer in time: the outcome is unknown.
    TIMEOUT = "timeout"
    # This node is draining or its store has failed: retry on another node.
    NODE_UNAVAILABLE = "node_unavailable"
    # The caller did not prove who it is (no credential, or not a valid one).
    UNAUTHENTICATED = "unauthenticated"
    # The caller's credential does not allow this request.
    PERMISSION_DENIED = "permission_denied"


class RequestError(Exception):
    """A request that could not be served, with what the caller can do about it."""

    kind: ErrorKind = ErrorKind.UNAVAILABLE
    reason: str = "UNAVAILABLE"
    metadata: Mapping[str, str] = MappingProxyType({})
    detail: str | None = None

    def __init__(
        self, *args: object, metadata: Mapping[str, str] | None = None, detail: str | None = None
    ) -> None:
        super().__init__(*args)
        if metadata:
            self.metadata = metadata
        if detail is not None:
            self.detail = detail


def replica_counts(required: int, alive: int) -> dict[str, str]:
    """The metadata of a request that needed `required` replicas and had `alive`."""
    return {"required": str(required), "alive": str(alive)}


class WriteRejectedError(RequestError):
    """A newer version of the key already exists; the write was not stored."""

    kind = ErrorKind.CONFLICT
    reason = "LOST_LAST_WRITE_WINS"


class UnsatisfiableError(RequestError):
    """The consistency level can never be met by this cluster (e.g. ALL > nodes)."""

    kind = ErrorKind.UNSATISFIABLE
    reason = "TOO_FEW_NODES"


class UnavailableError(RequestError):
    """Too few replicas are reachable for the requested consistency."""

    kind = ErrorKind.UNAVAILABLE
    reason = "QUORUM_UNAVAILABLE"


class NotJoinedError(UnavailableError):
    """This node has not heard from its cluster yet and cannot place keys."""

    reason = "NOT_JOINED"


class TimedOutError(RequestError):
    """Replicas did not answer within the request deadline; outcome unknown."""

    kind = ErrorKind.TIMEOUT
    reason = "REPLICA_TIMEOUT"


class NodeUnavailableError(RequestError):
    """This node cannot serve requests now (draining, or its store failed)."""

    kind = ErrorKind.NODE_UNAVAILABLE
    reason = "NODE_UNAVAILABLE"


class UnauthenticatedError(RequestError):
    """The request carries no valid client token and this node requires one."""

    kind = ErrorKind.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDeniedError(RequestError):
    """The request's client token does not allow it (e.g. a write with a readonly token)."""

    kind = ErrorKind.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"
