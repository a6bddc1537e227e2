"""Generated protobuf and purerpc code for the a3redis.v1 API. Do not edit: run `nox -s proto`."""
