"""`tradingctl security init` on a temp dir: what it creates, that it keeps
what exists, and when it refuses. No server needed (the PostgreSQL step is
tested against a real server in tests/security/test_security_init_postgres.py)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from runtime.config import SERVICE_NAMES, Settings
from runtime.security.nats_permissions import NATS_SECRET, nats_users, permission_table
from runtime.security.pki import create_ca, issue_certificate, local_paths, spiffe_id
from runtime.security.postgres_roles import POSTGRES_GRANTS
from runtime.security.principals import PRINCIPALS
from runtime.security.redis_acl import ADMIN_USER, REDIS_USERS
from runtime.security.secrets import env_name, get_secret
from tools import cli
from tools.infra import find_nats_server_binary
from tools.security_init import (
    InitError,
    InitOptions,
    expected_dns_names,
    main,
    run_init,
    secret_specs,
    with_password,
)

ROOT = Path(__file__).resolve().parents[3]


def _settings(tmp_path: Path, environment: str = "compose") -> Settings:
    """Settings laid out like docker-compose.yml's, under tmp_path."""
    s = Settings(environment=environment, var_dir=tmp_path / "var")
    s.security.pki_dir = tmp_path / "secrets" / "pki"
    s.security.secrets_dir = tmp_path / "secrets"
    s.nats.url = "nats://nats:4222"
    s.service_addresses = {n: f"{n}:{50051 + i}" for i, n in enumerate(SERVICE_NAMES)}
    return s


def _compose_options(tmp_path: Path, **update: object) -> InitOptions:
    options = InitOptions(
        admin_dir=tmp_path / "admin",
        allow_local_ca=True,
        nats_config=tmp_path / "config" / "nats-server.conf",
        nats_listen="0.0.0.0:4222",
        nats_store_dir=Path("/data"),
        redis_acl=tmp_path / "config" / "dragonfly.acl",
    )
    for key, value in update.items():
        setattr(options, key, value)
    return options


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_makes_every_credential_file_of_the_compose_layout(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    report = run_init(settings, _compose_options(tmp_path))
    secrets, admin, pki = tmp_path / "secrets", tmp_path / "admin", tmp_path / "secrets" / "pki"

    # Secrets: one per NATS, Redis, PostgreSQL and Kafka user, the two AES keys; 0600.
    for spec in secret_specs(settings):
        path = (admin if spec.admin else secrets) / spec.system / spec.name
        assert _mode(path) == 0o600, path
        assert _mode(path.parent) == 0o700, path.parent
        assert len(path.read_text()) >= 32
    assert {f"{NATS_SECRET}/{p}" for p in nats_users()} <= {s.key for s in secret_specs(settings)}
    for name in ("kek",):
        assert len(base64.urlsafe_b64decode(_pad((secrets / "identity" / name).read_text()))) == 32
    assert len(base64.urlsafe_b64decode(_pad((secrets / "notification" / "webhook-key").read_text()))) == 32
    # Admin secrets never in the services' volume.
    assert (admin / "postgres" / "migrator").is_file() and (admin / "redis" / ADMIN_USER).is_file()
    assert not (secrets / "redis" / ADMIN_USER).exists()
    assert not (secrets / "postgres" / "migrator").exists()

    # PKI: the CA certificate next to the leaves, its key only in the admin dir.
    assert (admin / "ca" / "ca.key").is_file() and not (pki / "ca.key").exists()
    assert (pki / "ca.crt").read_bytes() == (admin / "ca" / "ca.crt").read_bytes()
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    for principal in PRINCIPALS:
        paths = local_paths(pki, principal)
        assert _mode(paths.key) == 0o600 and _mode(paths.cert) == 0o644
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        # Clients verify the server by the service name (ssl_target_name_override): the compose host.
        assert sans.get_values_for_type(x509.DNSName) == [principal]
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
            spiffe_id(settings.security.trust_domain, principal)
        ]

    # NATS: the table's users with their secrets, listening where compose publishes it.
    nats_conf = tmp_path / "config" / "nats-server.conf"
    assert _mode(nats_conf) == 0o600
    config = json.loads(nats_conf.read_text())
    assert config["listen"] == "0.0.0.0:4222"
    assert config["jetstream"] == {"store_dir": "/data"}
    assert "pid_file" not in config and "no_auth_user" not in config["authorization"]
    users = {u["user"]: u for u in config["authorization"]["users"]}
    assert list(users) == list(nats_users())
    for principal, perms in permission_table().items():
        assert users[principal]["password"] == (secrets / "nats" / principal).read_text()
        assert users[principal]["permissions"] == perms.config()

    # Redis/Dragonfly: hashes of the same secrets, default user off; readable by the server's user.
    acl = tmp_path / "config" / "dragonfly.acl"
    assert _mode(acl) == 0o644
    lines = {line.split()[1]: line for line in acl.read_text().splitlines()}
    assert lines["default"].startswith("user default off")
    assert set(lines) == {"default", ADMIN_USER, *REDIS_USERS}
    for user in (*REDIS_USERS, ADMIN_USER):
        secret = (admin if user == ADMIN_USER else secrets) / "redis" / user
        assert f"#{hashlib.sha256(secret.read_bytes()).hexdigest()}" in lines[user].split()
        assert secret.read_text() not in acl.read_text()

    assert any(line.startswith("pki: new CA") for line in report.lines)
    assert not any(
        secret.read_text() in "\n".join(report.lines) for secret in secrets.rglob("*") if secret.is_file()
    )


