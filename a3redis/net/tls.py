"""TLS for the node's ports and links: ssl contexts built from the TLS_* files.

Rules:
- Which settings go together and what each file must hold is decided in
  a3redis.core.tls; this module reads the files and builds the contexts.
- Servers: TLS 1.2 or later, the node's certificate; the gRPC port offers only
  ALPN `h2` (what gRPC clients require). With TLS_CA_FILE, a certificate a
  client presents is verified against that CA alone (never the system's
  trusted CAs: a certificate from a public CA is not a cluster member), and
  with TLS_REQUIRE_CLIENT_CERT every client must present one.
- Links to peers (gRPC and gossip) verify the peer's certificate and its
  name (the host dialled: an IP address must be among the certificate's IP
  SANs, a host name among its DNS SANs) against TLS_CA_FILE, or the system's
  trusted CAs without one, and present the node's own certificate, so that
  with a CA node-to-node traffic is mutual TLS.
- SIGHUP (`NodeTls.reload`) builds every context afresh from the files (so a
  bad file changes nothing) and then loads the new certificate and key into
  the live contexts, which every listener and link keeps using: connections
  made from then on present the new certificate, open ones keep theirs. The
  CA file's certificates are added to those trusted; a CA stops being
  trusted only when the node restarts.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from a3redis.core import tls as rules

# Seconds a client may take to complete its TLS handshake: a client that
# stalls mid-handshake holds a connection slot no longer than this.
TLS_HANDSHAKE_TIMEOUT = 10.0
GRPC_ALPN = ("h2",)
HTTP_ALPN = ("h2", "http/1.1")


class TlsFileError(ValueError):
    """A TLS file cannot be used; `setting` names the variable that gave it."""

    def __init__(self, setting: str, path: Path, reason: str) -> None:
        super().__init__(f"{setting}={str(path)!r} cannot be used: {reason}")
        self.setting = setting


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The node's TLS settings: its certificate and key, and the CA it trusts."""

    cert: Path
    key: Path
    ca: Path | None = None
    require_client_cert: bool = False


def read_pem(path: Path, setting: str, problem: Callable[[bytes], str | None]) -> bytes:
    """The file's bytes, checked by `problem` (a3redis.core.tls), or TlsFileError."""
    try:
        with path.open("rb") as file:
            data = file.read(rules.MAX_PEM_BYTES + 1)
    except OSError as error:
        raise TlsFileError(setting, path, f"cannot read it: {error.strerror}") from None
    reason = problem(data)
    if reason is not None:
        raise TlsFileError(setting, path, reason)
    return data


def check_files(files: TlsFiles) -> None:
    """TlsFileError unless every file holds what it should (before ssl reads them)."""
    read_pem(files.cert, "TLS_CERT_FILE", rules.certificate_problem)
    read_pem(files.key, "TLS_KEY_FILE", rules.key_problem)
    if files.ca is not None:
        read_pem(files.ca, "TLS_CA_FILE", rules.certificate_problem)


def _load_identity(context: ssl.SSLContext, files: TlsFiles) -> None:
    try:
        context.load_cert_chain(files.cert, files.key)
    except ssl.SSLError as error:
        reason = f"it does not go with TLS_CERT_FILE={str(files.cert)!r} ({error.reason})"
        raise TlsFileError("TLS_KEY_FILE", files.key, reason) from None
    except OSError as error:  # the file changed since it was checked
        raise TlsFileError("TLS_CERT_FILE", files.cert, str(error.strerror)) from None


def _load_ca(context: ssl.SSLContext, ca: Path) -> None:
    try:
        context.load_verify_locations(cafile=ca)
    except (ssl.SSLError, OSError) as error:
        raise TlsFileError("TLS_CA_FILE", ca, f"not a usable CA bundle ({error})") from None


def make_server_context(files: TlsFiles, alpn: Sequence[str] = ()) -> ssl.SSLContext:
    """A server context for one of the node's ports (`alpn`: the protocols it offers)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_identity(context, files)
    if files.ca is not None:
        _load_ca(context, files.ca)
        context.verify_mode = ssl.CERT_REQUIRED if files.require_client_cert else ssl.CERT_OPTIONAL
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def make_client_context(
    ca: Path | None,
    cert: Path | None = None,
    key: Path | None = None,
    alpn: Sequence[str] = (),
) -> ssl.SSLContext:
    """A context that verifies servers (and their names) against `ca`, or the system's
    trusted CAs without one, and presents `cert` when given (for mutual TLS)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificates and names
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        _load_ca(context, ca)
    if cert is not None and key is not None:
        _load_identity(context, TlsFiles(cert, key))
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


class NodeTls:
    """A node's TLS contexts, one per use, reloaded in place on SIGHUP."""

    def __init__(self, files: TlsFiles) -> None:
        check_files(files)
        self.files = files
        self.grpc_server = make_server_context(files, GRPC_ALPN)
        self.http_server = make_server_context(files, HTTP_ALPN)
        # The Redis-protocol port: no ALPN (Redis clients send none).
        self.resp_server = make_server_context(files)
        self.grpc_client = make_client_context(files.ca, files.cert, files.key, GRPC_ALPN)
        self.http_client = make_client_context(files.ca, files.cert, files.key)

    @property
    def peers_need_certificates(self) -> bool:
        """Whether replica calls must come over a connection with a verified certificate."""
        return self.files.ca is not None

    def reload(self) -> None:
        """Read the files again; TlsFileError (and nothing changed) if one is now wrong."""
        NodeTls(self.files)  # every check and every context, before touching the live ones
        for context in (
            self.grpc_server,
            self.http_server,
            self.resp_server,
            self.grpc_client,
            self.http_client,
        ):
            _load_identity(context, self.files)
            if self.files.ca is not None:
                _load_ca(context, self.files.ca)


def server_context(files: TlsFiles | None) -> ssl.SSLContext | None:
    """A server context without ALPN for a port of the node (None: TLS is off).

    For a listener outside this module's NodeTls; a running node's contexts
    are `NodeTls.resp_server` and its siblings, which SIGHUP reloads.
    """
    return None if files is None else make_server_context(files)
