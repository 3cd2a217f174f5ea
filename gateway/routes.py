"""The REST route table, derived at start-up from the contracts' google.api.http
annotations (and their additional_bindings). No route is written by hand:
annotate an RPC in proto/, regenerate, and the gateway serves it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, message, message_factory
from trading.common.v1 import options_pb2

from gateway.problems import Problem, bad_request, violation
from gateway.templates import PathTemplate, parse_template
from gateway.transcode import FD, FieldDesc, merge_json, resolve_path, set_from_text
from runtime.contracts import full_method_name, method_policy, services

HTTP_METHODS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True, slots=True)
class Route:
    """One HTTP binding of one RPC."""

    http_method: str  # upper case
    template: PathTemplate
    body: str  # "" (no body), "*" or a top-level field name
    response_body: str
    method: descriptor.MethodDescriptor
    request_class: type[message.Message]
    response_class: type[message.Message]
    grpc_path: str  # "/trading.execution.v1.ExecutionService/PlaceOrder"
    target: str  # service process, e.g. "execution"
    policy: options_pb2.MethodPolicy
    binding: int  # 0: the primary binding; 1..n additional_bindings

    @property
    def streaming(self) -> bool:
        return self.method.server_streaming

    @property
    def mutating(self) -> bool:
        return self.http_method in ("POST", "PUT", "PATCH", "DELETE")

    @property
    def operation_id(self) -> str:
        svc = self.method.containing_service.name
        suffix = f"_{self.binding}" if self.binding else ""
        return f"{svc}_{self.method.name}{suffix}"

    def query_fields(self) -> list[FieldDesc]:
        """Top-level request fields a client may send in the query string."""
        if self.body == "*":
            return []
        # Not the path's fields, nor the other members of their oneofs (the
        # server refuses those in the query: they would replace the path's).
        bound = {v.field_path.split(".")[0] for v in self.template.variables} | self.path_bound_fields()
        return [
            f for f in self.request_class.DESCRIPTOR.fields if f.name not in bound and f.name != self.body
        ]

    def build_request(
        self, path_values: Mapping[str, str], query: Sequence[tuple[str, str]], body: object
    ) -> message.Message:
        """The request message: body, then query parameters, then path variables.

        Path variables win, always: a query parameter naming a bound field, or
        another member of a bound field's oneof (which would clear it: GET
        /v1/orders/{order_id}?client_order_id=...), is refused, and the path is
        applied last so nothing set before can replace it."""
        request = self.request_class()
        if self.body == "*":
            self._refuse_path_fields_in(body)
            merge_json(body, request)
        elif self.body:
            field = self.request_class.DESCRIPTOR.fields_by_name[self.body]
            merge_json({field.json_name: body}, request)
        if query:
            if self.body == "*":
                names = sorted({k for k, _ in query})
                raise bad_request(
                    "this route takes its input from the body, not the query string",
                    [violation(n, "unexpected query parameter", "unknown_field") for n in names],
                )
            grouped: dict[str, list[str]] = {}
            for key, value in query:
                grouped.setdefault(key, []).append(value)
            bound = self.bound_paths()
            for key, values in grouped.items():
                path = resolve_path(self.request_class.DESCRIPTOR, key)
                canonical = ".".join(f.name for f in path) if path else key
                if any(canonical == b or canonical.startswith(b + ".") for b in bound):
                    raise bad_request(
                        f"query parameter {key!r} repeats a path or body field",
                        [violation(canonical, "already bound by the path or the body", "duplicate")],
                    )
                set_from_text(request, key, values, "query")
        for field_path, value in path_values.items():
            set_from_text(request, field_path, [value], "path")
        return request

    def path_bound_fields(self) -> frozenset[str]:
        """Top-level fields the path binds, with the other members of their oneofs."""
        return frozenset(p for p in self.bound_paths() - {self.body} if "." not in p)

    def _refuse_path_fields_in(self, body: object) -> None:
        """A body member the path binds (or one in its oneof) would be
        overruled by the path or would clear it: refused, as in the query."""
        bound = self.path_bound_fields()
        if not bound or not isinstance(body, dict):
            return
        fields = self.request_class.DESCRIPTOR.fields
        by_key = {f.json_name: f.name for f in fields} | {f.name: f.name for f in fields}
        repeated = sorted(k for k in body if by_key.get(k) in bound)
        if repeated:
            raise bad_request(
                f"body member {repeated[0]!r} repeats a path parameter",
                [
                    violation(by_key[k], "already bound by the path", "duplicate", pointer=f"/{k}")
                    for k in repeated
                ],
            )

    def bound_paths(self) -> set[str]:
        """Field paths the path and the body own: the bound fields and the
        other members of their (real) oneofs (the OpenAPI body schemas leave
        the path's out)."""
        bound = {v.field_path for v in self.template.variables} | ({self.body} if self.body else set())
        for var in self.template.variables:
            fields = resolve_path(self.request_class.DESCRIPTOR, var.field_path) or []
            if not fields:
                continue
            oneof = fields[-1].containing_oneof
            if oneof is not None and not oneof.name.startswith("_"):  # "_x": proto3 optional
                prefix = ".".join(f.name for f in fields[:-1])
                bound.update(f"{prefix}.{f.name}" if prefix else f.name for f in oneof.fields)
        return bound

    def response_message(self, reply: message.Message) -> message.Message:
        if self.response_body:
            sub: message.Message = getattr(reply, self.response_body)
            return sub
        return reply


def service_target(service: descriptor.ServiceDescriptor) -> str:
    """The process serving a gRPC service: the domain of its package
    ("trading.execution.v1" -> "execution")."""
    parts = service.full_name.split(".")
    if len(parts) < 3 or parts[0] != "trading":
        raise ValueError(f"not a platform service: {service.full_name}")
    return parts[1]


def _bindings(rule: http_pb2.HttpRule) -> list[http_pb2.HttpRule]:
    return [rule, *rule.additional_bindings]


def _validate_binding(route: Route) -> None:
    req = route.request_class.DESCRIPTOR
    for var in route.template.variables:
        path = resolve_path(req, var.field_path)
        if path is None:
            raise ValueError(f"{route.grpc_path}: path variable {var.field_path!r} is not a request field")
        if path[-1].is_repeated or path[-1].type == FD.TYPE_MESSAGE:
            raise ValueError(f"{route.grpc_path}: path variable {var.field_path!r} must be a singular scalar")
    if route.body not in ("", "*") and route.body not in req.fields_by_name:
        raise ValueError(f"{route.grpc_path}: body field {route.body!r} is not a request field")
    if route.http_method == "GET" and route.body:
        raise ValueError(f"{route.grpc_path}: GET bindings cannot have a body")


def build_routes(service_descriptors: Iterable[descriptor.ServiceDescriptor] | None = None) -> list[Route]:
    """Every HTTP binding of every annotated RPC, most specific template first."""
    routes: list[Route] = []
    for svc in services() if service_descriptors is None else service_descriptors:
        target = service_target(svc)
        for method in svc.methods:
            options = method.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue
            if method.client_streaming:
                continue  # no REST form for client streams
            rule = options.Extensions[annotations_pb2.http]
            for index, binding in enumerate(_bindings(rule)):
                kind = binding.WhichOneof("pattern")
                if kind is None:
                    continue
                if kind == "custom":
                    verb, path = binding.custom.kind.upper(), binding.custom.path
                else:
                    verb, path = kind.upper(), getattr(binding, kind)
                route = Route(
                    http_method=verb,
                    template=parse_template(path),
                    body=binding.body,
                    response_body=binding.response_body,
                    method=method,
                    request_class=message_factory.GetMessageClass(method.input_type),
                    response_class=message_factory.GetMessageClass(method.output_type),
                    grpc_path=full_method_name(method),
                    target=target,
                    policy=method_policy(full_method_name(method)),
                    binding=index,
                )
                _validate_binding(route)
                routes.append(route)
    routes.sort(key=lambda r: r.template.specificity, reverse=True)
    return routes


def _literal_prefix(template: str) -> str:
    """The text of a template before its first variable or wildcard segment."""
    cut = len(template)
    for mark in ("{", "*"):
        at = template.find(mark)
        if at != -1:
            cut = min(cut, at)
    return template[:cut]


class RouteTable:
    """Finds the route of a request (404 / 405 as problems)."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = list(routes)
        self._seen: set[tuple[str, str]] = set()
        for r in self.routes:
            key = (r.http_method, r.template.regex.pattern)
            if key in self._seen:
                raise ValueError(f"two RPCs bind {r.http_method} {r.template.template}")
            self._seen.add(key)
        self._prefixed = [(r, _literal_prefix(r.template.template)) for r in self.routes]

    def match(self, http_method: str, raw_path: str) -> tuple[Route, dict[str, str]]:
        # Each template's regex runs only when the path starts with the
        # template's literal prefix (what comes before its first variable or
        # wildcard), which any path its regex matches does; the order is kept.
        matching = [
            (r, v)
            for r, prefix in self._prefixed
            if raw_path.startswith(prefix) and (v := r.template.match(raw_path)) is not None
        ]
        # A custom verb wins (google.api.http): /v1/orders/{id}:cancel is the
        # cancel route's, never GetOrder's with "{id}:cancel" as the id, so a
        # GET there is 405 (Allow: POST), not a lookup of a strange id.
        verbs = {r.template.verb for r, _ in matching if r.template.verb}
        if verbs:
            matching = [(r, v) for r, v in matching if r.template.verb in verbs]
        allowed: set[str] = set()
        for route, values in matching:
            if route.http_method == http_method or (http_method == "HEAD" and route.http_method == "GET"):
                return route, values
            allowed.add(route.http_method)
        if allowed:
            if "GET" in allowed:
                allowed.add("HEAD")  # answered as GET without a body (hypercorn drops it)
            raise Problem(
                grpc.StatusCode.UNIMPLEMENTED,
                f"method {http_method} not allowed here; allowed: {', '.join(sorted(allowed))}",
                status=405,
                reason="METHOD_NOT_ALLOWED",
                headers={"Allow": ", ".join(sorted(allowed))},
            )
        raise Problem(grpc.StatusCode.NOT_FOUND, f"no route for {raw_path}", reason="ROUTE_NOT_FOUND")
