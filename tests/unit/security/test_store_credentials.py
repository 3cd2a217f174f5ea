"""The credential tables of the data stores (Redis ACL users, PostgreSQL roles,
Kafka ACLs) against the services they describe, and the one place that turns
them into connection parameters. No server needed."""

from __future__ import annotations

import importlib
import re
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from runtime.config import SERVICE_NAMES, KafkaSettings, Settings, to_env
from runtime.contracts import event_registry
from runtime.messaging.kafka.admin import dlq_topic
from runtime.messaging.kafka.security import client_security
from runtime.security.kafka_acl import CONSUMERS, bindings, kafka_acls_commands, topic_owner
from runtime.security.postgres_roles import (
    POSTGRES_GRANTS,
    app_role,
    owner_role,
    scram_sha_256_verifier,
    tenant_role,
    verifier_matches,
)
from runtime.security.principals import OPERATOR, PRINCIPALS
from runtime.security.redis_acl import ADMIN_USER, REDIS_USERS, acl_lines, setuser_commands
from runtime.security.store_credentials import kafka_settings_for, postgres_dsn, redis_auth


def _needs(dependency: str) -> set[str]:
    """Services whose ServiceSpec needs `dependency` (the gateway is no ServiceSpec)."""
    found = set()
    for name in SERVICE_NAMES:
        if name == "gateway":
            continue
        spec = importlib.import_module(f"services.{name}.main").SPEC
        if dependency in spec.needs:
            found.add(name)
    return found


# ------------------------------------------------------------------ Redis


def test_every_redis_user_is_a_principal_and_every_service_using_redis_has_one() -> None:
    assert set(REDIS_USERS) <= set(PRINCIPALS)
    assert set(REDIS_USERS) == _needs("redis") | {"gateway"}


def test_acl_file_turns_the_default_user_off_and_holds_no_plaintext_password() -> None:
    lines = acl_lines(lambda name: f"pw-of-{name}")
    assert lines[0].startswith("user default off ")
    assert "nopass" not in " ".join(lines)
    assert not any("pw-of-" in line for line in lines)
    by_user = {line.split()[1]: line for line in lines}
    assert set(by_user) == {"default", ADMIN_USER, *REDIS_USERS}
    for name in REDIS_USERS:
        rules = by_user[name].split()
        assert rules[2] == "on" and re.fullmatch(r"#[0-9a-f]{64}", rules[3])
        # Nothing but its table entry: no allkeys, no channels, no admin or dangerous categories.
        assert "-@all" in rules and "allkeys" not in rules and "+@all" not in rules
        assert not any(r.startswith("&") or r.startswith("+@") for r in rules)
    # The same table as live ACL SETUSER commands (a server managed elsewhere).
    assert [c[2] for c in setuser_commands(lambda n: "x")] == ["default", *sorted(REDIS_USERS)]


# One sample key per owner of a key namespace.
_OWNED_SAMPLES = {
    "marketdata": ["md:quote:BTC-USD", "md:instruments"],
    "features": ["features:vector:BTC-USD"],
    "risk": [
        "t:{t-1}:risk:limits",
        "t:{t-1}:risk:check:c-1",
        "t:{t-1}:risk:outbox",
        "risk:outbox:lock",
        "risk:corr",
    ],
    "gateway": ["t:{t-1}:gateway:ratelimit", "t:{t-1}:gateway:idem:ab12"],
    "identity": ["identity:apikey:ab12", "identity:login_failures:ab12"],
}


@pytest.mark.parametrize("principal", sorted(REDIS_USERS))
def test_a_redis_user_may_write_its_own_keys_only(principal: str) -> None:
    writable = REDIS_USERS[principal].read_write
    for owner, keys in _OWNED_SAMPLES.items():
        for key in keys:
            assert any(fnmatchcase(key, p) for p in writable) == (owner == principal), (principal, key)


def test_tenant_key_patterns_cannot_be_forged_across_services() -> None:
    # tenant_key() refuses ':', '{' and '}' in a tenant id, so no gateway key can match risk's pattern.
    patterns = REDIS_USERS["risk"].read_write
    assert not any(fnmatchcase("t:{a}:gateway:idem:x", p) for p in patterns)
    assert any(fnmatchcase("t:{a}:risk:pos", p) for p in patterns)
    assert any(fnmatchcase("risk:outbox:tenants", p) for p in patterns)  # its outbox's index


def test_redis_auth_is_the_principals_own_user(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path)
    auth = redis_auth(settings, "risk")
    assert auth["username"] == "risk" and auth["password"] != redis_auth(settings, "gateway")["password"]
    with pytest.raises(ValueError):
        redis_auth(settings, "nobody")


# ------------------------------------------------------------------ PostgreSQL


def test_every_service_with_a_schema_has_roles_and_only_those() -> None:
    assert set(POSTGRES_GRANTS) == _needs("postgres")
    for service in POSTGRES_GRANTS:
        assert len({owner_role(service), app_role(service), tenant_role(service)}) == 3


