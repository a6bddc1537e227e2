"""TLS settings: which certificate files go together, and what a PEM file must hold.

Rules:
- TLS is on when TLS_CERT_FILE and TLS_KEY_FILE are both set; one without the
  other is a configuration error. TLS_CA_FILE (the certificates that sign
  the cluster's nodes, and clients' certificates when they must present one)
  needs TLS to be on; TLS_REQUIRE_CLIENT_CERT needs a CA to check against.
- A certificate file holds at least one PEM `CERTIFICATE` block and no
  private key (a key in a certificate bundle is a key about to leak); a key
  file holds exactly one PEM private key. Anything else is refused with a
  sentence that says what was found. Whether the key matches the
  certificate, and whether the certificates parse, is the ssl library's to
  say when the shell builds its contexts (a3redis.net.tls).
- A file is read up to MAX_PEM_BYTES: a bundle of a few hundred
  certificates fits; a file beyond it is refused, never read whole.
- Pure: the shell reads the files and passes their bytes in.
"""

from __future__ import annotations

import re

MAX_PEM_BYTES = 1024 * 1024

_BEGIN = re.compile(rb"^-----BEGIN ([A-Z0-9 ]{1,64})-----\s*$", re.MULTILINE)


def pem_labels(data: bytes) -> list[str]:
    """The labels of the PEM blocks in `data`, in order (`CERTIFICATE`, `PRIVATE KEY`, ...)."""
    return [match.group(1).decode("ascii") for match in _BEGIN.finditer(data)]


def _is_key(label: str) -> bool:
    return label.endswith("PRIVATE KEY")


def certificate_problem(data: bytes) -> str | None:
    """Why `data` is not a PEM certificate bundle, or None if it is one."""
    if len(data) > MAX_PEM_BYTES:
        return f"over {MAX_PEM_BYTES} bytes"
    labels = pem_labels(data)
    if any(_is_key(label) for label in labels):
        return "it holds a private key: keep the key in its own file (TLS_KEY_FILE)"
    if "CERTIFICATE" not in labels:
        return "no PEM certificate (-----BEGIN CERTIFICATE-----) in it"
    return None


def key_problem(data: bytes) -> str | None:
    """Why `data` is not one PEM private key, or None if it is."""
    if len(data) > MAX_PEM_BYTES:
        return f"over {MAX_PEM_BYTES} bytes"
    keys = [label for label in pem_labels(data) if _is_key(label)]
    if not keys:
        return "no PEM private key (-----BEGIN PRIVATE KEY-----) in it"
    if len(keys) > 1:
        return f"{len(keys)} private keys in it: give one"
    return None


def settings_problem(
    cert_file: bool, key_file: bool, ca_file: bool, require_client_cert: bool
) -> str | None:
    """Why this combination of TLS settings cannot work, or None if it can."""
    if cert_file != key_file:
        given, missing = ("TLS_CERT_FILE", "TLS_KEY_FILE")[:: 1 if cert_file else -1]
        return f"{given} is set without {missing}: set both (TLS on) or neither (TLS off)"
    if ca_file and not cert_file:
        return "TLS_CA_FILE is set without TLS_CERT_FILE and TLS_KEY_FILE: TLS is off"
    if require_client_cert and not ca_file:
        return (
            "TLS_REQUIRE_CLIENT_CERT=1 needs TLS_CA_FILE: the CA that signs the certificates "
            "clients must present"
        )
    return None