def _pad(text: str) -> str:
    return text + "=" * (-len(text) % 4)


def test_a_second_run_changes_nothing_and_existing_secrets_are_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path)
    # A secret placed by the operator before the first run, and one injected by the environment.
    (tmp_path / "secrets" / "nats").mkdir(parents=True, mode=0o700)
    (tmp_path / "secrets" / "nats" / "risk").write_text("operator-chosen-risk-password\n")
    monkeypatch.setenv(env_name("redis", "gateway"), "gateway-password-from-the-environment")
    run_init(settings, _compose_options(tmp_path))
    assert (tmp_path / "secrets" / "nats" / "risk").read_text() == "operator-chosen-risk-password\n"
    assert not (tmp_path / "secrets" / "redis" / "gateway").exists()
    config = json.loads((tmp_path / "config" / "nats-server.conf").read_text())
    risk = next(u for u in config["authorization"]["users"] if u["user"] == "risk")
    assert risk["password"] == "operator-chosen-risk-password"
    gateway_hash = hashlib.sha256(b"gateway-password-from-the-environment").hexdigest()
    assert f"#{gateway_hash}" in (tmp_path / "config" / "dragonfly.acl").read_text()

    before = _snapshot(tmp_path)
    report = run_init(settings, _compose_options(tmp_path))
    assert _snapshot(tmp_path) == before  # not a byte, not an mtime
    text = "\n".join(report.lines)
    assert "0 generated" in text and "1 from the environment" in text
    assert "CA and 12 certificates" in text and "kept" in text
    assert text.count("unchanged") == 2  # NATS config and ACL file