def test_service_dsn_replaces_the_user_and_carries_no_password(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path)
    settings.postgres.dsn = "postgresql://migrator:s3cret@db.internal:6432/trading?sslmode=verify-full"
    assert postgres_dsn(settings, "execution") == (
        "postgresql://trading_execution_app@db.internal:6432/trading?sslmode=verify-full"
    )


def test_scram_verifier_round_trip() -> None:
    verifier = scram_sha_256_verifier("correct horse")
    assert re.fullmatch(r"SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+", verifier)
    assert verifier_matches(verifier, "correct horse")
    assert not verifier_matches(verifier, "wrong horse")
    assert not verifier_matches("md5abc", "correct horse") and not verifier_matches(None, "x")


# ------------------------------------------------------------------ Kafka


def test_each_topic_is_written_by_the_domain_of_its_events_and_the_operator_only() -> None:
    registry = event_registry()
    writers: dict[str, set[str]] = {}
    for b in bindings(registry):
        if b.resource_type == "TOPIC" and b.operation == "WRITE":
            writers.setdefault(b.name, set()).add(b.principal.removeprefix("User:"))
    for topic in registry.kafka_topics():
        owner = topic_owner(registry, topic)
        assert topic == f"trading.{owner}.{topic.split('.', 2)[2]}"
        assert writers[topic] == {owner, OPERATOR}
        # Dead letters of a topic: written by its consumers, read by the operator.
        readers = {c.principal for c in CONSUMERS if c.event_types is None or topic in _topics(c.event_types)}
        assert writers.get(dlq_topic(topic), set()) == readers


def _topics(event_types: tuple[str, ...]) -> set[str]:
    registry = event_registry()
    return {registry.route(t).kafka_topic for t in event_types}


def test_the_consumer_table_is_what_the_services_subscribe() -> None:
    from services.analytics.domain import SUNK_EVENTS
    from services.analytics.settings import AnalyticsSettings
    from services.audit.domain.lineage import LINEAGE_EVENT_TYPES
    from services.audit.settings import AuditSettings
    from services.notification import domain as notification
    from services.notification.main import ConsumerNames
    from services.portfolio.consumers import FILL_EVENT as PORTFOLIO_FILL
    from services.portfolio.main import FILLS_GROUP as PORTFOLIO_GROUP
    from services.risk.consumers import CLUSTERS_EVENT, CLUSTERS_GROUP
    from services.risk.consumers import FILL_EVENT as RISK_FILL
    from services.risk.consumers import FILLS_GROUP as RISK_GROUP

    table = {(c.principal, c.group): None if c.event_types is None else set(c.event_types) for c in CONSUMERS}
    assert len(table) == len(CONSUMERS)
    assert table == {
        ("risk", RISK_GROUP): {RISK_FILL},
        ("risk", CLUSTERS_GROUP): {CLUSTERS_EVENT},
        ("portfolio", PORTFOLIO_GROUP): {PORTFOLIO_FILL},
        ("analytics", AnalyticsSettings().consumer_group): set(SUNK_EVENTS),
        ("audit", AuditSettings().consumer_group): None,
        ("audit", AuditSettings().lineage_group): set(LINEAGE_EVENT_TYPES),
        (
            "notification",
            ConsumerNames().events_group,
        ): set(notification.RISK_EVENT_TYPES + notification.PORTFOLIO_EVENT_TYPES),
    }


def test_groups_are_read_by_their_consumer_only_and_commands_are_well_formed() -> None:
    acls = bindings()
    groups = {(b.principal, b.name) for b in acls if b.resource_type == "GROUP"}
    assert groups == {(f"User:{c.principal}", c.group) for c in CONSUMERS}
    assert all(b.permission == "ALLOW" and b.pattern_type == "LITERAL" for b in acls)
    lines = kafka_acls_commands(acls)
    assert all(line.startswith("kafka-acls.sh --bootstrap-server $BOOTSTRAP ") for line in lines)
    assert any("--allow-principal User:execution --operation Describe --operation Write --topic "
               "trading.execution.orders" in line for line in lines)  # fmt: skip


def test_kafka_clients_log_in_as_their_principal_only_when_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(var_dir=tmp_path)
    assert kafka_settings_for(settings, "execution") is settings.kafka
    assert client_security(settings.kafka) == {"security_protocol": "PLAINTEXT"}

    monkeypatch.setenv("TRADING_SECRET__KAFKA__EXECUTION", "kafka-pw")
    settings.kafka = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512")
    mine = kafka_settings_for(settings, "execution")
    options = client_security(mine)
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("execution", "kafka-pw")
    assert options["ssl_context"] is not None
    # The filled-in credentials never travel to child processes.
    assert "kafka-pw" not in str(to_env(settings.model_copy(update={"kafka": mine})))
    with pytest.raises(ValueError, match="credentials"):
        client_security(settings.kafka)  # SASL configured, no principal's credentials
