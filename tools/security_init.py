"""``tradingctl security init``: every credential file a deployment needs, made once.

The development and single-host form of what cert-manager, Vault and a
secret store provide in production (docs/security.md, "Deploying with
compose"). Given the settings (environment), it creates what is missing:

- **PKI**: a CA and one key + certificate per principal under
  ``security.pki_dir`` (:mod:`runtime.security.pki`: SPIFFE id and DNS name
  ``<principal>`` as SANs, plus the host of the principal's address in
  ``service_addresses`` when that is a name other than the principal's).
  Valid certificates are kept; certificates within 7 days of expiry, issued
  by another CA or not naming the expected hosts are re-issued. Under a
  non-development environment a CA is **generated** only with
  ``--allow-local-ca`` (production mounts cert-manager/Vault/SPIFFE files;
  with ``security.cert_file``/``key_file``/``ca_file`` set nothing is issued).
- **Secrets** ``<secrets_dir>/<system>/<name>`` (:mod:`runtime.security.secrets`),
  one per NATS user, Redis user, PostgreSQL login role and Kafka user, and
  the identity and notification services' encryption keys. A secret found in
  the environment (``TRADING_SECRET__<SYSTEM>__<NAME>``) or as a file is used
  as it is: **existing secrets are never overwritten**.
- **Admin secrets** no service holds: the CA key, the Redis ``admin`` user and
  the PostgreSQL migrator's password. With ``--admin-dir`` they go there
  (a volume only the init jobs and the PostgreSQL server mount); without it
  the CA key stays in the PKI directory and the Redis admin secret with the others.
- **The nats-server config** (users, passwords and permissions of
  :mod:`runtime.security.nats_permissions`; mode 0600) with the listen
  address and JetStream store the server needs.
- **The Redis/Dragonfly ACL file** (:mod:`runtime.security.redis_acl`;
  SHA-256 hashes only, so mode 0644: the cache server may run as its own user).
- With ``--postgres``: the database, every service's roles and its login
  password (through the migrator DSN, ``postgres.dsn``); with ``--migrate``
  also the migrations and grants (what ``postgres.migrate_on_start`` does at
  service start, so the services can run without the migrator's password).

Idempotent: a second run changes nothing and says so. No secret value is
ever printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import secrets as _random
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from runtime.config import SERVICE_NAMES, Settings
from runtime.security.files import create_once, write_atomic
from runtime.security.nats_permissions import (
    HARNESS,
    NATS_SECRET,
    nats_users,
    render_server_config,
    server_config,
)
from runtime.security.pki import RENEW_BEFORE, create_ca, issue_certificate, load_ca, local_paths, spiffe_id
from runtime.security.postgres_roles import POSTGRES_GRANTS
from runtime.security.principals import PRINCIPALS
from runtime.security.redis_acl import ADMIN_USER, REDIS_USERS, acl_lines, acl_path
from runtime.security.secrets import MissingSecretError, env_name

# The PostgreSQL migrator's password (the server's superuser in compose:
# POSTGRES_PASSWORD_FILE). An admin secret: no service holds it.
MIGRATOR = ("postgres", "migrator")


class InitError(RuntimeError):
    """The init step cannot do what was asked (reason in the message)."""


@dataclass(frozen=True)
class SecretSpec:
    """One secret ``<system>/<name>``: ``nbytes`` random bytes, base64url."""

    system: str
    name: str
    nbytes: int = 24
    # Held by no service process (the CA key's kind): written to --admin-dir when given.
    admin: bool = False

    @property
    def key(self) -> str:
        return f"{self.system}/{self.name}"


def secret_specs(settings: Settings, *, migrator: bool = False) -> list[SecretSpec]:
    """Every secret the platform's processes and servers read (``migrator``:
    also the PostgreSQL migrator's, for a server this deployment creates)."""
    specs = [SecretSpec(NATS_SECRET, p) for p in nats_users()]
    if settings.nats.test_harness and settings.security.is_development(settings.environment):
        specs.append(SecretSpec(NATS_SECRET, HARNESS))
    specs += [SecretSpec("redis", u) for u in REDIS_USERS]
    specs.append(SecretSpec("redis", ADMIN_USER, admin=True))
    specs += [SecretSpec("postgres", s) for s in POSTGRES_GRANTS]
    # Read only when kafka.sasl_mechanism is set (a real Kafka with SCRAM
    # users); made for every principal so switching SASL on needs no re-run.
    specs += [SecretSpec("kafka", p) for p in PRINCIPALS]
    # AES-256 keys: identity's signing-key KEK, notification's webhook-secret key.
    specs.append(SecretSpec("identity", "kek", nbytes=32))
    specs.append(SecretSpec("notification", "webhook-key", nbytes=32))
    if migrator:
        specs.append(SecretSpec(*MIGRATOR, admin=True))
    return specs