def test_an_empty_secret_file_is_an_error_not_overwritten(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    (tmp_path / "secrets" / "postgres").mkdir(parents=True)
    (tmp_path / "secrets" / "postgres" / "audit").write_text("")
    with pytest.raises(InitError, match="empty"):
        run_init(settings, _compose_options(tmp_path))
    assert (tmp_path / "secrets" / "postgres" / "audit").read_text() == ""


def test_production_refuses_to_generate_a_ca_without_allow_local_ca(tmp_path: Path) -> None:
    for environment in ("production", "compose", "staging"):
        root = tmp_path / environment
        settings = _settings(root, environment)
        with pytest.raises(InitError, match="refusing to generate a certificate authority"):
            run_init(settings, _compose_options(root, allow_local_ca=False))
        # Refused before anything was made: no secret, no key.
        assert not (root / "secrets").exists()
        assert not list((root / "admin").rglob("*.key"))
        assert main_exit(root, environment) == 1

    # Development environments make their own CA, as ./dev setup does.
    run_init(
        _settings(tmp_path / "dev", "development"), _compose_options(tmp_path / "dev", allow_local_ca=False)
    )
    assert (tmp_path / "dev" / "admin" / "ca" / "ca.key").is_file()


def main_exit(root: Path, environment: str) -> int:
    """The CLI's exit code for the refusing case (it prints, never raises)."""
    import os

    env = {
        "TRADING_ENVIRONMENT": environment,
        "TRADING_VAR_DIR": str(root / "var"),
        "TRADING_SECURITY__PKI_DIR": str(root / "secrets" / "pki"),
        "TRADING_SECURITY__SECRETS_DIR": str(root / "secrets"),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return main(["init", "--admin-dir", str(root / "admin")])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_production_with_mounted_or_existing_certificates_needs_no_ca(tmp_path: Path) -> None:
    # Files from cert-manager/Vault configured: nothing is issued, the rest is made.
    settings = _settings(tmp_path / "mounted", "production")
    settings.security.cert_file = tmp_path / "mounted" / "tls.crt"
    settings.security.key_file = tmp_path / "mounted" / "tls.key"
    settings.security.ca_file = tmp_path / "mounted" / "ca.crt"
    report = run_init(settings, _compose_options(tmp_path / "mounted", allow_local_ca=False))
    assert any("nothing issued" in line for line in report.lines)
    assert not (tmp_path / "mounted" / "secrets" / "pki").exists()
    assert (tmp_path / "mounted" / "secrets" / "nats" / "risk").is_file()

    # Valid certificates already in the PKI directory (a mounted bundle): kept, no CA key needed.
    root = tmp_path / "bundle"
    run_init(_settings(root, "development"), _compose_options(root))
    (root / "admin" / "ca" / "ca.key").unlink()
    report = run_init(_settings(root, "production"), _compose_options(root, allow_local_ca=False))
    assert any("certificates" in line and "valid, kept" in line for line in report.lines)


def test_only_stale_foreign_or_misnamed_certificates_are_reissued(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    run_init(settings, _compose_options(tmp_path))
    pki = tmp_path / "secrets" / "pki"
    before = {p: local_paths(pki, p).cert.read_bytes() for p in PRINCIPALS}

    # risk: a certificate from another CA; audit: about to expire.
    other = create_ca(tmp_path / "other-ca")
    issue_certificate(pki, "risk", trust_domain=settings.security.trust_domain, ca=other)
    ca = (x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes()), _ca_key(tmp_path / "admin" / "ca"))
    issue_certificate(
        pki, "audit", trust_domain=settings.security.trust_domain, ca=ca, validity=dt.timedelta(days=3)
    )
    # execution: now dialled at a host name other than its own.
    settings.service_addresses["execution"] = "execution.trading.svc:50055"
    assert expected_dns_names(settings, "execution") == ("execution.trading.svc",)

    report = run_init(settings, _compose_options(tmp_path))
    assert any("3 certificates issued (risk, execution, audit)" in line for line in report.lines), (
        report.lines
    )
    for p in PRINCIPALS:
        same = local_paths(pki, p).cert.read_bytes() == before[p]
        assert same == (p not in ("risk", "audit", "execution")), p
    cert = x509.load_pem_x509_certificate(local_paths(pki, "execution").cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["execution", "execution.trading.svc"]


def _ca_key(ca_dir: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def test_expected_dns_names_skip_ips_and_the_principal_itself() -> None:
    s = Settings(service_addresses={"risk": "risk:1", "audit": "10.0.0.7:2", "identity": "[::1]:3"})
    assert expected_dns_names(s, "risk") == ()
    assert expected_dns_names(s, "audit") == ()
    assert expected_dns_names(s, "identity") == ()
    assert expected_dns_names(s, "operator") == ()
    assert expected_dns_names(Settings(), "execution") == ()  # 127.0.0.1:<port>


def test_the_local_form_matches_what_the_services_read(tmp_path: Path) -> None:
    """Without options: the development layout under var_dir, the files LocalInfra uses."""
    settings = Settings(environment="local", var_dir=tmp_path / "var")
    run_init(settings, InitOptions())
    var = tmp_path / "var"
    assert (var / "pki" / "ca.key").is_file() and (var / "pki" / "operator.crt").is_file()
    assert json.loads((var / "nats" / "nats-server.conf").read_text())["pid_file"].endswith("nats-server.pid")
    assert (var / "redis" / "users.acl").is_file()
    # get_secret finds what init made (generates nothing new).
    for spec in secret_specs(settings):
        assert (
            get_secret(settings, spec.system, spec.name)
            == (var / "secrets" / spec.system / spec.name).read_text()
        )


def test_nats_server_accepts_the_generated_config(tmp_path: Path) -> None:
    try:
        binary = find_nats_server_binary()
    except FileNotFoundError:
        pytest.skip("nats-server not installed")
    run_init(_settings(tmp_path), _compose_options(tmp_path))
    done = subprocess.run(
        [str(binary), "-t", "-c", str(tmp_path / "config" / "nats-server.conf")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_secret_the_code_reads_is_made() -> None:
    """An inventory of get_secret call sites: a new secret must be added to secret_specs."""
    specs = secret_specs(Settings(), migrator=True)
    systems = {s.system for s in specs}
    keys = {s.key for s in specs}
    call = re.compile(r"get_secret\(\s*[\w.()]+,\s*(\"[\w-]+\"|NATS_SECRET)\s*,\s*(\"[\w-]+\")?")
    found = 0
    for path in [
        *ROOT.glob("runtime/**/*.py"),
        *ROOT.glob("services/**/*.py"),
        *ROOT.glob("gateway/**/*.py"),
    ]:
        for m in call.finditer(path.read_text()):
            system = "nats" if m.group(1) == "NATS_SECRET" else m.group(1).strip('"')
            assert system in systems, f"{path}: secret system {system} is not made by security init"
            if m.group(2):
                assert f"{system}/{m.group(2).strip(chr(34))}" in keys, f"{path}: {m.group(0)}"
            found += 1
    assert found >= 6
    # The per-principal systems cover exactly their tables.
    assert {s.name for s in specs if s.system == "postgres" and not s.admin} == set(POSTGRES_GRANTS)
    assert {s.name for s in specs if s.system == "redis"} == {*REDIS_USERS, ADMIN_USER}
    assert {s.name for s in specs if s.system == "kafka"} == set(PRINCIPALS)


def test_with_password_adds_one_only_where_missing() -> None:
    assert with_password("postgresql://postgres@db:5432/trading", "p@ss/w") == (
        "postgresql://postgres:p%40ss%2Fw@db:5432/trading"
    )
    assert with_password("postgresql://u:given@db/x", "other") == "postgresql://u:given@db/x"
    assert with_password("postgresql://u@db/x", "") == "postgresql://u@db/x"


def test_the_cli_knows_the_command() -> None:
    assert "security" in cli.PASSTHROUGH
    assert cli.main(["security", "init", "--skip-files"]) == 2  # nothing to do without --postgres
