"""The deploy checks (deploy/check.py, what `nox -s deploy` runs) pass on the shipped files
and fail, naming the file, when a manifest is broken.

The validators come from the `deploy` extra, which the `dev` extra includes, so this runs
(never skips) wherever the test suite does.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
CHECK = ROOT / "deploy" / "check.py"


def run_check(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECK), str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def deploy_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "deploy"
    shutil.copytree(ROOT / "deploy", copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def break_file(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {path} exactly once: update this test"
    path.write_text(text.replace(old, new))


def test_shipped_deploy_files_pass(deploy_copy: Path) -> None:
    result = run_check(deploy_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed, 0 failed" in result.stdout


BROKEN = [
    # A misspelled field: the pod template has no `containers` (strict schema).
    pytest.param(
        "k8s/statefulset.yaml",
        "      containers:\n",
        "      container:\n",
        "kubernetes-validate",
        id="k8s-misspelled-field",
    ),
    pytest.param(
        "k8s/poddisruptionbudget.yaml",
        "maxUnavailable: 1",
        "maxUnavailable: [1]",
        "kubernetes-validate",
        id="k8s-wrong-type",
    ),
    # A kustomize feature render.py does not implement is refused, not ignored.
    pytest.param(
        "k8s/kustomization.yaml",
        "namespace: a3redis\n",
        "namespace: a3redis\nnamePrefix: x-\n",
        "kubernetes-validate",
        id="kustomize-unsupported-field",
    ),
    pytest.param(
        "compose.yaml",
        "  stop_grace_period: 10s\n",
        "  stop_grace_periods: 10s\n",
        "check-jsonschema",
        id="compose-misspelled-field",
    ),
    # Valid YAML and a valid compose file, but a variable the node never reads.
    pytest.param(
        "compose.yaml",
        '  REPLICATION_FACTOR: "2"\n',
        '  REPLICATON_FACTOR: "2"\n',
        "consistency",
        id="compose-unknown-variable",
    ),
    # The Redis port is set but not published on the host.
    pytest.param(
        "compose.yaml",
        '      - "6381:6381"\n',
        "",
        "consistency",
        id="compose-resp-port-unpublished",
    ),
    pytest.param(
        "k8s/service.yaml",
        "      targetPort: resp\n",
        "      targetPort: 6379\n",
        "consistency",
        id="k8s-service-resp-port",
    ),
    # Every node reads a cluster secret from a mounted file, never from a value in the files.
    pytest.param(
        "compose.yaml",
        "  CLUSTER_SECRET_FILE: /run/secrets/cluster_secret\n",
        "",
        "consistency",
        id="compose-no-cluster-secret",
    ),
    pytest.param(
        "compose.yaml",
        "  CLUSTER_SECRET_FILE: /run/secrets/cluster_secret\n",
        "  CLUSTER_SECRET_FILE: /run/secrets/cluster_secret\n  CLUSTER_SECRET: in-the-file\n",
        "consistency",
        id="compose-inline-secret",
    ),
    pytest.param(
        ".gitignore",
        "/cluster-secret\n",
        "",
        "consistency",
        id="compose-secret-not-ignored",
    ),
    pytest.param(
        "k8s/statefulset.yaml",
        "              mountPath: /etc/a3redis/secret\n",
        "              mountPath: /etc/a3redis/other\n",
        "consistency",
        id="k8s-secret-not-mounted",
    ),
    # The kubelet's grpc readiness probe must ask the gRPC port about a service Health knows.
    pytest.param(
        "k8s/statefulset.yaml",
        "              port: 50051\n",
        "              port: 8001\n",
        "consistency",
        id="k8s-grpc-probe-wrong-port",
    ),
    pytest.param(
        "k8s/statefulset.yaml",
        '              service: ""\n',
        "              service: a3redis.v1.Replica\n",
        "consistency",
        id="k8s-grpc-probe-unknown-service",
    ),
    # The grpc probe cannot speak TLS: a TLS-only gRPC port makes it fail for ever.
    pytest.param(
        "k8s/statefulset.yaml",
        "            - name: DEBUG_LOG\n",
        "            - name: TLS_CERT_FILE\n              value: /etc/a3redis/tls/tls.crt\n"
        "            - name: DEBUG_LOG\n",
        "consistency",
        id="k8s-grpc-probe-on-tls-port",
    ),
    pytest.param(
        "Dockerfile",
        "pip install --no-cache-dir .",
        "pip install .",
        "hadolint",
        id="dockerfile-pip-cache",
    ),
]


@pytest.mark.parametrize(("relative", "old", "new", "check"), BROKEN)
def test_a_broken_file_fails_and_is_named(
    deploy_copy: Path, relative: str, old: str, new: str, check: str
) -> None:
    broken = deploy_copy / relative
    break_file(broken, old, new)
    result = run_check(deploy_copy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"FAIL {check}" in result.stdout, result.stdout
    assert str(broken) in result.stdout, result.stdout
    assert "5 passed, 1 failed" in result.stdout, result.stdout