@dataclass
class InitOptions:
    """What ``tradingctl security init`` was asked to do (its command-line options)."""

    admin_dir: Path | None = None
    allow_local_ca: bool = False
    nats_config: Path | None = None
    nats_listen: str | None = None
    nats_store_dir: Path | None = None
    redis_acl: Path | None = None
    postgres: bool = False
    migrate: bool = False
    skip_files: bool = False


@dataclass
class InitReport:
    """What was done, one line per step (never a secret value)."""

    lines: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)


# --------------------------------------------------------------------------- files


def _write_if_changed(path: Path, data: bytes, mode: int, dir_mode: int = 0o700) -> bool:
    """Write ``data`` atomically unless the file already holds it; True when written."""
    try:
        if path.read_bytes() == data:
            if path.stat().st_mode & 0o777 != mode:
                path.chmod(mode)
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
    write_atomic(path, data, mode)
    return True


def _create_exclusive(path: Path, value: str) -> bool:
    """Create ``path`` holding ``value`` (mode 0600) unless it exists; True when created."""
    return create_once(path, value)


def secrets_root(settings: Settings) -> Path:
    return settings.security.secrets_path(settings.var_dir)


def _secret_dir(settings: Settings, spec: SecretSpec, admin_dir: Path | None) -> Path:
    return admin_dir if spec.admin and admin_dir is not None else secrets_root(settings)


def read_secret(settings: Settings, spec: SecretSpec, admin_dir: Path | None = None) -> str | None:
    """The secret from the environment or its file, else None (never generated)."""
    value = os.environ.get(env_name(spec.system, spec.name))
    if value:
        return value
    path = _secret_dir(settings, spec, admin_dir) / spec.system / spec.name
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    if not text:
        raise InitError(f"secret file {path} is empty: remove it (a new one is made) or fill it")
    return text


def ensure_secrets(
    settings: Settings, specs: Sequence[SecretSpec], admin_dir: Path | None, report: InitReport
) -> dict[str, str]:
    """Every secret of ``specs``, by ``system/name``: from the environment or its
    file if present, else generated into its file (never overwriting one)."""
    values: dict[str, str] = {}
    counts = {"environment": 0, "kept": 0, "generated": 0}
    for spec in specs:
        value = read_secret(settings, spec, admin_dir)
        if value is not None:
            counts["environment" if os.environ.get(env_name(spec.system, spec.name)) else "kept"] += 1
        else:
            path = _secret_dir(settings, spec, admin_dir) / spec.system / spec.name
            if _create_exclusive(path, _random.token_urlsafe(spec.nbytes)):
                counts["generated"] += 1
            else:  # a concurrent init made it first: theirs wins
                counts["kept"] += 1
            value = path.read_text().strip()
        values[spec.key] = value
    where = str(secrets_root(settings)) + (f" (admin: {admin_dir})" if admin_dir is not None else "")
    report.say(
        f"secrets: {len(specs)} in {where}: {counts['generated']} generated, {counts['kept']} kept, "
        f"{counts['environment']} from the environment"
    )
    return values


