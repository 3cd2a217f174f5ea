"""Who may publish and subscribe what on NATS: one table, everything derived.

The platform's nats-server (started by ``tools.infra.LocalInfra``) has one
user per principal that uses NATS, named like the principal, with the
password ``get_secret(settings, "nats", principal)``, and exactly the rights
this module computes (docs/security.md shows the result):

- **publish** the NATS subjects of the events its domain owns, read from the
  event registry (the domain of an event is its proto package:
  ``trading.execution.v1.OrderStatusChanged`` -> execution); nothing else
  except what :class:`NatsRole` names: JetStream API subjects for the streams
  it declares and the durable consumers it runs, acks on those streams,
  dead letters under its consumers' names, and (operator) re-drives;
- **subscribe** the subjects of the event types it reads (``reads``) and its
  own reply inbox ``_INBOX.<principal>.>`` (clients connect with that inbox
  prefix, see ``runtime.messaging.nats.connect``): no connection can read
  another's JetStream replies or pulled messages.

Principals without an entry in :data:`NATS_ROLES` (identity, audit,
gateway) have no NATS user at all. Nobody connects anonymously.

No principal answers NATS requests (services talk gRPC; JetStream's replies
come from the server), so no user has ``allow_responses``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from runtime.contracts import EventRegistry, event_registry
from runtime.messaging.nats.streams import DLQ_STREAM, DLQ_SUBJECT_PREFIX, subject_filter
from runtime.security.principals import OPERATOR, PRINCIPALS

# The secret system of NATS passwords: get_secret(settings, NATS_SECRET, principal).
NATS_SECRET = "nats"

# Development and test only (never in a production config): a user with
# every right, for tests and the benchmark, which drive invented subjects and
# streams and observe every tenant. Added to the generated config only when
# ``settings.nats.test_harness`` is on under a development environment.
HARNESS = "harness"

# Streams. EXECUTION is runtime.messaging.nats.streams.platform_streams'
# stream of the execution domain; NOTIFICATION and its job subjects are
# services.notification.delivery's (tests check both stay equal).
EXECUTION_STREAM = "EXECUTION"
NOTIFICATION_STREAM = "NOTIFICATION"
NOTIFICATION_JOBS = "notification.webhooks.*.*"

# Event types named in the table.
TICK = "trading.marketdata.v1.Tick"
TICK_BATCH = "trading.marketdata.v1.TickBatch"
FEATURE_VECTOR = "trading.features.v1.FeatureVectorComputed"
ORDER_STATUS = "trading.execution.v1.OrderStatusChanged"
POSITION_CHANGED = "trading.portfolio.v1.PositionChanged"
PORTFOLIO_SNAPSHOT = "trading.portfolio.v1.PortfolioSnapshot"
CORRELATION_CLUSTERS = "trading.analytics.v1.CorrelationClustersComputed"
RISK_EVENTS = (
    "trading.risk.v1.LimitsChanged",
    "trading.risk.v1.OrderRiskRejected",
    "trading.risk.v1.RiskAlert",
    "trading.risk.v1.TradingStateChanged",
)

JS_API = "$JS.API"
JS_ACK = "$JS.ACK"
JS_FC = "$JS.FC"
INBOX = "_INBOX"


@dataclass(frozen=True, slots=True)
class NatsRole:
    """What one principal does on NATS beyond publishing its own events."""

    # Event types whose subjects it subscribes to (core subscriptions: fan-out
    # consumers and live gRPC streams).
    reads: tuple[str, ...] = ()
    # Subjects outside the event registry it publishes (notification's jobs).
    publishes: tuple[str, ...] = ()
    # Streams it runs durable pull consumers on (create, bind, fetch, ack).
    durables: tuple[str, ...] = ()
    # Streams it reads with ephemeral ordered push consumers from a chosen
    # start sequence (resumable live streams): look up the stream's bounds,
    # create (and on a gap re-create) the consumer, answer flow control,
    # delete it. Delivery goes to its own inbox; no acks (AckPolicy NONE).
    ordered_reads: tuple[str, ...] = ()
    # Streams it creates at start when missing (never changes them) ...
    declares: tuple[str, ...] = ()
    # ... and streams it owns: creates, and updates to its declared config.
    owns: tuple[str, ...] = ()
    # Consumer names whose dead letters it writes to the DLQ stream
    # (subject dlq.<name>; ">" where the names are configurable).
    dead_letters: tuple[str, ...] = ()
    # Removes DLQ entries (notification, once its own redrive has re-sent one).
    dlq_delete: bool = False
    # Reads DLQ entries (tradingctl deadletters list).
    dlq_read: bool = False
    # Event types and subjects it may send dead letters back to (re-drive).
    redrives: tuple[str, ...] = ()
    # Finds a stream by subject ($JS.API.STREAM.NAMES: stream names only).
    stream_lookup: bool = False
    # Answers NATS requests (publishes to the reply subject of what it receives).
    allow_responses: bool = False


# The table. Publishing its own domain's events is implied (from the registry).
NATS_ROLES: Mapping[str, NatsRole] = MappingProxyType(
    {
        # Ticks out; StreamQuotes subscribes to the requested symbols' ticks.
        "marketdata": NatsRole(reads=(TICK,)),
        # Tick batches in (NatsSubscriber "features-tickbatches"; not the
        # per-tick subjects), vectors out.
        "features": NatsRole(
            reads=(TICK_BATCH,), declares=(DLQ_STREAM,), dead_letters=("features-tickbatches",)
        ),
        # Risk events out; the correlation clusters in (NatsSubscriber
        # "risk-correlations", queue group; fills come from Kafka).
        "risk": NatsRole(
            reads=(CORRELATION_CLUSTERS,), declares=(DLQ_STREAM,), dead_letters=("risk-correlations",)
        ),
        # The correlation clusters out (its own events only).
        "analytics": NatsRole(),
        # Order updates out through its stream; ticks in (paper venue);
        # StreamOrderUpdates reads the caller's tenant's order subjects from
        # its stream with an ordered consumer (resumable by stream sequence).
        "execution": NatsRole(
            reads=(TICK, ORDER_STATUS), owns=(EXECUTION_STREAM,), ordered_reads=(EXECUTION_STREAM,)
        ),
        # Positions and snapshots out; StreamPortfolio wakes on its tenant's.
        "portfolio": NatsRole(reads=(POSITION_CHANGED, PORTFOLIO_SNAPSHOT)),
        # Vectors in (NatsSubscriber "decision-vectors", queue group), signals out.
        "decision": NatsRole(
            reads=(FEATURE_VECTOR,), declares=(DLQ_STREAM,), dead_letters=("decision-vectors",)
        ),
        # Durable consumers of order updates (webhook fan-out) and of its own
        # delivery jobs; Subscribe relays a tenant's orders, risk and position
        # events; the webhook dead letters (consumer names are configurable).
        "notification": NatsRole(
            reads=(ORDER_STATUS, POSITION_CHANGED, *RISK_EVENTS),
            publishes=(NOTIFICATION_JOBS,),
            durables=(EXECUTION_STREAM, NOTIFICATION_STREAM),
            declares=(EXECUTION_STREAM,),
            owns=(NOTIFICATION_STREAM, DLQ_STREAM),
            dead_letters=(">",),
            dlq_delete=True,
            stream_lookup=True,
        ),
        # tradingctl deadletters: list, re-drive (to the source subject,
        # through its stream where it came from one), delete.
        OPERATOR: NatsRole(
            dlq_read=True,
            dlq_delete=True,
            redrives=(TICK_BATCH, FEATURE_VECTOR, ORDER_STATUS, NOTIFICATION_JOBS, CORRELATION_CLUSTERS),
        ),
    }
)


@dataclass(frozen=True, slots=True)
class NatsPermissions:
    """The rights of one NATS user, as the server config states them."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool = False

    def config(self) -> dict[str, object]:
        out: dict[str, object] = {
            "publish": {"allow": list(self.publish)},
            "subscribe": {"allow": list(self.subscribe)},
        }
        if self.allow_responses:
            out["allow_responses"] = True
        return out


