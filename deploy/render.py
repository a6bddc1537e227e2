"""Render deploy/k8s offline, as `kubectl apply -k deploy/k8s` would, for the checks.

    python deploy/render.py [KUSTOMIZATION_DIR] [-o OUT_DIR]

kustomize is not installed where the checks run, so this renders the one
kustomization the project ships, and nothing more: it supports exactly the
fields that file uses (`apiVersion`, `kind`, `namespace`, `resources` naming
local YAML files) and stops with an error on any other field, on a resource
that is a directory or URL, and on a kind it does not know to be namespaced or
not. Extending the kustomization means extending this file (or checking with
real kustomize: `kubectl kustomize deploy/k8s`).

Without -o it prints every document as one YAML stream; with -o it writes one
file per resource under OUT_DIR with the resource's own file name, so an error
reported against a rendered file names the source file too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

SUPPORTED_FIELDS = {"apiVersion", "kind", "namespace", "resources"}
API_VERSION = "kustomize.config.k8s.io/v1beta1"
# Kinds this renderer knows: whether kustomize's `namespace` applies to them.
NAMESPACED = {
    "Namespace": False,
    "Service": True,
    "StatefulSet": True,
    "PodDisruptionBudget": True,
    "ConfigMap": True,
}


class RenderError(Exception):
    """The kustomization uses something this renderer does not support, or is invalid."""


def render(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """The documents of each resource file, in kustomization order, namespace applied."""
    path = directory / "kustomization.yaml"
    try:
        kustomization = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise RenderError(f"{path}: cannot read: {error}") from None
    if not isinstance(kustomization, dict):
        raise RenderError(f"{path}: expected a mapping")
    unsupported = sorted(set(kustomization) - SUPPORTED_FIELDS)
    if unsupported:
        raise RenderError(
            f"{path}: unsupported field(s) {', '.join(unsupported)}: render.py supports only "
            f"{', '.join(sorted(SUPPORTED_FIELDS))}; extend deploy/render.py"
        )
    if kustomization.get("apiVersion") != API_VERSION or kustomization.get("kind") != (
        "Kustomization"
    ):
        raise RenderError(f"{path}: expected apiVersion {API_VERSION}, kind Kustomization")
    namespace = kustomization.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise RenderError(f"{path}: namespace must be a string")
    resources = kustomization.get("resources")
    if not isinstance(resources, list) or not resources:
        raise RenderError(f"{path}: resources must be a non-empty list of file names")

    rendered: dict[str, list[dict[str, Any]]] = {}
    for entry in resources:
        if not isinstance(entry, str) or "://" in entry or Path(entry).is_absolute():
            raise RenderError(f"{path}: resource {entry!r} is not a local file name")
        source = directory / entry
        if source.suffix not in (".yaml", ".yml") or not source.is_file():
            raise RenderError(f"{path}: resource {entry!r} is not a YAML file in {directory}")
        if entry in rendered:
            raise RenderError(f"{path}: resource {entry!r} is listed twice")
        rendered[entry] = [
            _apply_namespace(document, namespace, source) for document in _documents(source)
        ]
    return rendered


def _documents(source: Path) -> list[dict[str, Any]]:
    try:
        documents = [d for d in yaml.safe_load_all(source.read_text()) if d is not None]
    except yaml.YAMLError as error:
        raise RenderError(f"{source}: invalid YAML: {error}") from None
    if not documents:
        raise RenderError(f"{source}: no documents")
    for document in documents:
        if not isinstance(document, dict) or not isinstance(document.get("metadata"), dict):
            raise RenderError(f"{source}: every document must be a mapping with metadata")
    return documents


def _apply_namespace(
    document: dict[str, Any], namespace: str | None, source: Path
) -> dict[str, Any]:
    kind = document.get("kind")
    if kind not in NAMESPACED:
        raise RenderError(
            f"{source}: kind {kind!r} is unknown to render.py (is it namespaced?); "
            f"known: {', '.join(sorted(NAMESPACED))}"
        )
    if namespace is None:
        return document
    metadata = document["metadata"]
    if kind == "Namespace":
        # kustomize would rename it; this renderer only accepts the matching one.
        if metadata.get("name") != namespace:
            raise RenderError(
                f"{source}: Namespace {metadata.get('name')!r} differs from the "
                f"kustomization's namespace {namespace!r}"
            )
        return document
    if NAMESPACED[kind]:
        metadata["namespace"] = namespace
    return document


def write(rendered: dict[str, list[dict[str, Any]]], out_dir: Path) -> list[Path]:
    """One file per resource under out_dir (same file name); the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, documents in rendered.items():
        target = out_dir / name
        target.write_text(yaml.safe_dump_all(documents, sort_keys=False))
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(__file__).resolve().parent / "k8s"
    parser.add_argument("directory", nargs="?", type=Path, default=default)
    parser.add_argument("-o", "--out-dir", type=Path, help="write one file per resource here")
    args = parser.parse_args(argv)
    try:
        rendered = render(args.directory)
    except RenderError as error:
        print(f"render: {error}", file=sys.stderr)
        return 1
    if args.out_dir:
        for path in write(rendered, args.out_dir):
            print(path)
    else:
        documents = [d for docs in rendered.values() for d in docs]
        sys.stdout.write(yaml.safe_dump_all(documents, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
