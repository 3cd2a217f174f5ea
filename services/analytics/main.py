"""Wiring of the analytics service: what it needs and what it serves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trading.analytics.v1 import analytics_service_pb2_grpc as pb_grpc

from runtime.resources import Resources
from runtime.service import ServiceSpec
from services.analytics.api import AnalyticsApi

ANALYTICS_SERVICE = "trading.analytics.v1.AnalyticsService"


async def build(resources: Resources) -> Mapping[str, Any]:
    return {ANALYTICS_SERVICE: AnalyticsApi(resources)}


SPEC = ServiceSpec(
    name="analytics",
    needs=("clickhouse", "kafka"),
    apis=[(ANALYTICS_SERVICE, pb_grpc.add_AnalyticsServiceServicer_to_server)],
    build=build,
)
