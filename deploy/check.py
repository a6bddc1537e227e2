"""Offline checks of the deployment files: `python deploy/check.py [DEPLOY_DIR]`.

No Docker engine or Kubernetes cluster is needed (none runs in CI): every
check reads files. All checks run, each failure is printed with the file it is
about, and the exit status is 1 if any failed. The tools come from the
`deploy` extra (`pip install -e '.[deploy]'`); a missing tool is a failure,
never a skip.

  yamllint             every YAML file, with DEPLOY_DIR/.yamllint, warnings fatal
  kubernetes-validate  k8s/ rendered offline by render.py (which refuses kustomize features
                       it does not implement), each manifest --strict against K8S_VERSIONS
  hadolint             Dockerfile
  check-jsonschema     compose.yaml against the Compose Specification
  bash -n, shellcheck  every *.sh
  consistency          what the schemas cannot see: every environment variable set for a
                       node is one of a3redis.config.SETTINGS, ports agree between env,
                       container ports, published ports and scrape targets (the Redis
                       port too, and the client Service names it `resp`), PEERS and
                       ADVERTISE_HOST name the nodes that exist, and every node reads a
                       cluster secret from a mounted file (a Compose file secret that
                       compose.sh generates and git ignores; a Kubernetes Secret volume),
                       never from a value in the files, and none runs with INSECURE;
                       a `grpc:` probe asks GRPC_PORT for a service the Health service
                       knows (a3redis.core.health.SERVICES), never on a TLS-only port
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import render  # deploy/render.py: run as a script, this file's directory is on sys.path
import yaml

REPO = Path(__file__).resolve().parent.parent
# The oldest Kubernetes these manifests are meant for, and the newest schema shipped.
K8S_VERSIONS = ("1.30.0", "1.37.0")


class Failure(Exception):
    """One check failed; the message names the file."""


def main(argv: list[str]) -> int:
    deploy = Path(argv[1]).resolve() if len(argv) > 1 else Path(__file__).resolve().parent
    checks: list[tuple[str, Callable[[Path, Path], str]]] = [
        ("yamllint", check_yamllint),
        ("kubernetes-validate", check_kubernetes),
        ("hadolint", check_hadolint),
        ("check-jsonschema", check_compose),
        ("shell", check_shell),
        ("consistency", check_consistency),
    ]
    failed = 0
    with tempfile.TemporaryDirectory(prefix="a3redis-deploy-") as scratch:
        for name, check in checks:
            try:
                summary = check(deploy, Path(scratch))
            except Failure as failure:
                failed += 1
                print(f"FAIL {name}\n{_indent(str(failure))}")
            else:
                print(f"ok   {name}: {summary}")
    print(f"deploy checks in {deploy}: {len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


# ----- the checks ---------------------------------------------------------------------------


def check_yamllint(deploy: Path, _scratch: Path) -> str:
    files = sorted(_yaml_files(deploy))
    _run([_tool("yamllint"), "--strict", "-f", "parsable", "-c", deploy / ".yamllint", *files])
    return f"{len(files)} files"


def check_kubernetes(deploy: Path, scratch: Path) -> str:
    source = deploy / "k8s"
    try:
        rendered = render.write(render.render(source), scratch / "k8s")
    except render.RenderError as error:
        raise Failure(f"render: {error}") from None
    for version in K8S_VERSIONS:
        _run(
            [_tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, *rendered],
            rename={str(scratch / "k8s"): str(source)},
            note=f"(as rendered by render.py from {source / 'kustomization.yaml'})",
        )
    return f"{len(rendered)} rendered files, --strict, Kubernetes {', '.join(K8S_VERSIONS)}"


def check_hadolint(deploy: Path, _scratch: Path) -> str:
    _run([_tool("hadolint"), "--no-color", deploy / "Dockerfile"])
    return "Dockerfile"


def check_compose(deploy: Path, _scratch: Path) -> str:
    compose = deploy / "compose.yaml"
    _run([_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", compose])
    return "compose.yaml (Compose Specification)"


def check_shell(deploy: Path, _scratch: Path) -> str:
    scripts = sorted(deploy.glob("*.sh"))
    if not scripts:
        raise Failure(f"{deploy}: no *.sh scripts found (expected compose.sh)")
    for script in scripts:
        _run(["bash", "-n", script])
    _run([_tool("shellcheck"), *scripts])
    return ", ".join(script.name for script in scripts) + " (bash -n, shellcheck)"


def check_consistency(deploy: Path, _scratch: Path) -> str:
    known = _config_variables()
    problems = [
        *_compose_problems(deploy / "compose.yaml", deploy / "prometheus.yml", known),
        *_kubernetes_problems(deploy / "k8s", known),
    ]
    if problems:
        raise Failure("\n".join(problems))
    return (
        f"env names (of {len(known)} in a3redis.config.SETTINGS), ports, peers, scrape targets, "
        "cluster secrets"
    )


# ----- consistency ----------------------------------------------------------------------------


def _config_variables() -> set[str]:
    """The variables a node reads: a3redis.config's table of settings, from this repository."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # this checkout's a3redis, not another installed copy
    try:
        from a3redis.config import SETTINGS
    except ImportError as error:
        raise Failure(f"{REPO / 'a3redis' / 'config.py'}: cannot import it: {error}") from None
    return {setting.env for setting in SETTINGS}


