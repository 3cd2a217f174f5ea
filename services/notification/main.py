"""Wiring of the notification service: what it needs and what it serves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trading.notification.v1 import notification_service_pb2_grpc as pb_grpc

from runtime.resources import Resources
from runtime.service import ServiceSpec
from services.notification.api import NotificationApi

NOTIFICATION_SERVICE = "trading.notification.v1.NotificationService"


async def build(resources: Resources) -> Mapping[str, Any]:
    return {NOTIFICATION_SERVICE: NotificationApi(resources)}


SPEC = ServiceSpec(
    name="notification",
    needs=("postgres", "nats", "kafka"),
    apis=[(NOTIFICATION_SERVICE, pb_grpc.add_NotificationServiceServicer_to_server)],
    build=build,
)
