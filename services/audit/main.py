"""Wiring of the audit service: what it needs and what it serves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trading.audit.v1 import audit_service_pb2_grpc as pb_grpc

from runtime.resources import Resources
from runtime.service import ServiceSpec
from services.audit.api import AuditApi

AUDIT_SERVICE = "trading.audit.v1.AuditService"


async def build(resources: Resources) -> Mapping[str, Any]:
    return {AUDIT_SERVICE: AuditApi(resources)}


SPEC = ServiceSpec(
    name="audit",
    needs=("postgres", "kafka"),
    apis=[(AUDIT_SERVICE, pb_grpc.add_AuditServiceServicer_to_server)],
    build=build,
)
