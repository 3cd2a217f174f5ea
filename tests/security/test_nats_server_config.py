"""The nats-server config tools.infra generates is what the permission table
says, nats-server accepts it, and it holds no anonymous or harness access
unless a development setting asks for the harness."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from runtime.config import Settings
from runtime.security.nats_permissions import HARNESS, NATS_SECRET, nats_users, permission_table
from runtime.security.secrets import get_secret
from tools.infra import find_nats_server_binary, nats_dir, write_nats_config


def _settings(tmp_path: Path, *, harness: bool = False, environment: str = "local") -> Settings:
    settings = Settings(var_dir=tmp_path / "var", environment=environment)
    settings.nats.test_harness = harness
    return settings


def _users(path: Path) -> dict[str, dict[str, object]]:
    config = json.loads(path.read_text())
    assert "no_auth_user" not in config
    assert "no_auth_user" not in config["authorization"]
    return {u["user"]: u for u in config["authorization"]["users"]}


def test_the_generated_config_is_the_table_with_each_principals_secret(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    path = write_nats_config(settings, "127.0.0.1", 14222)
    assert path.parent == nats_dir(settings)
    users = _users(path)
    assert list(users) == list(nats_users())  # no harness, no gateway, no anonymous user
    for principal, perms in permission_table().items():
        assert users[principal]["password"] == get_secret(settings, NATS_SECRET, principal)
        assert users[principal]["permissions"] == perms.config()
    config = json.loads(path.read_text())
    assert config["listen"] == "127.0.0.1:14222"
    assert config["jetstream"] == {"store_dir": str(nats_dir(settings))}
    # Plain-text passwords: readable by the owner only.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Generated again: the same (secrets are kept), so a reload changes nothing.
    assert write_nats_config(settings, "127.0.0.1", 14222).read_text() == path.read_text()


def test_nats_server_accepts_the_generated_config(tmp_path: Path) -> None:
    path = write_nats_config(_settings(tmp_path, harness=True), "127.0.0.1", 14222)
    checked = subprocess.run(
        [str(find_nats_server_binary()), "-t", "-c", str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_harness_user_only_when_asked_and_never_in_production(tmp_path: Path) -> None:
    assert HARNESS in _users(write_nats_config(_settings(tmp_path, harness=True), "127.0.0.1", 1))
    with pytest.raises(RuntimeError, match="development and tests only"):
        write_nats_config(
            _settings(tmp_path / "prod", harness=True, environment="production"), "127.0.0.1", 1
        )


def test_the_session_server_runs_from_the_generated_config(infra_settings: Settings) -> None:
    """The server the security tests attack is the one LocalInfra configured."""
    path = nats_dir(infra_settings) / "nats-server.conf"
    users = _users(path)
    assert set(users) == {*nats_users(), HARNESS}
    for principal, perms in permission_table().items():
        assert users[principal]["permissions"] == perms.config()
    pid = int((nats_dir(infra_settings) / "nats-server.pid").read_text())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert str(path).encode() in cmdline