# --------------------------------------------------------------------------- PKI


def expected_dns_names(settings: Settings, principal: str) -> tuple[str, ...]:
    """DNS SANs of ``principal``'s certificate besides its own name: the host
    its address in ``service_addresses`` names, when that is another name."""
    if principal not in SERVICE_NAMES:
        return ()
    host = settings.address_of(principal).rpartition(":")[0].strip("[]")
    if not host or host == principal or host in ("localhost", "0.0.0.0"):
        return ()
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return ()  # an IP: the certificate's 127.0.0.1 SAN or the name override covers it
    return (host,)


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None


def _fresh(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) >= RENEW_BEFORE


def leaf_is_valid(
    pki_dir: Path, principal: str, ca: x509.Certificate, trust_domain: str, dns: tuple[str, ...]
) -> bool:
    """True when ``principal``'s key and certificate are in place, belong
    together, were issued by ``ca``, name the principal and ``dns`` and are
    not within 7 days of expiry."""
    paths = local_paths(pki_dir, principal)
    cert = _load_cert(paths.cert)
    if cert is None or not _fresh(cert) or cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
        key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
    except (FileNotFoundError, ValueError, TypeError, InvalidSignature):
        return False
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        return False
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    uris = set(sans.get_values_for_type(x509.UniformResourceIdentifier))
    names = set(sans.get_values_for_type(x509.DNSName))
    return spiffe_id(trust_domain, principal) in uris and {principal, *dns} <= names


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_certificates(
    settings: Settings, *, ca_dir: Path | None, allow_local_ca: bool, report: InitReport
) -> None:
    """The CA certificate and every principal's key + certificate under the PKI
    directory; the CA key (in ``ca_dir``, default the PKI directory) is read or
    made only when something has to be issued."""
    sec = settings.security
    if sec.cert_file or sec.key_file or sec.ca_file:
        report.say("pki: certificate files are configured (mounted by the platform): nothing issued")
        return
    pki = sec.pki_path(settings.var_dir)
    ca_dir = ca_dir or pki
    with _locked(ca_dir):
        names = {p: expected_dns_names(settings, p) for p in PRINCIPALS}
        current = _load_cert(pki / "ca.crt")
        if current is not None and _fresh(current):
            stale = [p for p in PRINCIPALS if not leaf_is_valid(pki, p, current, sec.trust_domain, names[p])]
            if not stale:
                report.say(f"pki: CA and {len(PRINCIPALS)} certificates in {pki} valid, kept")
                return
        ca_cert = _load_cert(ca_dir / "ca.crt")
        if ca_cert is not None and _fresh(ca_cert) and (ca_dir / "ca.key").exists():
            ca = load_ca(ca_dir)
            report.say(f"pki: CA in {ca_dir} kept")
        else:
            if not (sec.is_development(settings.environment) or allow_local_ca):
                raise InitError(
                    f"environment {settings.environment!r}: refusing to generate a certificate authority. "
                    "Mount the certificates (TRADING_SECURITY__CERT_FILE/__KEY_FILE/__CA_FILE from "
                    "cert-manager, Vault or a SPIFFE agent) or pass --allow-local-ca for a "
                    "single-host deployment"
                )
            ca = create_ca(ca_dir)
            report.say(f"pki: new CA in {ca_dir} (valid 1 year)")
        if ca_dir.resolve() != pki.resolve():
            pki.mkdir(parents=True, exist_ok=True, mode=0o755)
            _write_if_changed(pki / "ca.crt", ca[0].public_bytes(serialization.Encoding.PEM), 0o644)
        issued = []
        for p in PRINCIPALS:
            if not leaf_is_valid(pki, p, ca[0], sec.trust_domain, names[p]):
                issue_certificate(pki, p, trust_domain=sec.trust_domain, ca=ca, extra_dns=names[p])
                issued.append(p)
        kept = len(PRINCIPALS) - len(issued)
        report.say(
            f"pki: {len(issued)} certificates issued ({', '.join(issued) or '-'}), {kept} kept, in {pki}"
        )


