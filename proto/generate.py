"""Generate the Python stubs for proto/ into a3redis/v1 (or another directory).

Used by `nox -s proto` and by the test that fails when the committed stubs
are stale, so both run exactly the same protoc invocation.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = [
    "a3redis/v1/kv.proto",
    "a3redis/v1/replica.proto",
    "a3redis/v1/health.proto",
    "a3redis/v1/reflection.proto",
    "a3redis/v1/reflection_v1alpha.proto",
    "a3redis/v1/error_details.proto",
]


def generate(out_dir: Path) -> None:
    plugin = Path(sysconfig.get_path("scripts")) / "protoc-gen-purerpc"
    args = [
        "protoc",
        f"-I{ROOT / 'proto'}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--purerpc_out={out_dir}",
        f"--plugin=protoc-gen-purerpc={plugin}",
        *(str(ROOT / "proto" / name) for name in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
