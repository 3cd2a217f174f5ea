"""The contracts as data: facts declared in proto/ custom options, read from
the generated descriptors once, at import.

* `METADATA`: the gRPC metadata / HTTP header keys (enum MetadataKey).
* `method_policy()`: retry and authorization policy of an RPC (MethodPolicy).
* `event_registry()`: every event type with its Kafka topic / NATS subject
  (EventRoute), the one registry of the platform.
* `services()`: every gRPC service declared in proto/.

Nothing here repeats a fact the protos already state.
"""

from __future__ import annotations

import importlib
import pkgutil
import string
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
from typing import Any

import trading
from google.protobuf import descriptor, descriptor_pool, message, message_factory
from trading.common.v1 import context_pb2, options_pb2

# The root package of our contracts in the descriptor pool.


@cache
def load_all_contracts() -> tuple[descriptor.FileDescriptor, ...]:
    """Import every generated `*_pb2` module under `trading` so the default
    descriptor pool knows all our files; return their descriptors."""
    files: list[descriptor.FileDescriptor] = []
    for info in pkgutil.walk_packages(trading.__path__, prefix="trading."):
        if info.name.endswith("_pb2"):
            files.append(importlib.import_module(info.name).DESCRIPTOR)
    return tuple(sorted(files, key=lambda f: f.name))


# --- metadata keys --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetadataKeys:
    """Header names of the request context, as declared in context.proto."""

    tenant_id: str
    subject: str
    correlation_id: str
    idempotency_key: str
    scopes: str
    roles: str
    context_token: str


def _metadata_keys() -> MetadataKeys:
    keys: dict[str, str] = {}
    for value in context_pb2.MetadataKey.DESCRIPTOR.values:
        key = value.GetOptions().Extensions[options_pb2.metadata_key]
        if key:
            keys[value.name.removeprefix("METADATA_KEY_").lower()] = key
    return MetadataKeys(**keys)


METADATA = _metadata_keys()


# --- services and method policies ----------------------------------------------------


def services() -> list[descriptor.ServiceDescriptor]:
    """All gRPC services declared in proto/, sorted by full name."""
    found = [svc for f in load_all_contracts() for svc in f.services_by_name.values()]
    return sorted(found, key=lambda s: s.full_name)


def full_method_name(method: descriptor.MethodDescriptor) -> str:
    """The gRPC path of a method, e.g. "/trading.execution.v1.ExecutionService/PlaceOrder"."""
    return f"/{method.containing_service.full_name}/{method.name}"


_DEFAULT_POLICY = options_pb2.MethodPolicy()


class ContractPolicyError(ValueError):
    """An RPC's policy is incomplete or inconsistent (see :func:`check_callers`)."""


def check_callers(method: descriptor.MethodDescriptor, policy: options_pb2.MethodPolicy) -> None:
    """Every RPC names who may call it, only known principals, and is routed by
    the gateway (has ``google.api.http``) exactly when the gateway may call it."""
    from google.api import annotations_pb2

    from runtime.security.principals import PRINCIPALS

    name = full_method_name(method)
    if not policy.callers:
        raise ContractPolicyError(f"{name}: (trading.common.v1.method).callers is empty")
    unknown = sorted(set(policy.callers) - set(PRINCIPALS))
    if unknown:
        raise ContractPolicyError(f"{name}: unknown caller(s) {unknown}; known: {list(PRINCIPALS)}")
    routed = method.GetOptions().HasExtension(annotations_pb2.http)
    if routed != ("gateway" in policy.callers):
        raise ContractPolicyError(
            f"{name}: has google.api.http = {routed} but gateway in callers = {not routed}"
        )


@cache
def _policies() -> MappingProxyType[str, options_pb2.MethodPolicy]:
    table: dict[str, options_pb2.MethodPolicy] = {}
    for svc in services():
        for method in svc.methods:
            policy = method.GetOptions().Extensions[options_pb2.method]
            check_callers(method, policy)
            table[full_method_name(method)] = policy
    return MappingProxyType(table)