# Settings that would put a secret in a deployment file, or turn protection off.
_INLINE_SECRETS = ("CLUSTER_SECRET", "CLUSTER_SECRET_PREVIOUS")


def _compose_secret_problems(path: Path, compose: dict[str, Any]) -> Iterator[str]:
    """Every node reads the cluster secret from a Compose file secret that compose.sh
    generates and git ignores."""
    declared: dict[str, Any] = compose.get("secrets") or {}
    for name, service in (compose.get("services") or {}).items():
        where = f"{path}: services.{name}"
        env = {key: str(value) for key, value in (service.get("environment") or {}).items()}
        mounted = [
            s if isinstance(s, str) else s.get("source") for s in service.get("secrets") or []
        ]
        wanted = env.get("CLUSTER_SECRET_FILE", "")
        secret = wanted.removeprefix("/run/secrets/")
        if not wanted.startswith("/run/secrets/") or secret not in mounted:
            yield f"{where}: CLUSTER_SECRET_FILE must name a secret it mounts (/run/secrets/NAME)"
        elif not (declared.get(secret) or {}).get("file"):
            yield f"{where}: secret {secret!r} must be declared at the top level with a file"
        yield from (
            f"{where}: {key} puts the secret in compose.yaml: use CLUSTER_SECRET_FILE"
            for key in _INLINE_SECRETS
            if key in env
        )
        if env.get("INSECURE", "0").lower() not in ("0", "false", "no", "off", ""):
            yield f"{where}: INSECURE turns protected mode off"
    files = {Path(str((s or {}).get("file", ""))).name for s in declared.values()}
    script = path.parent / "compose.sh"
    ignored = path.parent / ".gitignore"
    for name in sorted(files - {""}):
        if name not in script.read_text():
            yield f"{script}: does not generate the secret file {name}"
        if not ignored.exists() or f"/{name}" not in ignored.read_text().split():
            yield f"{ignored}: must ignore /{name} (a generated secret is never committed)"


def _kubernetes_secret_problems(
    path: Path, pod: dict[str, Any], env: dict[str, Any]
) -> Iterator[str]:
    """The node reads the cluster secret from a file of a mounted Secret volume."""
    container = (pod.get("containers") or [{}])[0]
    wanted = str(env.get("CLUSTER_SECRET_FILE") or "")
    secret_volumes = {
        volume.get("name")
        for volume in pod.get("volumes") or []
        if (volume.get("secret") or {}).get("secretName")
    }
    mounts = [
        m
        for m in container.get("volumeMounts") or []
        if m.get("name") in secret_volumes and wanted.startswith(str(m.get("mountPath")) + "/")
    ]
    if not mounts:
        yield f"{path}: CLUSTER_SECRET_FILE must be a file in a mounted Secret volume"
    elif not all(m.get("readOnly") for m in mounts):
        yield f"{path}: the cluster secret's volume must be mounted readOnly"
    names = {e.get("name") for e in container.get("env") or []}
    yield from (
        f"{path}: env {key} puts the secret in the environment: use CLUSTER_SECRET_FILE"
        for key in _INLINE_SECRETS
        if key in names
    )
    if str(env.get("INSECURE") or "0").lower() not in ("0", "false", "no", "off", ""):
        yield f"{path}: INSECURE turns protected mode off"


