"""Every platform service in-process (tests.support.services.running_service),
for gateway tests that walk all routes, each with its real wiring.

Also: access tokens with chosen claims, signed with identity's real current
key (read from its key store in PostgreSQL) or with a foreign key, and quotes
written where marketdata writes them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from redis.asyncio import Redis
from trading.common.v1 import decimal_pb2, market_pb2

from runtime.config import Settings
from services.analytics.main import make_spec as analytics_spec
from services.analytics.settings import AnalyticsSettings
from services.audit.main import make_spec as audit_spec
from services.audit.settings import AuditSettings
from services.decision.main import make_spec as decision_spec
from services.decision.settings import DecisionSettings, TrainingSettings
from services.execution.main import SPEC as EXECUTION
from services.features.main import make_spec as features_spec
from services.identity.adapters.postgres import PostgresSigningKeyStore
from services.identity.keys import key_encryption_key, public_jwk
from services.identity.main import make_spec as identity_spec
from services.identity.ports import SigningKey
from services.identity.settings import IdentitySettings
from services.marketdata.feeds import FeedSettings
from services.marketdata.main import make_spec as marketdata_spec
from services.notification.main import ConsumerNames
from services.notification.main import make_spec as notification_spec
from services.portfolio.main import make_spec as portfolio_spec
from tests.support.risk import risk_spec
from tests.support.services import running_service

OPERATOR_EMAIL = "operator@platform.local"
OPERATOR_PASSWORD = "operator-test-password"
# Cheap argon2 (tests log in often), an operator to create tenants with, and
# a short key reload so a rotation made through the key store is used at once.
FAST_IDENTITY = IdentitySettings(
    argon2_time_cost=1,
    argon2_memory_kib=1024,
    argon2_parallelism=1,
    platform_admin_email=OPERATOR_EMAIL,
    platform_admin_password=OPERATOR_PASSWORD,
    key_reload_s=0.2,
)


@asynccontextmanager
async def all_services(
    settings: Settings, model_dir: Path, identity: IdentitySettings = FAST_IDENTITY
) -> AsyncIterator[dict[str, str]]:
    """Every service of the platform on spare ports; yields their addresses."""
    suffix = uuid.uuid4().hex[:8]
    async with AsyncExitStack() as stack:
        addresses: dict[str, str] = {}

        async def start(name: str, spec: Any, routed: Settings = settings) -> None:
            addresses[name] = await stack.enter_async_context(running_service(spec, routed))

        await start("identity", identity_spec(identity))
        await start("risk", risk_spec())
        await start("marketdata", marketdata_spec(FeedSettings(feed="none")))
        await start("features", features_spec(group=f"features-test-{suffix}"))
        await start("portfolio", portfolio_spec(fills_group=f"portfolio.fills.test-{suffix}"))
        # Consumer names unique to this stack: a platform (./dev run) may share these servers.
        analytics = AnalyticsSettings(consumer_group=f"analytics.test-{suffix}")
        await start("analytics", analytics_spec(settings=analytics))
        names = ConsumerNames(
            orders_durable=f"notification-orders-{suffix}",
            events_group=f"notification.events.test-{suffix}",
            webhooks_durable=f"notification-webhooks-{suffix}",
        )
        await start("notification", notification_spec(names=names))
        await start("execution", EXECUTION, _routed(settings, addresses))
        audit = audit_spec(AuditSettings(consumer_group=f"audit.test-{suffix}"))
        await start("audit", audit, _routed(settings, addresses))  # replays against execution and portfolio
        await start(
            "decision",
            decision_spec(
                DecisionSettings(model_dir=model_dir, strategy_refresh_s=0.5),
                # Too few ticks to judge a model: promoted without the quality gate.
                TrainingSettings(ticks_per_symbol=500, symbols=["BTC-USD"], promote_without_gate=True),
                queue=f"decision-test-{suffix}",
            ),
            _routed(settings, addresses),
        )
        yield addresses


def _routed(settings: Settings, addresses: Mapping[str, str]) -> Settings:
    return settings.model_copy(update={"service_addresses": {**settings.service_addresses, **addresses}})


async def write_quote(redis: Redis, symbol: str, bid: str = "100", ask: str = "100.1") -> None:
    """A fresh last quote of `symbol` where marketdata keeps it (risk refuses stale ones)."""
    quote = market_pb2.Quote(
        symbol=symbol,
        bid_price=decimal_pb2.Decimal(value=bid),
        bid_size=decimal_pb2.Decimal(value="100"),
        ask_price=decimal_pb2.Decimal(value=ask),
        ask_size=decimal_pb2.Decimal(value="100"),
        sequence=time.time_ns(),
        source="gateway-test",
    )
    now = datetime.now(UTC)
    quote.exchange_time.FromDatetime(now)
    quote.receive_time.FromDatetime(now)
    await redis.set(f"md:quote:{symbol}", quote.SerializeToString(), ex=600)


class TokenMinter:
    """Access tokens with chosen claims, in the exact form identity issues them."""

    def __init__(self, store: PostgresSigningKeyStore, issuer: str, audience: str) -> None:
        self.store = store
        self.issuer = issuer
        self.audience = audience

    @classmethod
    def for_identity(cls, pool: asyncpg.Pool, settings: Settings, identity: IdentitySettings) -> TokenMinter:
        kek = key_encryption_key(settings, identity.key_encryption_key)
        return cls(PostgresSigningKeyStore(pool, kek), identity.issuer, identity.audience)

    async def current_key(self) -> SigningKey:
        key = await self.store.current()
        assert key is not None, "identity has no signing key yet"
        return key

    def claims(
        self,
        tenant: str,
        subject: str,
        scopes: Iterable[str],
        *,
        roles: Iterable[str] = ("TRADER",),
        ttl_s: float = 300,
        issued_at: float | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        now = int(time.time() if issued_at is None else issued_at)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "tenant": tenant,
            "roles": sorted(roles),
            "scopes": sorted(scopes),
            "iat": now,
            "exp": int(now + ttl_s),
            "jti": str(uuid.uuid4()),
        }
        claims.update(overrides)
        return claims

    @staticmethod
    def sign(claims: Mapping[str, Any], key: ec.EllipticCurvePrivateKey, kid: str) -> str:
        return jwt.encode(dict(claims), key, algorithm="ES256", headers={"kid": kid})

    async def sign_current(self, claims: Mapping[str, Any]) -> str:
        """Signed with identity's real current private key, naming its kid."""
        key = await self.current_key()
        return self.sign(claims, key.private_key, key.kid)


def foreign_key() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A P-256 key identity never saw, and its own (RFC 7638) kid."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key, public_jwk(key.public_key())["kid"]
