"""Stock Python gRPC clients against a node: `python python_client.py MODE HOST:PORT`.

Run in its own process, never imported by the test process: grpcio-health-checking
registers grpc.health.v1 messages in protobuf's default pool, as a node's own
health module does, and protobuf refuses one name defined twice. Nothing of
a3redis is imported here: these are the calls any user of these packages makes.

  check    Health/Check of "", the KeyValue service and an unknown one (grpc_health.v1)
  watch    Health/Watch of "": one line per status until the server ends the stream
  reflect  list the services through grpcio-reflection's descriptor database, build
           Put and Get from the reflected descriptors alone, call them
Each mode prints JSON (watch: one status name per line, flushed).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

TIMEOUT = 10


def check(channel: grpc.Channel) -> dict[str, Any]:
    stub = health_pb2_grpc.HealthStub(channel)
    answers: dict[str, Any] = {}
    for service in ("", "a3redis.v1.KeyValue", "no.such.Service"):
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
            answers[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.RpcError as error:
            answers[service] = error.code().name
    return answers


def watch(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for reply in stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30):
        print(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status), flush=True)
    print("END", flush=True)


def reflect(channel: grpc.Channel) -> dict[str, Any]:
    database = ProtoReflectionDescriptorDatabase(channel)
    pool = descriptor_pool.DescriptorPool(database)
    service = pool.FindServiceByName("a3redis.v1.KeyValue")
    results: dict[str, Any] = {"services": sorted(database.get_services())}
    for name, fields in (
        ("Put", {"key": b"stock", "value": b"reflected"}),
        ("Get", {"key": b"stock"}),
    ):
        method = service.FindMethodByName(name)
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_unary(
            f"/{service.full_name}/{name}",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        reply = call(request_class(**fields), timeout=TIMEOUT)
        results[name] = {
            field.name: (value.decode() if isinstance(value, bytes) else str(value))
            for field, value in reply.ListFields()
        }
    return results


def main(mode: str, endpoint: str) -> None:
    with grpc.insecure_channel(endpoint) as channel:
        if mode == "watch":
            watch(channel)
            return
        answer = check(channel) if mode == "check" else reflect(channel)
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
