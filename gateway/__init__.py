"""The public REST gateway (FastAPI): traders' only way in.

Routes are derived at start-up from the contracts' google.api.http annotations
(gateway.routes, gateway.templates) and transcoded to gRPC calls over pooled
channels (gateway.dispatch, gateway.transcode); errors are RFC 9457
problem+json from one gRPC->HTTP table (gateway.problems); callers are
authenticated with identity's JWTs or API keys and authorized by the
contract's method policies (gateway.auth); server-streaming RPCs are served as
SSE and WebSocket (gateway.streams); /openapi.json is generated from the same
descriptors (gateway.openapi). /healthz, /readyz and grpc.health as before.
"""
