"""Server reflection (v1 and v1alpha) of an in-process node, called with grpcio in worker threads.

A caller lists the public services (never Replica unless it proves it is a cluster
member), gets a file by name or by a symbol it defines, with every file it imports,
and gets NOT_FOUND for what is not served; a stream answers a bounded number of
requests. A stock client (grpcio-reflection) builds calls from these answers in
tests/node/test_stock_clients.py.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import trio
from google.protobuf import descriptor_pb2

from a3redis.api import reflection as reflection_shell
from a3redis.cluster.peer_auth import PeerGuard
from a3redis.v1 import reflection_pb2 as rpb
from tests.node.conftest import RunningNode, Start
from tests.node.test_tls import start_tls_node
from tests.support.certificates import Authority

PUBLIC = [
    "a3redis.v1.KeyValue",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
]


def _ask(
    endpoint: str,
    requests: Sequence[rpb.ServerReflectionRequest],
    version: str = "v1",
    metadata: Sequence[tuple[str, str]] = (),
    credentials: grpc.ChannelCredentials | None = None,
) -> tuple[list[rpb.ServerReflectionResponse], Any]:
    """The answers to `requests` on one stream, and the stream's end code."""
    opened = (
        grpc.insecure_channel(endpoint)
        if credentials is None
        else grpc.secure_channel(endpoint, credentials)
    )
    with opened as channel:
        call = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=lambda message: (
                message if isinstance(message, bytes) else message.SerializeToString()
            ),
            response_deserializer=rpb.ServerReflectionResponse.FromString,
        )
        answers: list[rpb.ServerReflectionResponse] = []
        try:
            for answer in call(iter(requests), timeout=10, metadata=tuple(metadata)):
                answers.append(answer)
        except grpc.RpcError as error:
            return answers, error.code()
        return answers, grpc.StatusCode.OK


def _names(answer: rpb.ServerReflectionResponse) -> list[str]:
    names = []
    for data in answer.file_descriptor_response.file_descriptor_proto:
        names.append(descriptor_pb2.FileDescriptorProto.FromString(data).name)
    return names


async def ask(node: RunningNode, *requests: rpb.ServerReflectionRequest, **options: Any) -> Any:
    return await trio.to_thread.run_sync(lambda: _ask(node.endpoint, list(requests), **options))


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_both_versions_list_the_public_services(
    running_node: RunningNode, version: str
) -> None:
    answers, code = await ask(
        running_node, rpb.ServerReflectionRequest(list_services=""), version=version
    )
    assert code == grpc.StatusCode.OK
    assert sorted(s.name for s in answers[0].list_services_response.service) == PUBLIC


async def test_files_come_with_what_they_import_and_unknowns_are_not_found(
    running_node: RunningNode,
) -> None:
    answers, code = await ask(
        running_node,
        rpb.ServerReflectionRequest(file_containing_symbol="a3redis.v1.KeyValue"),
        rpb.ServerReflectionRequest(file_containing_symbol="a3redis.v1.PutRequest"),
        rpb.ServerReflectionRequest(file_containing_symbol="a3redis.v1.KeyValue.Get"),
        rpb.ServerReflectionRequest(file_by_filename="a3redis/v1/reflection_v1alpha.proto"),
        rpb.ServerReflectionRequest(file_by_filename="a3redis/v1/replica.proto"),
        rpb.ServerReflectionRequest(file_containing_symbol="a3redis.v1.Replica"),
        rpb.ServerReflectionRequest(file_containing_symbol="no.Such"),
        rpb.ServerReflectionRequest(all_extension_numbers_of_type="a3redis.v1.PutRequest"),
    )
    assert code == grpc.StatusCode.OK
    assert [_names(a) for a in answers[:3]] == [["a3redis/v1/kv.proto"]] * 3
    assert _names(answers[3]) == [
        "a3redis/v1/reflection_v1alpha.proto",
        "a3redis/v1/reflection.proto",
    ]
    for hidden in answers[4:7]:
        assert hidden.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert answers[4].original_request.file_by_filename == "a3redis/v1/replica.proto"
    extensions = answers[7].all_extension_numbers_response
    assert extensions.base_type_name == "a3redis.v1.PutRequest"
    assert list(extensions.extension_number) == []


async def test_a_malformed_request_ends_the_stream_invalid_argument(
    running_node: RunningNode,
) -> None:
    listing = rpb.ServerReflectionRequest(list_services="")
    answers, code = await ask(running_node, listing, b"\xff\xff", listing)  # type: ignore[arg-type]
    assert (len(answers), code) == (1, grpc.StatusCode.INVALID_ARGUMENT)


async def test_a_stream_answers_a_bounded_number_of_requests(running_node: RunningNode) -> None:
    limit = reflection_shell.MAX_REQUESTS_PER_STREAM
    many = [rpb.ServerReflectionRequest(list_services="")] * (limit + 5)
    answers, code = await ask(running_node, *many)
    assert len(answers) == limit
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_member_signing_with_the_cluster_secret_sees_the_replica_service(
    start_node: Start, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s" * 32)
    node = await start_node(CLUSTER_SECRET_FILE=str(secret))
    guard = PeerGuard.from_config(node.config, lambda: int(time.time() * 1000))
    assert guard is not None
    listing = rpb.ServerReflectionRequest(list_services="")
    replica = rpb.ServerReflectionRequest(file_by_filename="a3redis/v1/replica.proto")
    signed = guard.metadata(reflection_shell.SIGNED_CHANNEL, b"")
    answers, _ = await ask(node, listing, replica, metadata=signed)
    assert sorted(s.name for s in answers[0].list_services_response.service) == sorted(
        [*PUBLIC, "a3redis.v1.Replica"]
    )
    assert _names(answers[1]) == ["a3redis/v1/replica.proto", "a3redis/v1/kv.proto"]
    # A client without the signature (or with a wrong one) sees the public services only.
    forged = tuple((name, "0" * len(value)) for name, value in signed)
    for metadata in ((), forged):
        answers, _ = await ask(node, listing, metadata=metadata)
        assert sorted(s.name for s in answers[0].list_services_response.service) == PUBLIC


async def test_a_connection_with_a_certificate_the_ca_signed_sees_the_replica_service(
    start_node: Start, tmp_path: Path
) -> None:
    ca = Authority.create(tmp_path / "ca")
    node = await start_tls_node(start_node, ca, "node-1")
    roots = ca.file.read_bytes()
    member = ca.issue(tmp_path / "member", "member")
    with_certificate = grpc.ssl_channel_credentials(
        root_certificates=roots,
        private_key=member.key.read_bytes(),
        certificate_chain=member.cert.read_bytes(),
    )
    listing = rpb.ServerReflectionRequest(list_services="")
    seen = []
    for credentials in (grpc.ssl_channel_credentials(root_certificates=roots), with_certificate):
        answers, _ = await ask(node, listing, credentials=credentials)
        seen.append(sorted(s.name for s in answers[0].list_services_response.service))
    assert seen == [PUBLIC, sorted([*PUBLIC, "a3redis.v1.Replica"])]
