"""The one outbox shape: every service's migrations create (or converge to)
the DDL of runtime.outbox.outbox_table_sql, and rows are built consistently."""

from __future__ import annotations

from pathlib import Path

import pytest
from trading.execution.v1 import events_pb2

from runtime.messaging import new_envelope
from runtime.outbox import KAFKA, NATS, OutboxRelay, PostgresOutbox, outbox_row, outbox_table_sql
from runtime.security.postgres_roles import app_role

SERVICES = Path(__file__).parents[3] / "services"
# Services whose outbox is created from the shared DDL as it is.
CREATED_FROM_TEMPLATE = {
    "decision": "0002_outbox.sql",
    "portfolio": "0002_outbox.sql",
    "notification": "0002_outbox.sql",
}
# Services that had an outbox of their own before and converge to the shape in a later migration
# (the relay checks the live columns at start: runtime.outbox.check_outbox_shape).
CONVERGED = {"execution": "0003_shared_outbox.sql", "identity": "0003_shared_outbox.sql"}


@pytest.mark.parametrize("service", sorted(CREATED_FROM_TEMPLATE))
def test_the_outbox_migration_is_the_shared_ddl(service: str) -> None:
    sql = (SERVICES / service / "migrations" / CREATED_FROM_TEMPLATE[service]).read_text()
    assert sql == outbox_table_sql(app_role(service))


@pytest.mark.parametrize("service", sorted(CONVERGED))
def test_older_outboxes_converge_to_the_shared_constraint_and_indexes(service: str) -> None:
    sql = (SERVICES / service / "migrations" / CONVERGED[service]).read_text()
    assert "outbox_event_destination UNIQUE (event_id, destination)" in sql
    assert "CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL" in sql


def test_the_ddl_lets_only_the_services_login_role_see_every_tenant() -> None:
    sql = outbox_table_sql("trading_decision_app")
    assert 'CREATE POLICY service_role ON outbox TO "trading_decision_app"' in sql
    assert "FORCE ROW LEVEL SECURITY" in sql


def test_a_row_carries_the_envelope_and_defaults_its_key_to_the_tenant() -> None:
    envelope = new_envelope(
        events_pb2.OrderAccepted(order_id="o1"), tenant_id="acme", correlation_id="c", producer="execution"
    )
    row = outbox_row(envelope, KAFKA)
    assert (row.tenant_id, row.event_id, row.event_type) == ("acme", envelope.event_id, envelope.event_type)
    assert row.partition_key == "acme" and row.envelope == envelope.SerializeToString()
    assert outbox_row(envelope, NATS, partition_key="o1").partition_key == "o1"
    with pytest.raises(ValueError):
        outbox_row(envelope, "smtp")  # type: ignore[arg-type]


def test_the_retry_delay_backs_off_and_is_capped() -> None:
    relay = OutboxRelay(PostgresOutbox(None, "x"), retry_delay_s=0.1, max_retry_delay_s=1.0)
    assert relay.retry_delay() == 0.0
    delays = []
    for _ in range(6):
        relay._failed(RuntimeError("broker down"), KAFKA)
        delays.append(relay.retry_delay(KAFKA))
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert relay.last_error == "RuntimeError('broker down')"
    # Each lane backs off on its own: Kafka failing does not slow the NATS lane.
    assert relay.retry_delay(NATS) == 0.0
