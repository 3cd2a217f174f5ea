"""A local certificate authority and one certificate per principal (development).

``./dev setup``, ``./dev run`` and the test fixtures call :func:`ensure_pki`:
it creates, under ``<var_dir>/pki`` (``security.pki_dir``),

* ``ca.crt`` / ``ca.key``: a self-signed ECDSA P-256 CA, valid 1 year;
* ``<principal>.crt`` / ``<principal>.key`` for every principal: ECDSA P-256,
  valid 30 days, signed by the CA, usable as TLS server and client
  certificate. Its SANs name the principal twice: the URI
  ``spiffe://<trust_domain>/svc/<principal>`` (the identity the servers
  authorize on, SPIFFE's form, so a SPIFFE agent's SVIDs fit unchanged) and
  the DNS name ``<principal>`` (the name clients verify the server by).

Existing files are reused until they come within 7 days of expiry, then
re-issued (a running service picks the new files up, see ``runtime.security.tls``).
Production never calls this: cert-manager, Vault or a SPIFFE agent mounts
the files and ``security.cert_file``/``key_file``/``ca_file`` point at them.

Written with the ``cryptography`` library; no openssl CLI needed.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from runtime.security.files import write_atomic
from runtime.security.principals import PRINCIPALS, check_principal

CA_VALIDITY = dt.timedelta(days=365)
LEAF_VALIDITY = dt.timedelta(days=30)
RENEW_BEFORE = dt.timedelta(days=7)
SPIFFE_PATH_PREFIX = "/svc/"


@dataclass(frozen=True, slots=True)
class CertPaths:
    """The three files a principal's TLS needs."""

    cert: Path
    key: Path
    ca: Path


def spiffe_id(trust_domain: str, principal: str) -> str:
    """``spiffe://<trust_domain>/svc/<principal>``."""
    return f"spiffe://{trust_domain}{SPIFFE_PATH_PREFIX}{principal}"


def principal_of_spiffe_id(uri: str, trust_domain: str) -> str | None:
    """The principal named by a SPIFFE id of our trust domain, else None."""
    prefix = f"spiffe://{trust_domain}{SPIFFE_PATH_PREFIX}"
    if not uri.startswith(prefix):
        return None
    name = uri[len(prefix) :]
    return name if name in PRINCIPALS else None


def local_paths(pki_dir: Path, principal: str) -> CertPaths:
    return CertPaths(pki_dir / f"{principal}.crt", pki_dir / f"{principal}.key", pki_dir / "ca.crt")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _needs_renewal(cert_path: Path, ca: x509.Certificate | None = None) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (FileNotFoundError, ValueError):
        return True
    if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return True
    return ca is not None and cert.issuer != ca.subject


def create_ca(
    pki_dir: Path, *, name: str = "trading platform local CA"
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new self-signed CA in ``pki_dir`` (overwrites)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pki_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(pki_dir / "ca.key", _key_pem(key), 0o600)
    write_atomic(pki_dir / "ca.crt", cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, key


def issue_certificate(
    pki_dir: Path,
    principal: str,
    *,
    trust_domain: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    validity: dt.timedelta = LEAF_VALIDITY,
    extra_dns: tuple[str, ...] = (),
) -> CertPaths:
    """Issue (or re-issue) ``principal``'s key and certificate, signed by ``ca``."""
    check_principal(principal)
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(spiffe_id(trust_domain, principal)),
        x509.DNSName(principal),
        *(x509.DNSName(d) for d in extra_dns),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, principal)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = local_paths(pki_dir, principal)
    # Key first: a reader that sees the new certificate must find its key.
    write_atomic(paths.key, _key_pem(key), 0o600)
    write_atomic(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return paths


def load_ca(pki_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((pki_dir / "ca.crt").read_bytes())
    key = serialization.load_pem_private_key((pki_dir / "ca.key").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the local CA key is not an EC key")
    return cert, key


def ensure_pki(pki_dir: Path, trust_domain: str, principals: tuple[str, ...] = PRINCIPALS) -> list[str]:
    """Create what is missing or about to expire; returns the principals (re-)issued.
    Idempotent and cheap when everything is in place; processes starting at
    once serialize on a lock file (two CAs must never be created)."""
    pki_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(pki_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_locked(pki_dir, trust_domain, principals)


def _ensure_locked(pki_dir: Path, trust_domain: str, principals: tuple[str, ...]) -> list[str]:
    if _needs_renewal(pki_dir / "ca.crt") or not (pki_dir / "ca.key").exists():
        ca = create_ca(pki_dir)
    else:
        ca = load_ca(pki_dir)
    issued = []
    for principal in principals:
        if _needs_renewal(local_paths(pki_dir, principal).cert, ca[0]):
            issue_certificate(pki_dir, principal, trust_domain=trust_domain, ca=ca)
            issued.append(principal)
    return issued