# --------------------------------------------------------------------------- servers' configs


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(text if "://" in text else f"x://{text}")
    return parts.hostname or "127.0.0.1", parts.port or default_port


def write_nats_server_config(
    settings: Settings, secrets: dict[str, str], options: InitOptions, report: InitReport
) -> Path:
    """The nats-server config: the permission table's users with their passwords."""
    from tools.infra import nats_dir

    if options.nats_config is None:  # the local form, as LocalInfra writes it
        path = nats_dir(settings) / "nats-server.conf"
        pid_file: Path | None = nats_dir(settings) / "nats-server.pid"
    else:
        path, pid_file = options.nats_config, None
    host, port = _host_port(options.nats_listen or settings.nats.url, 4222)
    if host == "localhost":
        host = "127.0.0.1"
    store = options.nats_store_dir or nats_dir(settings)
    harness = secrets.get(f"{NATS_SECRET}/{HARNESS}")
    config = server_config(
        {p: secrets[f"{NATS_SECRET}/{p}"] for p in nats_users()},
        host=host,
        port=port,
        store_dir=store,
        pid_file=pid_file,
        harness_password=harness,
    )
    written = _write_if_changed(path, render_server_config(config).encode(), 0o600)
    report.say(f"nats: server config {path} (listen {host}:{port}, store {store}) {_verb(written)}")
    return path


def write_redis_acl(
    settings: Settings, secrets: dict[str, str], options: InitOptions, report: InitReport
) -> Path:
    """The Redis/Dragonfly ACL file (password hashes only, so readable by the server's own user)."""
    path = options.redis_acl or acl_path(settings)
    text = "\n".join(acl_lines(lambda user: secrets[f"redis/{user}"])) + "\n"
    written = _write_if_changed(path, text.encode(), 0o644, dir_mode=0o755)
    report.say(f"redis: ACL file {path} ({len(REDIS_USERS) + 1} users, default off) {_verb(written)}")
    return path


def _verb(written: bool) -> str:
    return "written" if written else "unchanged"


# --------------------------------------------------------------------------- PostgreSQL


def with_password(dsn: str, password: str) -> str:
    """``dsn`` carrying ``password`` unless it has one already."""
    parts = urlsplit(dsn)
    if parts.password is not None or not password:
        return dsn
    user = parts.username or "postgres"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def provision_postgres(
    settings: Settings, *, admin_dir: Path | None, migrate: bool, report: InitReport
) -> None:
    """The database, and per service its roles and login password (``migrate``:
    also its migrations and grants), through the migrator's DSN."""
    import asyncpg

    from runtime.resources import migrate_service
    from runtime.security.postgres_roles import ensure_service_roles, set_app_password
    from tools.infra import database_of, ensure_database

    migrator = read_secret(settings, SecretSpec(*MIGRATOR, admin=True), admin_dir) or ""
    pg = settings.postgres.model_copy(
        update={
            "dsn": with_password(settings.postgres.dsn, migrator),
            "admin_dsn": with_password(settings.postgres.admin_dsn, migrator),
        }
    )
    local = settings.model_copy(update={"postgres": pg})
    name = database_of(pg.dsn)
    created = await ensure_database(pg.admin_dsn, name)
    report.say(f"postgres: database {name} {'created' if created else 'exists'}")
    passwords: dict[str, str] = {}
    for service in POSTGRES_GRANTS:
        value = read_secret(settings, SecretSpec("postgres", service))
        if value is None:
            raise InitError(f"secret postgres/{service} is missing (run `tradingctl security init` first)")
        passwords[service] = value
    if migrate:
        for service in POSTGRES_GRANTS:
            await migrate_service(local, service)
        report.say(
            f"postgres: migrated {', '.join(POSTGRES_GRANTS)} (roles, schema, grants, login passwords)"
        )
        return
    # Roles are the cluster's, not the database's: the admin DSN suffices.
    conn = await asyncpg.connect(pg.admin_dsn, timeout=pg.command_timeout_s)
    try:
        changed = []
        for service, password in passwords.items():
            await ensure_service_roles(conn, service)
            if await set_app_password(conn, service, password):
                changed.append(service)
    finally:
        await conn.close()
    report.say(
        f"postgres: roles of {len(passwords)} services in place; login password set for "
        f"{', '.join(changed) or 'none (all unchanged)'}"
    )