def owner_of(event_type: str) -> str:
    """The service owning an event type: its proto package's domain."""
    parts = event_type.split(".")
    if len(parts) < 4 or parts[0] != "trading":
        raise ValueError(f"not a platform event type: {event_type!r}")
    return parts[1]


def publish_form(template_or_subject: str) -> str:
    """A subject template as the wildcard subject it publishes on:
    "execution.orders.{tenant}.{symbol}" -> "execution.orders.*.*"."""
    return subject_filter(template_or_subject)


def subscribe_form(template_or_subject: str) -> str:
    """A subject template as a subscribe permission: its last token ``>``,
    so a subscription to "marketdata.ticks.>" is covered as well as to one
    symbol's or "marketdata.ticks.*"."""
    subject = subject_filter(template_or_subject)
    head, _, last = subject.rpartition(".")
    return f"{head}.>" if last == "*" else subject


def inbox_prefix(principal: str) -> str:
    """The reply-inbox prefix a principal's connections use."""
    return f"{INBOX}.{principal}"


def nats_users() -> tuple[str, ...]:
    """The principals that have a NATS user, in PRINCIPALS order."""
    return tuple(p for p in PRINCIPALS if p in NATS_ROLES)


def _subject_of(registry: EventRegistry, event_type_or_subject: str) -> str:
    if event_type_or_subject.startswith("trading."):
        template = registry.route(event_type_or_subject).nats_subject
        if not template:
            raise ValueError(f"{event_type_or_subject} is not published on NATS")
        return template
    return event_type_or_subject


