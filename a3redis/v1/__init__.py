"""Generated protobuf and purerpc code for the a3redis.v1 API, and for the standard gRPC
services a node also serves (grpc.health.v1, grpc.reflection.v1 and v1alpha) and the
google.rpc error details it sends (as a3redis.rpc). Do not edit: run `nox -s proto`."""
