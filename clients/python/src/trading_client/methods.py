"""What the contract says about each RPC, read from the generated descriptors
(never a hard-coded list): whether it is public at the edge and mutating (its
``google.api.http`` rule is post/put/patch/delete), whether it needs a
credential (``trading.common.v1.method`` option ``public``), its arity."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, descriptor_pool
from trading.common.v1 import context_pb2, options_pb2

# Verbs whose calls change state: the edge deduplicates them by idempotency key.
MUTATING_VERBS = frozenset({"post", "put", "patch", "delete"})


def _metadata_key(value: int) -> str:
    option = context_pb2.MetadataKey.DESCRIPTOR.values_by_number[value].GetOptions()
    key: str = option.Extensions[options_pb2.metadata_key]
    return key


# Metadata keys as the contract declares them (trading.common.v1.MetadataKey).
IDEMPOTENCY_KEY = _metadata_key(context_pb2.METADATA_KEY_IDEMPOTENCY_KEY)
CORRELATION_ID_KEY = _metadata_key(context_pb2.METADATA_KEY_CORRELATION_ID)


@dataclass(frozen=True, slots=True)
class MethodInfo:
    """One RPC as the client sees it."""

    path: str  # "/trading.execution.v1.ExecutionService/PlaceOrder"
    http_verb: str | None  # of the primary google.api.http rule; None: not served at the edge
    mutating: bool  # gets an idempotency key, retried with the same key
    public: bool  # callable without a credential (Login, RefreshToken, GetJwks)
    server_streaming: bool
    client_streaming: bool


def _http_verb(method: descriptor.MethodDescriptor) -> str | None:
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return None
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    pattern: str | None = rule.WhichOneof("pattern")
    if pattern == "custom":
        kind: str = rule.custom.kind
        return kind.lower() or None
    return pattern


def describe(method: descriptor.MethodDescriptor) -> MethodInfo:
    """The facts of a method descriptor."""
    verb = _http_verb(method)
    options = method.GetOptions()
    public = options.HasExtension(options_pb2.method) and options.Extensions[options_pb2.method].public
    return MethodInfo(
        path=f"/{method.containing_service.full_name}/{method.name}",
        http_verb=verb,
        mutating=verb in MUTATING_VERBS,
        public=bool(public),
        server_streaming=method.server_streaming,
        client_streaming=method.client_streaming,
    )


@functools.cache
def method_info(path: str | bytes) -> MethodInfo:
    """The facts of the RPC at a gRPC path ("/pkg.Service/Method"). A method
    the descriptor pool does not know is treated as a read needing a credential."""
    name = path.decode() if isinstance(path, bytes) else path
    service, _, method = name.lstrip("/").rpartition("/")
    try:
        found = descriptor_pool.Default().FindMethodByName(f"{service}.{method}")
    except KeyError:
        return MethodInfo(
            name, None, mutating=False, public=False, server_streaming=False, client_streaming=False
        )
    return describe(found)


def edge_methods(service: descriptor.ServiceDescriptor) -> list[MethodInfo]:
    """The methods of ``service`` served at the public edge (with a google.api.http rule)."""
    return [info for info in map(describe, service.methods) if info.http_verb is not None]
