"""The NATS permission table (runtime.security.nats_permissions) against the
event registry and the code: every event subject has exactly one publisher,
nobody publishes another domain's events, and every subject a service
subscribes to in its code is covered by its user's rights."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from runtime.config import SERVICE_NAMES
from runtime.contracts import event_registry
from runtime.messaging.nats.streams import DLQ_STREAM, DLQ_SUBJECT_PREFIX, platform_streams, subject_filter
from runtime.security.nats_permissions import (
    EXECUTION_STREAM,
    HARNESS,
    NATS_ROLES,
    NOTIFICATION_JOBS,
    NOTIFICATION_STREAM,
    allowed,
    covers,
    inbox_prefix,
    nats_users,
    owner_of,
    permission_table,
    permissions,
    publish_form,
    server_config,
)
from runtime.security.principals import OPERATOR, PRINCIPALS

ROOT = Path(__file__).resolve().parents[3]
REGISTRY = event_registry()
NATS_EVENTS = [t for t in REGISTRY.event_types() if REGISTRY.route(t).nats_subject]
SERVICES_WITH_USERS = [p for p in nats_users() if p != OPERATOR]


def event_subject(event_type: str) -> str:
    return publish_form(REGISTRY.route(event_type).nats_subject)


# ---------------------------------------------------------------------------- the matcher


@pytest.mark.parametrize(
    ("allowed_subject", "subject", "expected"),
    [
        ("a.b.*", "a.b.c", True),
        ("a.b.*", "a.b.*", True),
        ("a.b.*", "a.b.>", False),
        ("a.b.*", "a.b.c.d", False),
        ("a.b.>", "a.b.c.d", True),
        ("a.b.>", "a.b.*", True),
        ("a.b.>", "a.b.>", True),
        ("a.b.>", "a.b", False),
        ("a.*.>", "a.t.c", True),
        ("a.*.>", "a.>", False),
        ("a.b", "a.b", True),
        ("a.b", "a.c", False),
        (">", "x.y", True),
    ],
)
def test_covers_matches_nats_subject_rules(allowed_subject: str, subject: str, expected: bool) -> None:
    assert covers(allowed_subject, subject) is expected


# ---------------------------------------------------------------------------- publishers


def test_every_nats_event_is_owned_by_a_principal_with_a_nats_user() -> None:
    for event_type in NATS_EVENTS:
        owner = owner_of(event_type)
        assert owner in SERVICE_NAMES, event_type
        assert owner in NATS_ROLES, f"{owner} publishes {event_type} but has no NATS user"


@pytest.mark.parametrize("event_type", NATS_EVENTS)
def test_every_event_subject_has_exactly_one_publishing_service(event_type: str) -> None:
    subject = event_subject(event_type)
    publishers = [p for p in SERVICES_WITH_USERS if allowed(permissions(p).publish, subject)]
    assert publishers == [owner_of(event_type)]


@pytest.mark.parametrize("principal", SERVICES_WITH_USERS)
def test_a_service_publishes_no_subject_of_another_domain(principal: str) -> None:
    pub = permissions(principal).publish
    for event_type in NATS_EVENTS:
        if owner_of(event_type) != principal:
            concrete = REGISTRY.route(event_type).nats_subject.format(
                **{f: "x" for f in REGISTRY.get(event_type).subject_fields}
            )
            assert not allowed(pub, concrete), f"{principal} may publish {event_type} on {concrete}"


def test_the_operator_publishes_only_re_drive_targets_and_its_dlq_requests() -> None:
    """Re-driving sends a dead letter back to its source subject: the sources
    of every dead-lettering consumer, nothing else (docs: the operator is a
    trusted human credential)."""
    sources = {
        event_subject("trading.marketdata.v1.TickBatch"),  # features-tickbatches
        event_subject("trading.features.v1.FeatureVectorComputed"),  # decision-vectors
        event_subject("trading.execution.v1.OrderStatusChanged"),  # notification-orders (EXECUTION)
        NOTIFICATION_JOBS,  # notification-webhooks (NOTIFICATION)
        event_subject("trading.analytics.v1.CorrelationClustersComputed"),  # risk-correlations
    }
    dlq_api = {f"$JS.API.STREAM.MSG.GET.{DLQ_STREAM}", f"$JS.API.STREAM.MSG.DELETE.{DLQ_STREAM}"}
    perms = permissions(OPERATOR)
    assert set(perms.publish) == sources | dlq_api
    assert perms.subscribe == (f"{inbox_prefix(OPERATOR)}.>",)


def test_nobody_but_the_harness_has_blanket_rights() -> None:
    for principal, perms in permission_table().items():
        for subject in (*perms.publish, *perms.subscribe):
            assert subject not in (">", "$JS.API.>", "$JS.>", "_INBOX.>", "$SYS.>"), (principal, subject)
        assert not perms.allow_responses, f"{principal} answers no NATS requests"
        # Replies: only its own inbox.
        inboxes = [s for s in perms.subscribe if s.startswith("_INBOX")]
        assert inboxes == [f"{inbox_prefix(principal)}.>"]
        assert not any(s.startswith("_INBOX") for s in perms.publish)


# ---------------------------------------------------------------------------- who has a user


def test_nats_users_are_exactly_the_services_needing_nats_plus_the_operator() -> None:
    needing = set()
    for name in SERVICE_NAMES:
        if name == "gateway":
            continue  # serves REST; no ServiceSpec needs
        spec = importlib.import_module(f"services.{name}.main").SPEC
        if "nats" in spec.needs:
            needing.add(name)
    assert set(nats_users()) == needing | {OPERATOR}
    assert set(NATS_ROLES) <= set(PRINCIPALS)
    assert HARNESS not in PRINCIPALS
    assert "gateway" not in nats_users()


# ---------------------------------------------------------------------------- streams


def test_stream_names_are_the_platforms() -> None:
    from services.notification import delivery

    platform = {s.name: s for s in platform_streams(REGISTRY)}
    assert set(platform) == {EXECUTION_STREAM, DLQ_STREAM}
    assert platform[EXECUTION_STREAM].subjects == (event_subject("trading.execution.v1.OrderStatusChanged"),)
    assert delivery.JOBS_STREAM == NOTIFICATION_STREAM
    assert subject_filter(delivery.job_subject("{tenant}", "{webhook}")) == NOTIFICATION_JOBS
    assert NOTIFICATION_JOBS.startswith(delivery.JOBS_SUBJECT_PREFIX)
    assert DLQ_SUBJECT_PREFIX == "dlq."


def test_only_one_owner_per_stream() -> None:
    owners: dict[str, list[str]] = {}
    for principal, role in NATS_ROLES.items():
        for stream in role.owns:
            owners.setdefault(stream, []).append(principal)
    assert owners == {
        EXECUTION_STREAM: ["execution"],
        NOTIFICATION_STREAM: ["notification"],
        DLQ_STREAM: ["notification"],
    }


def test_whoever_publishes_into_a_stream_declares_it() -> None:
    # execution publishes OrderStatusChanged through EXECUTION; the
    # dead-lettering consumers write into DLQ; notification consumes EXECUTION.
    for principal, role in NATS_ROLES.items():
        declared = set(role.declares) | set(role.owns)
        if role.dead_letters:
            assert DLQ_STREAM in declared, principal
        for stream in role.durables:
            assert stream in declared, (principal, stream)
    assert EXECUTION_STREAM in NATS_ROLES["execution"].owns


# ---------------------------------------------------------------------------- subscriptions in code


def _subject_sites() -> dict[str, int]:
    """services/ and gateway/ files with NATS subscriptions, and how many call sites."""
    sites: dict[str, int] = {}
    pattern = re.compile(
        r"_nats\.subscribe\(|\bjs\.subscribe\(|NatsSubscriber\(|JetStreamSubscriber\(|\.pull_subscribe"
        r"|\blive_subscription\(|\bordered_subscription\(|\bnats\.connect\("
    )
    for base in ("services", "gateway"):
        for path in sorted((ROOT / base).rglob("*.py")):
            count = len(pattern.findall(path.read_text()))
            if count:
                sites[str(path.relative_to(ROOT))] = count
    return sites


def test_the_subscription_inventory_below_is_complete() -> None:
    """A new NATS subscription in a service must be added to
    test_every_subject_a_service_subscribes_in_code_is_covered (and most
    likely to the table)."""
    assert _subject_sites() == {
        "services/decision/main.py": 1,
        "services/execution/api.py": 1,
        "services/execution/venue.py": 1,
        "services/features/main.py": 1,
        "services/marketdata/api.py": 1,
        "services/notification/api.py": 1,
        "services/notification/main.py": 2,
        "services/portfolio/api.py": 1,
        "services/risk/consumers.py": 1,
    }


def test_every_subject_a_service_subscribes_in_code_is_covered() -> None:
    from services.decision.engine import VECTOR_SUBJECT_PREFIX, vector_subject
    from services.execution.api import ORDER_UPDATES_SUBJECT
    from services.execution.venue import TICKS_SUBJECT
    from services.features.consumer import tick_subjects
    from services.marketdata.api import tick_subject
    from services.notification.api import tenant_subjects
    from services.portfolio.api import update_subjects
    from services.risk.consumers import CLUSTERS_EVENT

    tenant, symbol = "tenant-a", "BTC-USD"
    in_code: dict[str, list[str]] = {
        "marketdata": [tick_subject(symbol)],
        "features": [*tick_subjects(), *tick_subjects(1, 3)],
        "execution": [
            TICKS_SUBJECT,
            ORDER_UPDATES_SUBJECT.format(tenant=tenant, symbol=symbol),
            ORDER_UPDATES_SUBJECT.format(tenant=tenant, symbol="*"),
        ],
        "portfolio": update_subjects(tenant),
        "decision": [VECTOR_SUBJECT_PREFIX + "*", vector_subject(symbol)],
        "notification": tenant_subjects(tenant),
        "risk": [subject_filter(REGISTRY.route(CLUSTERS_EVENT).nats_subject)],
    }
    for principal, subjects in in_code.items():
        sub = permissions(principal).subscribe
        for subject in subjects:
            assert allowed(sub, subject), f"{principal} subscribes {subject} in code but may not"


def test_durable_consumers_and_dead_letter_names_in_code_are_covered() -> None:
    from services.notification import delivery, domain
    from services.notification.main import ConsumerNames

    # features and decision dead-letter under fixed consumer names.
    features = (ROOT / "services/features/main.py").read_text()
    decision = (ROOT / "services/decision/main.py").read_text()
    assert 'name="features-tickbatches"' in features
    assert 'name="decision-vectors"' in decision
    assert allowed(permissions("features").publish, DLQ_SUBJECT_PREFIX + "features-tickbatches")
    assert allowed(permissions("decision").publish, DLQ_SUBJECT_PREFIX + "decision-vectors")
    # risk dead-letters the correlation clusters it could not store.
    from services.risk.consumers import CLUSTERS_NATS_NAME

    assert allowed(permissions("risk").publish, DLQ_SUBJECT_PREFIX + CLUSTERS_NATS_NAME)
    # notification: durables on EXECUTION (order updates) and NOTIFICATION (jobs).
    names = ConsumerNames()
    notification = permissions("notification").publish
    assert domain.ORDER_EVENT_TYPES == ("trading.execution.v1.OrderStatusChanged",)
    for stream, durable in (
        (EXECUTION_STREAM, names.orders_durable),
        (NOTIFICATION_STREAM, names.webhooks_durable),
    ):
        assert allowed(notification, f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}")
        assert allowed(notification, f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}")
        assert allowed(notification, f"$JS.ACK.{stream}.{durable}.1.2.3.4.5.6")
        assert allowed(notification, DLQ_SUBJECT_PREFIX + durable)
    assert allowed(notification, delivery.job_subject("tenant-a", "wh-1"))
    # execution reads its own stream with ephemeral ordered consumers
    # (StreamOrderUpdates, resumable): create, flow control, its bounds; no
    # durables, no pulls, no acks.
    execution = permissions("execution").publish
    assert allowed(execution, f"$JS.API.CONSUMER.CREATE.{EXECUTION_STREAM}")
    assert allowed(execution, f"$JS.API.CONSUMER.CREATE.{EXECUTION_STREAM}.x.execution.orders.t.*")
    assert allowed(execution, f"$JS.API.CONSUMER.DELETE.{EXECUTION_STREAM}.x")
    assert allowed(execution, f"$JS.API.STREAM.INFO.{EXECUTION_STREAM}")
    assert allowed(execution, f"$JS.FC.{EXECUTION_STREAM}.x.1.2")
    assert not allowed(execution, f"$JS.API.CONSUMER.DURABLE.CREATE.{EXECUTION_STREAM}.x")
    assert not allowed(execution, f"$JS.API.CONSUMER.MSG.NEXT.{EXECUTION_STREAM}.x")
    assert not allowed(execution, f"$JS.ACK.{EXECUTION_STREAM}.x.1.2.3.4.5.6")
    assert not allowed(execution, f"$JS.API.CONSUMER.CREATE.{NOTIFICATION_STREAM}")
    # Nobody else may read the order stream through JetStream.
    for principal in nats_users():
        if principal not in ("notification", "execution"):
            pub = permissions(principal).publish
            assert not allowed(pub, f"$JS.API.CONSUMER.CREATE.{EXECUTION_STREAM}")
            assert not allowed(pub, f"$JS.API.CONSUMER.DURABLE.CREATE.{EXECUTION_STREAM}.x")
            assert not allowed(pub, f"$JS.API.CONSUMER.CREATE.{EXECUTION_STREAM}.x.execution.orders.>")


# ---------------------------------------------------------------------------- the config


def test_server_config_has_one_user_per_principal_with_the_tables_rights() -> None:
    passwords = {p: f"pw-{p}" for p in nats_users()}
    config = server_config(passwords, host="127.0.0.1", port=14222, store_dir=Path("/tmp/js"))
    assert "no_auth_user" not in config
    auth = config["authorization"]
    assert isinstance(auth, dict)
    assert "no_auth_user" not in auth
    users = {u["user"]: u for u in auth["users"]}
    assert list(users) == list(nats_users())
    for principal, perms in permission_table().items():
        assert users[principal]["password"] == passwords[principal]
        assert users[principal]["permissions"] == perms.config()


def test_server_config_adds_the_harness_only_when_asked_and_needs_every_password() -> None:
    passwords = {p: f"pw-{p}" for p in nats_users()}
    with_harness = server_config(
        passwords, host="h", port=1, store_dir=Path("/x"), harness_password="pw-harness"
    )
    auth = with_harness["authorization"]
    assert isinstance(auth, dict)
    assert auth["users"][-1]["user"] == HARNESS
    with pytest.raises(ValueError, match="no NATS password for features"):
        server_config(
            {p: "x" for p in nats_users() if p != "features"}, host="h", port=1, store_dir=Path("/x")
        )