# --------------------------------------------------------------------------- the command


def run_init(settings: Settings, options: InitOptions) -> InitReport:
    """Everything ``options`` asks for; raises InitError (or MissingSecretError) on refusal."""
    report = InitReport()
    admin_dir = options.admin_dir
    if not options.skip_files:
        # Certificates first: a refused CA leaves nothing half made.
        ca_dir = admin_dir / "ca" if admin_dir is not None else None
        ensure_certificates(settings, ca_dir=ca_dir, allow_local_ca=options.allow_local_ca, report=report)
        specs = secret_specs(settings, migrator=admin_dir is not None)
        secrets = ensure_secrets(settings, specs, admin_dir, report)
        # The ACL file before the NATS config: a directory they share is then
        # created traversable (the cache server reads as its own user).
        write_redis_acl(settings, secrets, options, report)
        write_nats_server_config(settings, secrets, options, report)
    if options.postgres or options.migrate:
        asyncio.run(provision_postgres(settings, admin_dir=admin_dir, migrate=options.migrate, report=report))
    return report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tradingctl security", description="Credentials of a deployment (docs/security.md)."
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    init = sub.add_parser(
        "init",
        help="create the PKI, every secret, the NATS server config and the Redis ACL file (idempotent)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    init.add_argument(
        "--admin-dir",
        type=Path,
        help="where the secrets no service holds go: the CA key (<dir>/ca), Redis admin, and a "
        "generated PostgreSQL migrator password (<dir>/postgres/migrator)",
    )
    init.add_argument(
        "--allow-local-ca",
        action="store_true",
        help="outside development environments, allow generating a CA (single-host deployments)",
    )
    init.add_argument("--nats-config", type=Path, help="nats-server config path (default <var_dir>/nats)")
    init.add_argument("--nats-listen", help="host:port the nats-server listens on (default: from nats.url)")
    init.add_argument("--nats-store-dir", type=Path, help="JetStream store directory of the nats-server")
    init.add_argument("--redis-acl", type=Path, help="Redis/Dragonfly ACL file (default <var_dir>/redis)")
    init.add_argument(
        "--postgres",
        action="store_true",
        help="also create the database, every service's roles and its login password (migrator DSN)",
    )
    init.add_argument(
        "--migrate", action="store_true", help="with --postgres: also apply migrations and grants"
    )
    init.add_argument(
        "--skip-files",
        action="store_true",
        help="only the PostgreSQL step (the files exist already; may be mounted read-only)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``tradingctl security init [...]``."""
    args = _parser().parse_args(argv)
    options = InitOptions(
        admin_dir=args.admin_dir,
        allow_local_ca=args.allow_local_ca,
        nats_config=args.nats_config,
        nats_listen=args.nats_listen,
        nats_store_dir=args.nats_store_dir,
        redis_acl=args.redis_acl,
        postgres=args.postgres or args.migrate,
        migrate=args.migrate,
        skip_files=args.skip_files,
    )
    if options.skip_files and not options.postgres:
        print("security init: --skip-files leaves nothing to do without --postgres", file=sys.stderr)
        return 2
    try:
        report = run_init(Settings(), options)
    except (InitError, MissingSecretError) as exc:
        print(f"security init: {exc}", file=sys.stderr)
        return 1
    for line in report.lines:
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
