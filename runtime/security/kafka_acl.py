"""Kafka ACLs per principal, generated from the event registry and one table of consumers.

tansu (the local broker) has no authorization at all, so these ACLs are for
a real Kafka (``authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer``,
``allow.everyone.if.no.acl.found=false``, SASL_SSL with SCRAM-SHA-512 users
named after the principals). Rules:

- A topic belongs to the domain of its events' proto package
  (``trading.execution.v1.OrderAccepted`` -> ``execution``); only that
  principal may WRITE it. Everyone who reads or writes a topic may DESCRIBE it.
- A consumer READs the topics of the event types it subscribes to
  (:data:`CONSUMERS`, checked against the services by a unit test) and its
  consumer group, and WRITEs those topics' dead-letter topics (``<topic>.dlq``).
- The operator (``tradingctl deadletters list|redrive``) READs every
  dead-letter topic (no group: it reads by partition) and WRITEs the source
  topics a redrive re-publishes to.
- Topic creation (CREATE on the cluster) is nobody's at run time: a deploy
  job creates the topics (``platform_topics``) before the services start;
  their start-up check then only DESCRIBEs.

``python -m runtime.security.kafka_acl --json`` prints the bindings,
``--commands`` the ``kafka-acls.sh`` command lines.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from runtime.contracts import EventRegistry, event_registry
from runtime.messaging.kafka.admin import dlq_topic
from runtime.security.principals import OPERATOR, check_principal


@dataclass(frozen=True)
class Consumer:
    """A Kafka consumer group of a service and the event types it reads."""

    principal: str
    group: str
    # Event type full names; None: every event type of the registry (audit).
    event_types: tuple[str, ...] | None


# The one table of consumers (a unit test compares it with the services' own constants).
CONSUMERS: tuple[Consumer, ...] = (
    Consumer("risk", "risk.fills", ("trading.execution.v1.OrderFillReported",)),
    Consumer("risk", "risk.correlations", ("trading.analytics.v1.CorrelationClustersComputed",)),
    Consumer("portfolio", "portfolio.fills", ("trading.execution.v1.OrderFillReported",)),
    Consumer(
        "analytics",
        "analytics.sink",
        (
            "trading.marketdata.v1.Tick",
            "trading.execution.v1.OrderFillReported",
            "trading.portfolio.v1.PositionChanged",
            "trading.portfolio.v1.PortfolioSnapshot",
            "trading.decision.v1.SignalGenerated",
        ),
    ),
    Consumer("audit", "audit.events", None),
    Consumer(
        "audit",
        "audit.lineage",
        (
            "trading.decision.v1.SignalGenerated",
            "trading.decision.v1.OrderIntentCreated",
            "trading.execution.v1.OrderAccepted",
            "trading.execution.v1.OrderRejected",
            "trading.execution.v1.OrderCancelRequested",
            "trading.execution.v1.OrderCanceled",
            "trading.execution.v1.OrderExpired",
            "trading.execution.v1.OrderFillReported",
        ),
    ),
    Consumer(
        "notification",
        "notification.events",
        (
            "trading.risk.v1.OrderRiskRejected",
            "trading.risk.v1.TradingStateChanged",
            "trading.risk.v1.LimitsChanged",
            "trading.risk.v1.RiskAlert",
            "trading.portfolio.v1.PositionChanged",
        ),
    ),
)


@dataclass(frozen=True, order=True)
class AclBinding:
    """One ALLOW rule, in Kafka's terms (``kafka-acls.sh`` / the Admin API's AclBinding)."""

    principal: str  # "User:<name>"
    resource_type: str  # TOPIC | GROUP
    name: str
    operation: str  # READ | WRITE | DESCRIBE
    pattern_type: str = "LITERAL"
    permission: str = "ALLOW"
    host: str = "*"


def topic_owner(registry: EventRegistry, topic: str) -> str:
    """The principal that may write `topic`: the domain of its events' package."""
    # Event type names are the payloads' full names: trading.<domain>.v<N>.<Message>.
    domains = {name.split(".")[1] for name in registry.event_types_on_topic(topic)}
    if len(domains) != 1:
        raise ValueError(f"topic {topic} carries events of several domains: {sorted(domains)}")
    return check_principal(domains.pop())


def consumed_topics(registry: EventRegistry, consumer: Consumer) -> list[str]:
    if consumer.event_types is None:
        return registry.kafka_topics()
    return sorted({registry.route(t).kafka_topic for t in consumer.event_types})


def bindings(registry: EventRegistry | None = None) -> list[AclBinding]:
    """Every ACL the platform needs on a real Kafka, sorted, without duplicates."""
    registry = registry or event_registry()
    out: set[AclBinding] = set()

    def allow(principal: str, resource_type: str, name: str, *operations: str) -> None:
        check_principal(principal)
        for op in operations:
            out.add(AclBinding(f"User:{principal}", resource_type, name, op))

    for topic in registry.kafka_topics():
        allow(topic_owner(registry, topic), "TOPIC", topic, "WRITE", "DESCRIBE")
        # Redrive: the operator re-publishes dead letters to their source topic.
        allow(OPERATOR, "TOPIC", topic, "WRITE", "DESCRIBE")
        allow(OPERATOR, "TOPIC", dlq_topic(topic), "READ", "DESCRIBE")
    for consumer in CONSUMERS:
        allow(consumer.principal, "GROUP", consumer.group, "READ")
        for topic in consumed_topics(registry, consumer):
            allow(consumer.principal, "TOPIC", topic, "READ", "DESCRIBE")
            allow(consumer.principal, "TOPIC", dlq_topic(topic), "WRITE", "DESCRIBE")
    return sorted(out)


def kafka_acls_commands(acls: Sequence[AclBinding]) -> list[str]:
    """``kafka-acls.sh --add`` command lines, one per principal, resource and set of operations."""
    grouped: dict[tuple[str, str, str], list[str]] = {}
    for b in acls:
        grouped.setdefault((b.principal, b.resource_type, b.name), []).append(b.operation)
    lines = []
    for (principal, resource_type, name), operations in sorted(grouped.items()):
        argv = [
            "kafka-acls.sh",
            "--bootstrap-server",
            "$BOOTSTRAP",
            "--command-config",
            "$ADMIN_CONFIG",
            "--add",
            "--allow-principal",
            principal,
        ]
        for op in sorted(operations):
            argv += ["--operation", op.capitalize()]
        argv += [f"--{resource_type.lower()}", name]
        lines.append(" ".join(a if a.startswith("$") else shlex.quote(a) for a in argv))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Kafka ACLs of the platform, from the event registry.")
    parser.add_argument("--commands", action="store_true", help="kafka-acls.sh command lines instead of JSON")
    args = parser.parse_args(argv)
    acls = bindings()
    if args.commands:
        print("\n".join(kafka_acls_commands(acls)))
    else:
        json.dump([asdict(b) for b in acls], sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