def owned_event_subjects(principal: str, registry: EventRegistry | None = None) -> list[str]:
    """The subjects of the NATS events ``principal``'s domain owns."""
    registry = registry or event_registry()
    subjects = {
        publish_form(registry.route(t).nats_subject)
        for t in registry.event_types()
        if registry.route(t).nats_subject and owner_of(t) == principal
    }
    return sorted(subjects)


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def permissions(principal: str, registry: EventRegistry | None = None) -> NatsPermissions:
    """The NATS rights of ``principal`` (KeyError when it has no NATS user)."""
    registry = registry or event_registry()
    role = NATS_ROLES[principal]
    pub: list[str] = owned_event_subjects(principal, registry)
    pub += role.publishes
    for stream in role.declares:
        pub.append(f"{JS_API}.STREAM.CREATE.{stream}")
    for stream in role.owns:
        pub += [f"{JS_API}.STREAM.CREATE.{stream}", f"{JS_API}.STREAM.UPDATE.{stream}"]
    if role.stream_lookup:
        pub.append(f"{JS_API}.STREAM.NAMES")
    for stream in role.durables:
        pub += [
            f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.*",
            f"{JS_API}.CONSUMER.CREATE.{stream}.>",
            f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.*",
            f"{JS_ACK}.{stream}.>",
        ]
    for stream in role.ordered_reads:
        pub += [
            f"{JS_API}.STREAM.INFO.{stream}",
            f"{JS_API}.CONSUMER.CREATE.{stream}",
            f"{JS_API}.CONSUMER.CREATE.{stream}.>",
            f"{JS_API}.CONSUMER.DELETE.{stream}.*",
            f"{JS_FC}.{stream}.>",
        ]
    pub += [DLQ_SUBJECT_PREFIX + name for name in role.dead_letters]
    if role.dlq_read:
        pub.append(f"{JS_API}.STREAM.MSG.GET.{DLQ_STREAM}")
    if role.dlq_delete:
        pub.append(f"{JS_API}.STREAM.MSG.DELETE.{DLQ_STREAM}")
    pub += [publish_form(_subject_of(registry, r)) for r in role.redrives]
    sub = [f"{inbox_prefix(principal)}.>"]
    sub += [subscribe_form(_subject_of(registry, t)) for t in role.reads]
    return NatsPermissions(_unique(pub), _unique(sub), role.allow_responses)


HARNESS_PERMISSIONS = NatsPermissions(publish=(">",), subscribe=(">",), allow_responses=True)


def permission_table(registry: EventRegistry | None = None) -> dict[str, NatsPermissions]:
    """Every NATS user's rights (the harness excluded)."""
    registry = registry or event_registry()
    return {p: permissions(p, registry) for p in nats_users()}


# --------------------------------------------------------------------------- server config


def server_config(
    passwords: Mapping[str, str],
    *,
    host: str,
    port: int,
    store_dir: Path,
    pid_file: Path | None = None,
    harness_password: str | None = None,
    registry: EventRegistry | None = None,
) -> dict[str, object]:
    """The nats-server configuration (JSON, which nats-server reads as its
    config format): listen address, JetStream store, and one user per entry of
    :func:`permission_table`, with the password from ``passwords``. No
    ``no_auth_user``: a connection without valid credentials is refused."""
    table = permission_table(registry)
    missing = sorted(set(table) - set(passwords))
    if missing:
        raise ValueError(f"no NATS password for {', '.join(missing)}")
    users: list[dict[str, object]] = [
        {"user": p, "password": passwords[p], "permissions": perms.config()} for p, perms in table.items()
    ]
    if harness_password is not None:
        users.append(
            {"user": HARNESS, "password": harness_password, "permissions": HARNESS_PERMISSIONS.config()}
        )
    config: dict[str, object] = {
        "listen": f"{host}:{port}",
        "jetstream": {"store_dir": str(store_dir)},
        "authorization": {"users": users},
    }
    if pid_file is not None:
        config["pid_file"] = str(pid_file)
    return config


def render_server_config(config: Mapping[str, object]) -> str:
    """The config file's text: JSON (quoted strings keep ``$JS...`` literal)."""
    return json.dumps(config, indent=2) + "\n"


def covers(allowed: str, subject: str) -> bool:
    """True when permission subject ``allowed`` covers ``subject`` (itself
    possibly a wildcard subscription), as nats-server decides it."""
    a, s = allowed.split("."), subject.split(".")
    for i, token in enumerate(a):
        if token == ">":
            return len(s) > i
        if i >= len(s):
            return False
        if token == "*":
            if s[i] == ">":
                return False
            continue
        if token != s[i]:
            return False
    return len(a) == len(s)


def allowed(patterns: Iterable[str], subject: str) -> bool:
    """True when any of ``patterns`` covers ``subject``."""
    return any(covers(p, subject) for p in patterns)
