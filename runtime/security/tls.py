"""Mutual TLS for every internal gRPC port: credentials, rotation, peer identity.

:class:`TlsIdentity` holds one principal's key, certificate and CA bundle,
read from files (``security.cert_file``/``key_file``/``ca_file``, by default
the local PKI under ``<var_dir>/pki``). It re-reads them when they change on
disk (checked at most every ``security.cert_reload_s``), so certificates that
cert-manager, Vault or a SPIFFE agent rotate are picked up without a restart:

* servers use :meth:`TlsIdentity.server_credentials`: gRPC asks for the
  current configuration at every new handshake;
* clients (``runtime.grpc_client.ClientFactory``) compare
  :attr:`TlsIdentity.generation` and open new channels after a rotation.

:func:`peer_principal` reads the caller's identity from the TLS auth context
(the SPIFFE id in its certificate's URI SAN).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from runtime.config import Settings
from runtime.security.pki import CertPaths, ensure_pki, local_paths, principal_of_spiffe_id
from runtime.security.principals import check_principal

log = logging.getLogger(__name__)


class PlaintextRefusedError(RuntimeError):
    """Plaintext gRPC was switched on under a production profile."""


@dataclass(frozen=True, slots=True)
class _Material:
    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    cas: tuple[x509.Certificate, ...]
    mtimes: tuple[float, float, float]


def _mtimes(paths: CertPaths) -> tuple[float, float, float]:
    return (paths.key.stat().st_mtime, paths.cert.stat().st_mtime, paths.ca.stat().st_mtime)


def _load(paths: CertPaths) -> _Material:
    mtimes = _mtimes(paths)
    key_pem, cert_pem, ca_pem = paths.key.read_bytes(), paths.cert.read_bytes(), paths.ca.read_bytes()
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{paths.key}: only EC (P-256) keys are supported")
    cert = x509.load_pem_x509_certificate(cert_pem)
    if cert.public_key() != key.public_key():
        raise ValueError(f"{paths.cert} does not belong to {paths.key}")
    cas = tuple(x509.load_pem_x509_certificates(ca_pem))
    return _Material(key_pem, cert_pem, ca_pem, key, cert, cas, mtimes)


class TlsIdentity:
    """One principal's TLS material, reloaded when its files change."""

    def __init__(self, principal: str, paths: CertPaths, trust_domain: str, reload_s: float = 30.0) -> None:
        self.principal = check_principal(principal)
        self.paths = paths
        self.trust_domain = trust_domain
        self._reload_s = reload_s
        self._lock = threading.Lock()
        self._material = _load(paths)
        self._checked = time.monotonic()
        self.generation = 0

    @classmethod
    def for_principal(cls, settings: Settings, principal: str) -> TlsIdentity:
        """The identity of ``principal`` per ``settings.security``. In development
        the local PKI is created (or renewed) first."""
        sec = settings.security
        pki = sec.pki_path(settings.var_dir)
        default = local_paths(pki, principal)
        paths = CertPaths(
            sec.cert_file or default.cert, sec.key_file or default.key, sec.ca_file or default.ca
        )
        if sec.is_development(settings.environment) and paths == default:
            ensure_pki(pki, sec.trust_domain)
        return cls(principal, paths, sec.trust_domain, sec.cert_reload_s)

    # -- current material ------------------------------------------------------------------

    def _current(self) -> _Material:
        now = time.monotonic()
        if now - self._checked >= self._reload_s:
            self.refresh()
        return self._material

    def refresh(self) -> bool:
        """Re-read the files if they changed; True when new material was loaded."""
        with self._lock:
            self._checked = time.monotonic()
            try:
                if _mtimes(self.paths) == self._material.mtimes:
                    return False
                material = _load(self.paths)
            except (OSError, ValueError) as exc:
                # Half-written rotation, or a bad file: keep serving with what we have.
                log.warning("%s: TLS files not reloaded: %r", self.principal, exc)
                return False
            self._material = material
            self.generation += 1
            log.info("%s: TLS key and certificate reloaded (generation %d)", self.principal, self.generation)
            return True

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        return self._current().key

    @property
    def certificate(self) -> x509.Certificate:
        return self._current().cert

    @property
    def ca_certificates(self) -> tuple[x509.Certificate, ...]:
        return self._current().cas

    def check_generation(self) -> int:
        """The generation after a (rate-limited) check for rotated files."""
        self._current()
        return self.generation

    # -- gRPC credentials ------------------------------------------------------------------

    def server_credentials(self, *, require_client_certificate: bool = True) -> grpc.ServerCredentials:
        """Server credentials requiring a client certificate from our CA (the
        internal ports), or none (the public edge, whose callers authenticate
        with tokens); the configuration is fetched again at every handshake, so
        rotated files apply to new connections without a restart."""
        served: list[int] = [-1]

        def config() -> Any:
            m = self._current()
            served[0] = self.generation
            return grpc.ssl_server_certificate_configuration(
                [(m.key_pem, m.cert_pem)], root_certificates=m.ca_pem if require_client_certificate else None
            )

        initial = config()

        def fetch() -> Any:
            # Called by gRPC on a handshake; None means "unchanged".
            if self.check_generation() == served[0]:
                return None
            return config()

        return grpc.dynamic_ssl_server_credentials(
            initial, fetch, require_client_authentication=require_client_certificate
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Client credentials: our certificate, and the CA the server must chain to."""
        m = self._current()
        return grpc.ssl_channel_credentials(m.ca_pem, m.key_pem, m.cert_pem)


def check_plaintext_allowed(settings: Settings) -> None:
    """Raise when the plaintext switch is on outside development."""
    if settings.security.plaintext and not settings.security.is_development(settings.environment):
        raise PlaintextRefusedError(
            f"security.plaintext is a development switch; refused in environment {settings.environment!r}"
        )


def target_name_option(service: str) -> tuple[str, str]:
    """Channel option making the client verify the server's certificate names
    ``service`` (its DNS SAN), whatever address it is dialled on."""
    return ("grpc.ssl_target_name_override", service)


_SPIFFE_KEY = "peer_spiffe_id"


def peer_principal(context: Any, trust_domain: str) -> str | None:
    """The principal the caller's client certificate names, or None (no TLS,
    no client certificate, or not one of ours)."""
    auth = context.auth_context()
    ids = auth.get(_SPIFFE_KEY)
    if not ids:
        return None
    value = ids[0]
    return principal_of_spiffe_id(value.decode() if isinstance(value, bytes) else value, trust_domain)
