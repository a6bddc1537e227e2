"""a3redis.core.tls: which TLS settings go together, and what each PEM file must hold."""

from __future__ import annotations

import pytest

from a3redis.core.tls import (
    MAX_PEM_BYTES,
    certificate_problem,
    key_problem,
    pem_labels,
    settings_problem,
)

CERT = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
EC_KEY = b"-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n"


def test_pem_labels_are_read_in_order() -> None:
    assert pem_labels(b"junk\n" + CERT + EC_KEY + CERT) == [
        "CERTIFICATE",
        "EC PRIVATE KEY",
        "CERTIFICATE",
    ]
    assert pem_labels(b"BEGIN CERTIFICATE") == []


def test_a_certificate_bundle_holds_certificates_and_no_key() -> None:
    assert certificate_problem(CERT) is None
    assert certificate_problem(CERT + CERT) is None
    assert certificate_problem(b"") == "no PEM certificate (-----BEGIN CERTIFICATE-----) in it"
    assert "holds a private key" in str(certificate_problem(CERT + KEY))
    assert certificate_problem(CERT + b"x" * MAX_PEM_BYTES) == f"over {MAX_PEM_BYTES} bytes"


def test_a_key_file_holds_exactly_one_private_key() -> None:
    assert key_problem(KEY) is None
    assert key_problem(EC_KEY) is None
    assert key_problem(CERT + KEY) is None  # a key with its certificate, as some tools write
    assert key_problem(CERT) == "no PEM private key (-----BEGIN PRIVATE KEY-----) in it"
    assert key_problem(KEY + EC_KEY) == "2 private keys in it: give one"


@pytest.mark.parametrize(
    ("cert", "key", "ca", "require", "problem"),
    [
        (False, False, False, False, None),
        (True, True, False, False, None),
        (True, True, True, False, None),
        (True, True, True, True, None),
        (True, False, False, False, "TLS_CERT_FILE is set without TLS_KEY_FILE"),
        (False, True, False, False, "TLS_KEY_FILE is set without TLS_CERT_FILE"),
        (False, False, True, False, "TLS_CA_FILE is set without TLS_CERT_FILE"),
        (True, True, False, True, "TLS_REQUIRE_CLIENT_CERT=1 needs TLS_CA_FILE"),
    ],
)
def test_which_tls_settings_go_together(
    cert: bool, key: bool, ca: bool, require: bool, problem: str | None
) -> None:
    found = settings_problem(cert, key, ca, require)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)