def method_policy(full_method: str) -> options_pb2.MethodPolicy:
    """Policy of an RPC by gRPC path. Unknown methods (health, reflection, ...)
    get the default policy: not idempotent, so never retried blindly."""
    return _policies().get(full_method, _DEFAULT_POLICY)


# --- event registry ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventType:
    """One registered event type."""

    name: str  # full name of the payload message, e.g. "trading.execution.v1.OrderFilled"
    route: options_pb2.EventRoute
    message_class: type[message.Message]
    # Placeholders of the NATS subject template, e.g. ("tenant", "symbol");
    # "tenant" means the envelope's tenant, other names are payload fields.
    subject_fields: tuple[str, ...]


class UnknownEventTypeError(LookupError):
    """An event type that no proto declares."""


class EventRegistry:
    """Every event type of the platform and where it is published, built from
    the `(trading.common.v1.event)` options of the payload messages."""

    def __init__(self, files: tuple[descriptor.FileDescriptor, ...]) -> None:
        types: dict[str, EventType] = {}
        for file in files:
            for msg in _all_messages(file):
                options = msg.GetOptions()
                if not options.HasExtension(options_pb2.event):
                    continue
                route = options.Extensions[options_pb2.event]
                subject_fields = tuple(
                    field for _, field, _, _ in string.Formatter().parse(route.nats_subject) if field
                )
                types[msg.full_name] = EventType(
                    name=msg.full_name,
                    route=route,
                    message_class=message_factory.GetMessageClass(msg),
                    subject_fields=subject_fields,
                )
        self._types = MappingProxyType(types)

    def event_types(self) -> list[str]:
        return sorted(self._types)

    def get(self, event_type: str) -> EventType:
        try:
            return self._types[event_type]
        except KeyError:
            raise UnknownEventTypeError(event_type) from None

    def route(self, event_type: str) -> options_pb2.EventRoute:
        return self.get(event_type).route

    def message_class(self, event_type: str) -> type[message.Message]:
        return self.get(event_type).message_class

    def kafka_topics(self) -> list[str]:
        return sorted({t.route.kafka_topic for t in self._types.values() if t.route.kafka_topic})

    def nats_subject_templates(self) -> list[str]:
        return sorted({t.route.nats_subject for t in self._types.values() if t.route.nats_subject})

    def event_types_on_topic(self, topic: str) -> list[str]:
        return sorted(name for name, t in self._types.items() if t.route.kafka_topic == topic)

    def nats_subject(self, event_type: str, tenant_id: str, payload: message.Message) -> str:
        """The concrete NATS subject of one event: placeholders filled from the
        envelope's tenant and the payload's fields."""
        event = self.get(event_type)
        values = {name: _field_value(name, tenant_id, payload) for name in event.subject_fields}
        return event.route.nats_subject.format(**values)

    def partition_key(self, event_type: str, tenant_id: str, payload: message.Message) -> bytes | None:
        """The Kafka key of one event (from the route's partition_key field)."""
        field = self.get(event_type).route.partition_key
        return str(_field_value(field, tenant_id, payload)).encode() if field else None


def _field_value(name: str, tenant_id: str, payload: message.Message) -> Any:
    """Value of a routing placeholder: "tenant" is the envelope's tenant, any
    other name a payload field."""
    return tenant_id if name == "tenant" else getattr(payload, name)


def _all_messages(file: descriptor.FileDescriptor) -> list[descriptor.Descriptor]:
    out: list[descriptor.Descriptor] = []
    stack = list(file.message_types_by_name.values())
    while stack:
        msg = stack.pop()
        out.append(msg)
        stack.extend(msg.nested_types)
    return out


@cache
def event_registry() -> EventRegistry:
    """The platform's event registry (built once)."""
    return EventRegistry(load_all_contracts())


def default_pool() -> descriptor_pool.DescriptorPool:
    """The descriptor pool holding all contracts (loaded on first use)."""
    load_all_contracts()
    return descriptor_pool.Default()
