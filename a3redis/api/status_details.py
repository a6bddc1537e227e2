"""Error details on the wire: core ErrorDetails <-> google.rpc.Status bytes.

Rules: no decisions here (a3redis.core.error_details decides what a failure
says). A failed call's status carries, in the `grpc-status-details-bin`
trailer, a google.rpc.Status with the same code and message, one
google.rpc.ErrorInfo (reason, domain "a3redis", metadata) and, when the
details have a retry delay, one google.rpc.RetryInfo. The messages are
a3redis.rpc's copies of google.rpc's (proto/a3redis/v1/error_details.proto);
each Any names the google.rpc type, so stock clients decode them. Encoding
runs only on the failure path. a3redis's own client reads the trailer through
`keep_details_in_client_errors` (purerpc's client drops it otherwise).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import purerpc.wrappers
from google.protobuf.message import DecodeError
from purerpc.grpclib.events import ResponseEnded
from purerpc.grpclib.exceptions import RpcFailedError
from purerpc.grpclib.headers import b64decode
from purerpc.grpclib.status import Status, StatusCode

from a3redis.core.error_details import ErrorDetails, details
from a3redis.net.grpc_server import DETAILS_TRAILER, FailedWithDetails
from a3redis.v1 import error_details_pb2 as epb

TYPE_URL_PREFIX = "type.googleapis.com/"
ERROR_INFO = TYPE_URL_PREFIX + "google.rpc.ErrorInfo"
RETRY_INFO = TYPE_URL_PREFIX + "google.rpc.RetryInfo"
# A details trailer larger than this is not decoded (a client reads what any server sends).
MAX_DETAILS_BYTES = 64 * 1024


def encode(code: StatusCode, message: str, what: ErrorDetails) -> bytes:
    """The serialized google.rpc.Status of a failure."""
    info = epb.ErrorInfo(reason=what.reason, domain=what.domain, metadata=dict(what.metadata))
    packed = [epb.Any(type_url=ERROR_INFO, value=info.SerializeToString())]
    if what.retry_delay is not None:
        fraction, seconds = math.modf(what.retry_delay)
        retry = epb.RetryInfo(
            retry_delay=epb.Duration(seconds=int(seconds), nanos=round(fraction * 1e9))
        )
        packed.append(epb.Any(type_url=RETRY_INFO, value=retry.SerializeToString()))
    return epb.Status(code=code.value, message=message, details=packed).SerializeToString()


def failure(code: StatusCode, message: str, what: ErrorDetails) -> FailedWithDetails:
    """The exception that ends a call with `code`, `message` and these details."""
    return FailedWithDetails(Status(code, message), encode(code, message, what))


def explain(code: StatusCode, message: str, reason: str) -> FailedWithDetails:
    """A failure the gRPC server or a service makes itself, named by `reason`."""
    return failure(code, message, details(reason))


def decode(data: bytes) -> ErrorDetails | None:
    """The ErrorInfo (and RetryInfo) of a serialized google.rpc.Status; None if it has none
    or is not one."""
    if len(data) > MAX_DETAILS_BYTES:
        return None
    try:
        status = epb.Status.FromString(data)
        info: epb.ErrorInfo | None = None
        delay: float | None = None
        for packed in status.details:
            if packed.type_url == ERROR_INFO and info is None:
                info = epb.ErrorInfo.FromString(packed.value)
            elif packed.type_url == RETRY_INFO and delay is None:
                duration = epb.RetryInfo.FromString(packed.value).retry_delay
                delay = duration.seconds + duration.nanos / 1e9
    except DecodeError:
        return None
    if info is None:
        return None
    return ErrorDetails(info.reason, dict(info.metadata), delay, info.domain)


_stock_parse_trailers = ResponseEnded.parse_from_stream_id_and_headers_destructive


def _parse_trailers_keeping_details(stream_id: int, headers: Any) -> ResponseEnded:
    encoded = headers.get(DETAILS_TRAILER)
    event = _stock_parse_trailers(stream_id, headers)
    if isinstance(encoded, str):
        with contextlib.suppress(ValueError):
            event.status.details = b64decode(encoded)
    return event


def _raise_status_with_details(status: Status) -> None:
    try:
        _stock_raise_status(status)
    except RpcFailedError as error:
        details = getattr(status, "details", None)
        if details is not None:
            error.status.details = details
        raise


_stock_raise_status = purerpc.wrappers.raise_status


def keep_details_in_client_errors() -> None:
    """Make purerpc's client keep a failed call's details trailer.

    purerpc drops every `grpc-` trailer but the status and message, and raises
    each failure with a Status of its own making; after this, the Status of a
    call's RpcFailedError has `details` (the trailer's bytes) when the server sent
    some. Idempotent; process-wide (purerpc has no per-channel hook).
    """
    ResponseEnded.parse_from_stream_id_and_headers_destructive = staticmethod(
        _parse_trailers_keeping_details
    )
    purerpc.wrappers.raise_status = _raise_status_with_details


def details_of_failure(status: Status) -> ErrorDetails | None:
    """The details a failed call's status carries (after keep_details_in_client_errors)."""
    data = getattr(status, "details", None)
    return decode(data) if isinstance(data, bytes) else None