def _compose_problems(path: Path, prometheus: Path, known: set[str]) -> Iterator[str]:
    yield from _compose_secret_problems(path, _load(path))
    services: dict[str, Any] = _load(path).get("services") or {}
    grpc: dict[str, str] = {}
    peers: dict[str, set[str]] = {}
    targets: set[str] = set()
    factors: set[str] = set()
    for name, service in services.items():
        env = {key: str(value) for key, value in (service.get("environment") or {}).items()}
        where = f"{path}: services.{name}"
        yield from (
            f"{where}: environment {key} is not a setting in a3redis/config.py"
            for key in sorted(set(env) - known)
        )
        published = {str(port) for port in service.get("ports") or []}
        for variable in ("GRPC_PORT", "GOSSIP_PORT", "RESP_PORT"):
            port = env.get(variable)
            if port is None:
                yield f"{where}: sets no {variable}"
            elif f"{port}:{port}" not in published:
                yield f"{where}: {variable}={port} is not published as {port}:{port}"
        if env.get("ADVERTISE_HOST") != name:
            yield f"{where}: ADVERTISE_HOST must be the service name {name!r}"
        grpc[name] = f"{name}:{env.get('GRPC_PORT')}"
        peers[name] = set(_split(env.get("PEERS", "")))
        targets.add(f"{name}:{env.get('GOSSIP_PORT')}")
        factors.add(env.get("REPLICATION_FACTOR", "3"))
    for name in services:
        others = {address for other, address in grpc.items() if other != name}
        if peers[name] - {grpc[name]} != others:
            yield f"{path}: services.{name}: PEERS should be {','.join(sorted(others))}"
    if len(factors) != 1 or not all(f.isdigit() and int(f) <= len(services) for f in factors):
        yield f"{path}: REPLICATION_FACTOR must be equal on all nodes and at most their number"
    scraped = {
        target
        for job in _load(prometheus).get("scrape_configs") or []
        for static in job.get("static_configs") or []
        for target in static.get("targets") or []
    }
    if scraped != targets:
        yield f"{prometheus}: static targets should be {', '.join(sorted(targets))}"


def _kubernetes_problems(directory: Path, known: set[str]) -> Iterator[str]:
    try:
        documents = [
            (directory / file, d) for file, docs in render.render(directory).items() for d in docs
        ]
    except render.RenderError:
        return  # reported by the kubernetes-validate check
    sets = [(path, d) for path, d in documents if d.get("kind") == "StatefulSet"]
    if len(sets) != 1:
        yield f"{directory}: expected one StatefulSet, found {len(sets)}"
        return
    path, statefulset = sets[0]
    spec = statefulset.get("spec") or {}
    name, service_name = statefulset["metadata"].get("name"), spec.get("serviceName")
    pod = (spec.get("template") or {}).get("spec") or {}
    containers = pod.get("containers") or []
    if not containers:
        return  # the schema check names it
    container = containers[0]
    env = {e.get("name"): e.get("value") for e in container.get("env") or []}
    referenced = {m for v in env.values() if v for m in re.findall(r"\$\(([A-Z_]+)\)", v)}
    yield from (
        f"{path}: env {key} is not a setting in a3redis/config.py (nor used as $({key}))"
        for key in sorted(set(env) - known - referenced)
    )
    ports = {p.get("name"): str(p.get("containerPort")) for p in container.get("ports") or []}
    annotations = (spec["template"].get("metadata") or {}).get("annotations") or {}
    if not (env.get("GOSSIP_PORT") == ports.get("http") == annotations.get("prometheus.io/port")):
        yield f"{path}: GOSSIP_PORT, containerPort 'http' and prometheus.io/port must agree"
    if env.get("GRPC_PORT") != ports.get("grpc"):
        yield f"{path}: GRPC_PORT and containerPort 'grpc' must agree"
    if env.get("RESP_PORT") != ports.get("resp"):
        yield f"{path}: RESP_PORT and containerPort 'resp' must agree"
    client_services = [
        (source, d)
        for source, d in documents
        if d.get("kind") == "Service" and d["metadata"].get("name") != service_name
    ]
    for source, service in client_services:
        named = {p.get("name"): p for p in (service.get("spec") or {}).get("ports") or []}
        if (named.get("resp") or {}).get("targetPort") != "resp":
            name = service["metadata"].get("name")
            yield f"{source}: Service {name} needs a port named 'resp' with targetPort: resp"
    headless = [
        (source, d)
        for source, d in documents
        if d.get("kind") == "Service" and d["metadata"].get("name") == service_name
    ]
    if not headless or (headless[0][1].get("spec") or {}).get("clusterIP") != "None":
        yield f"{path}: serviceName {service_name!r} must be a headless Service (clusterIP: None)"
    elif not headless[0][1]["spec"].get("publishNotReadyAddresses"):
        yield f"{headless[0][0]}: Service {service_name} needs publishNotReadyAddresses: true"
    domain = f"{service_name}.$(POD_NAMESPACE).svc.cluster.local"
    if env.get("ADVERTISE_HOST") != f"$(POD_NAME).{domain}":
        yield f"{path}: ADVERTISE_HOST should be $(POD_NAME).{domain}"
    replicas = spec.get("replicas", 1)
    peers = {f"{name}-{i}.{domain}:{env.get('GRPC_PORT')}" for i in range(replicas)}
    if set(_split(env.get("PEERS") or "")) != peers:
        yield f"{path}: PEERS should name all {replicas} pods: {','.join(sorted(peers))}"
    yield from _probe_problems(path, container, env)
    factor = env.get("REPLICATION_FACTOR") or "3"
    if not (factor.isdigit() and int(factor) <= replicas):
        yield f"{path}: REPLICATION_FACTOR={factor} exceeds replicas={replicas}"
    yield from _kubernetes_secret_problems(path, pod, env)


_PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def _probe_problems(path: Path, container: dict[str, Any], env: dict[str, Any]) -> Iterator[str]:
    """A kubelet `grpc:` probe must reach the Health service: the gRPC port in plain text
    (it cannot do TLS), and a service name Health answers SERVING for."""
    from a3redis.core.health import SERVICES  # after _config_variables put REPO on sys.path

    for kind in _PROBES:
        grpc = (container.get(kind) or {}).get("grpc")
        if grpc is None:
            continue
        if str(grpc.get("port")) != env.get("GRPC_PORT"):
            yield f"{path}: {kind} grpc.port must be GRPC_PORT ({env.get('GRPC_PORT')})"
        if grpc.get("service", "") not in SERVICES:
            known = ", ".join(repr(name) for name in sorted(SERVICES))
            yield f"{path}: {kind} asks Health about {grpc.get('service')!r}, not one of {known}"
        if env.get("TLS_CERT_FILE"):
            yield (
                f"{path}: {kind} is a grpc probe, but TLS_CERT_FILE makes the gRPC port "
                "TLS-only and the kubelet's grpc probe speaks plain text: use httpGet with "
                "scheme: HTTPS"
            )


def _split(peers: str) -> list[str]:
    return [part.strip() for part in peers.split(",") if part.strip()]


def _load(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise Failure(f"{path}: {error}") from None
    if not isinstance(loaded, dict):
        raise Failure(f"{path}: expected a mapping")
    return loaded


# ----- running tools --------------------------------------------------------------------------


def _yaml_files(deploy: Path) -> Iterator[Path]:
    for pattern in ("*.yaml", "*.yml", ".yamllint"):
        yield from deploy.rglob(pattern)


def _tool(name: str) -> str:
    """The tool installed beside this interpreter (the deploy extra), else on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise Failure(f"{name} is not installed: pip install -e '.[deploy]' (or nox -s deploy)")
    return found


def _run(command: list[str | Path], rename: dict[str, str] | None = None, note: str = "") -> None:
    result = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        for old, new in (rename or {}).items():
            output = output.replace(old, new)
        tool = Path(str(command[0])).name
        raise Failure(f"{tool} exited with {result.returncode} {note}".rstrip() + f":\n{output}")


def _indent(text: str) -> str:
    return "\n".join(f"     {line}" for line in text.splitlines())


if __name__ == "__main__":
    sys.exit(main(sys.argv))
