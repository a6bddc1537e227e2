"""gRPC server reflection (grpc.reflection.v1 and v1alpha): a node describes its own services.

Rules: what may be described is fixed when the node starts (`Catalogue`): the
public services' files and every file they import, read from protobuf's
descriptor pool (the generated modules registered them). A stream answers
each request from that table alone: a dict lookup and a copy of bytes made
once, so a request costs the same whatever is asked. The internal Replica
service is part of the table only for a cluster member: a connection whose
client certificate TLS_CA_FILE signed, or a stream whose metadata carries a
signature with the cluster secret (of the method name and an empty body).
Without either configured nobody is proven a member, so Replica is never
listed: it is not a client's API, and it stays callable (and described in
proto/) for the nodes themselves. A stream answers at most
MAX_REQUESTS_PER_STREAM requests, then ends with RESOURCE_EXHAUSTED; more
streams on one connection are bounded by its stream limit (a3redis.net.grpc_socket).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable
from dataclasses import dataclass
from typing import Any

import purerpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from purerpc.grpclib.status import StatusCode

from a3redis.api import status_details
from a3redis.api.grpc_services import _decoded_by_methods, _Undecoded
from a3redis.api.health import decoded
from a3redis.cluster.peer_auth import SIGNATURE, PeerGuard
from a3redis.core.error_details import details
from a3redis.net.grpc_server import connection_certified
from a3redis.v1 import reflection_grpc, reflection_v1alpha_grpc
from a3redis.v1 import reflection_pb2 as rpb

# Services every caller may discover, and those only cluster members may.
PUBLIC_SERVICES = (
    "a3redis.v1.KeyValue",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
)
MEMBER_SERVICES = ("a3redis.v1.Replica",)
# Requests one reflection stream may make (a client describing every service asks a few dozen).
MAX_REQUESTS_PER_STREAM = 256
# The method name members sign (with an empty body) to be shown the internal services.
SIGNED_CHANNEL = "ServerReflectionInfo"

NOT_FOUND = StatusCode.NOT_FOUND.value


@dataclass(frozen=True, slots=True)
class Catalogue:
    """What one kind of caller may discover: service names and files, with their imports."""

    services: tuple[str, ...]
    # File name -> the serialized FileDescriptorProto of it, then of each file it imports.
    files: dict[str, tuple[bytes, ...]]

    @classmethod
    def of(cls, services: Iterable[str]) -> Catalogue:
        pool = descriptor_pool.Default()
        names = tuple(services)
        files: dict[str, tuple[bytes, ...]] = {}
        for service in names:
            _add_with_imports(pool.FindServiceByName(service).file, files)
        return cls(names, files)

    def file_containing(self, symbol: str) -> tuple[bytes, ...] | None:
        """The file that defines `symbol` (and its imports), if this catalogue holds it."""
        pool = descriptor_pool.Default()
        # A method or field is found through the service or message that holds it.
        for name in (symbol, symbol.rpartition(".")[0]):
            try:
                return self.files.get(pool.FindFileContainingSymbol(name).name)
            except KeyError:
                continue
        return None

    def message_type(self, name: str) -> str | None:
        """The full name of message type `name` if a file of this catalogue defines it."""
        try:
            message = descriptor_pool.Default().FindMessageTypeByName(name)
        except KeyError:
            return None
        return message.full_name if message.file.name in self.files else None


def _add_with_imports(file: FileDescriptor, into: dict[str, tuple[bytes, ...]]) -> None:
    """Add `file` to `into` as its own bytes followed by those of everything it imports."""
    if file.name in into:
        return
    order: list[FileDescriptor] = []
    seen: set[str] = set()
    pending = [file]
    while pending:  # bounded by the files in the pool; each is visited once
        current = pending.pop()
        if current.name in seen:
            continue
        seen.add(current.name)
        order.append(current)
        pending.extend(current.dependencies)
    into[file.name] = tuple(each.serialized_pb for each in order)
    for dependency in file.dependencies:
        _add_with_imports(dependency, into)


class Reflection:
    """The answers of both reflection services, for callers that are members or not."""

    def __init__(self, guard: PeerGuard | None) -> None:
        self.guard = guard
        self.public = Catalogue.of(PUBLIC_SERVICES)
        self.members = Catalogue.of(PUBLIC_SERVICES + MEMBER_SERVICES)

    def catalogue_for(self, metadata: Collection[tuple[str, Any]]) -> Catalogue:
        if connection_certified():
            return self.members
        signed = any(name == SIGNATURE for name, _ in metadata)
        # Only a caller that signed is checked: an unsigned one is a client, not a refusal.
        if (
            signed
            and self.guard is not None
            and self.guard.check_metadata(SIGNED_CHANNEL, metadata, b"") is None
        ):
            return self.members
        return self.public

    async def answer(
        self, requests: AsyncIterator[_Undecoded], request: Any
    ) -> AsyncIterator[rpb.ServerReflectionResponse]:
        catalogue = self.catalogue_for(request.custom_metadata)
        answered = 0
        async for undecoded in requests:
            if answered == MAX_REQUESTS_PER_STREAM:
                raise status_details.failure(
                    StatusCode.RESOURCE_EXHAUSTED,
                    f"at most {MAX_REQUESTS_PER_STREAM} reflection requests per stream: "
                    "open another",
                    details("TOO_MANY_REQUESTS", {"limit": str(MAX_REQUESTS_PER_STREAM)}),
                )
            answered += 1
            yield _answer(catalogue, decoded(undecoded))

    def services(self) -> list[purerpc.Service]:
        """The v1 and v1alpha services, both answering from this object."""
        return [
            _decoded_by_methods(_servicer(self, reflection_grpc.ServerReflectionServicer).service),
            _decoded_by_methods(
                _servicer(self, reflection_v1alpha_grpc.ServerReflectionServicer).service
            ),
        ]


def _servicer(reflection: Reflection, base: type) -> Any:
    """An instance of the generated servicer class `base` whose method is `answer`."""

    class Servicer(base):  # type: ignore[misc]
        def ServerReflectionInfo(
            self, requests: AsyncIterator[_Undecoded], request: Any
        ) -> AsyncIterator[rpb.ServerReflectionResponse]:
            return reflection.answer(requests, request)

    return Servicer()


def _answer(
    catalogue: Catalogue, asked: rpb.ServerReflectionRequest
) -> rpb.ServerReflectionResponse:
    answer = rpb.ServerReflectionResponse(valid_host=asked.host, original_request=asked)
    kind = asked.WhichOneof("message_request")
    if kind == "list_services":
        answer.list_services_response.service.extend(
            rpb.ServiceResponse(name=name) for name in catalogue.services
        )
    elif kind == "file_by_filename":
        _files(answer, catalogue.files.get(asked.file_by_filename), asked.file_by_filename)
    elif kind == "file_containing_symbol":
        symbol = asked.file_containing_symbol
        _files(answer, catalogue.file_containing(symbol), f"symbol {symbol}")
    elif kind == "all_extension_numbers_of_type":
        name = catalogue.message_type(asked.all_extension_numbers_of_type)
        if name is None:
            _not_found(answer, f"type {asked.all_extension_numbers_of_type}")
        else:
            answer.all_extension_numbers_response.base_type_name = name  # none are defined
    elif kind == "file_containing_extension":
        extension = asked.file_containing_extension
        _not_found(answer, f"extension {extension.extension_number} of {extension.containing_type}")
    else:
        answer.error_response.error_code = StatusCode.INVALID_ARGUMENT.value
        answer.error_response.error_message = "the request asks for nothing"
    return answer


def _files(
    answer: rpb.ServerReflectionResponse, files: tuple[bytes, ...] | None, what: str
) -> None:
    if files is None:
        _not_found(answer, what)
    else:
        answer.file_descriptor_response.file_descriptor_proto.extend(files)


def _not_found(answer: rpb.ServerReflectionResponse, what: str) -> None:
    answer.error_response.error_code = NOT_FOUND
    answer.error_response.error_message = f"{what} is not known here"[:1000]
