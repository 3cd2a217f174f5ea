"""gRPC API of the identity service (trading.identity.v1.IdentityService).

Authorization: the scopes an RPC needs come from its `(trading.common.v1.method)`
policy in the contract and are checked here against the caller's ``x-scopes``
(set by the gateway from the verified token or API key), in addition to the
gateway's own check. Public RPCs (Login, RefreshToken, Logout, GetJwks) need
no caller.

Platform operators: administrators (scope ``admin``) of the platform tenant
(slug ``platform``, ``tenants.is_platform``) may create tenants and read every
tenant. Every other administrator manages only their own tenant: all user and
API key work runs in a tenant transaction of the caller's tenant (the
IdentityStore port; RLS in PostgreSQL), so another tenant's rows are
invisible (NOT_FOUND), not merely refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc
from google.protobuf import message as pb_message
from google.protobuf.timestamp_pb2 import Timestamp
from trading.identity.v1 import events_pb2 as ev
from trading.identity.v1 import identity_service_pb2 as pb

from runtime import paging
from runtime.context import RequestContext, current_context
from runtime.contracts import method_policy
from runtime.errors import FieldViolation, ServiceError, domain_error, invalid_argument
from runtime.messaging import uuid7
from runtime.security.delegations import PURPOSES
from runtime.security.tokens import ContextTokens
from services.identity import apikeys, domain
from services.identity.domain import ADMIN, ADMIN_SCOPE, Passwords, RoleScopes
from services.identity.keys import KeyRing
from services.identity.ports import (
    AlreadyExists,
    ApiKeyCache,
    ApiKeyRow,
    EventRelay,
    IdentityStore,
    IdentityTransaction,
    LoginFailures,
    TenantRow,
    UnknownTenant,
    UserRow,
)
from services.identity.settings import IdentitySettings

DOMAIN = "trading.identity"
IDENTITY_SERVICE = "trading.identity.v1.IdentityService"
LOGIN_FAILURES_PREFIX = "identity:login_failures:"

Ctx = grpc.aio.ServicerContext[Any, Any]
M = TypeVar("M", bound=pb_message.Message)


# ---- errors ------------------------------------------------------------------------------------


def _error(code: grpc.StatusCode, reason: str, message: str, **metadata: str) -> ServiceError:
    return ServiceError(domain_error(code, reason, DOMAIN, message, metadata))


def _bad_credentials() -> ServiceError:
    # One error for unknown tenant, unknown user, disabled user and wrong password.
    return _error(
        grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS", "invalid tenant, e-mail or password"
    )


def _not_found(kind: str, ident: str) -> ServiceError:
    return _error(grpc.StatusCode.NOT_FOUND, f"{kind.upper()}_NOT_FOUND", f"no {kind} {ident}", id=ident)


# ---- conversions -------------------------------------------------------------------------------


def _ts(dt: datetime | float) -> Timestamp:
    ts = Timestamp()
    if isinstance(dt, datetime):
        ts.FromDatetime(dt)
    else:
        ts.FromNanoseconds(int(dt * 1e9))
    return ts


def _role_names(roles: Iterable[pb.Role.ValueType]) -> list[str]:
    return sorted({pb.Role.Name(r).removeprefix("ROLE_") for r in roles})


def _role_values(names: Iterable[str]) -> list[pb.Role.ValueType]:
    return [pb.Role.Value(f"ROLE_{n}") for n in sorted(names)]


def _tenant(row: TenantRow) -> pb.Tenant:
    return pb.Tenant(
        tenant_id=row.tenant_id,
        slug=row.slug,
        display_name=row.display_name,
        status=pb.TenantStatus.Value(f"TENANT_STATUS_{row.status}"),
        created_at=_ts(row.created_at),
    )


def _user(row: UserRow) -> pb.User:
    return pb.User(
        user_id=row.user_id,
        tenant_id=row.tenant_id,
        email=row.email,
        display_name=row.display_name,
        roles=_role_values(row.roles),
        enabled=row.enabled,
        created_at=_ts(row.created_at),
    )


def _api_key(row: ApiKeyRow, last_used: float | None = None) -> pb.ApiKey:
    key = pb.ApiKey(
        api_key_id=row.api_key_id,
        owner_user_id=row.owner_user_id,
        name=row.name,
        key_prefix=row.key_prefix,
        scopes=list(row.scopes),
        created_at=_ts(row.created_at),
    )
    if row.expires_at is not None:
        key.expires_at.CopyFrom(_ts(row.expires_at))
    if row.revoked_at is not None:
        key.revoked_at.CopyFrom(_ts(row.revoked_at))
    if last_used is not None:
        key.last_used_at.CopyFrom(_ts(last_used))
    return key


def _page_cursor(token: str, name: str) -> str | None:
    try:
        value = paging.decode_token(token).get(name)
    except paging.InvalidPageTokenError as exc:
        raise ServiceError(invalid_argument([FieldViolation("page_token", str(exc))])) from None
    if value is not None and not isinstance(value, str):
        raise ServiceError(invalid_argument([FieldViolation("page_token", "not a token this server issued")]))
    return value


def _request_hash(request: pb_message.Message) -> bytes:
    """Fingerprint of a request for idempotency, without its passwords (a fast
    hash of a password must never be stored)."""
    clean = type(request)()
    clean.CopyFrom(request)
    for name in ("password", "admin_password"):
        if name in clean.DESCRIPTOR.fields_by_name:
            clean.ClearField(name)
    return hashlib.sha256(clean.SerializeToString(deterministic=True)).digest()


class IdentityApi:
    """The IdentityService servicer."""

    def __init__(
        self,
        store: IdentityStore,
        login_failures: LoginFailures,
        api_keys: ApiKeyCache,
        keys: KeyRing,
        relay: EventRelay,
        passwords: Passwords,
        role_scopes: RoleScopes,
        settings: IdentitySettings,
        *,
        platform_tenant_id: str,
        delegation_signer: ContextTokens,
    ) -> None:
        self._delegation_signer = delegation_signer
        self._store = store
        self._login_failures = login_failures
        self._api_keys = api_keys
        self._keys = keys
        self._relay = relay
        self._passwords = passwords
        self._role_scopes = role_scopes
        self._settings = settings
        self._platform_tenant_id = platform_tenant_id
        # Bounds argon2 work: a burst of logins queues briefly, then gets
        # RESOURCE_EXHAUSTED with Retry-After instead of piling up in the
        # thread pool until every caller's deadline passes (504s at the gateway).
        self._verifications = asyncio.Semaphore(
            settings.login_max_concurrent_verifications or os.cpu_count() or 1
        )

    # ---- authorization -------------------------------------------------------------------------

    @staticmethod
    def _caller(method: str) -> RequestContext:
        """The caller, checked against the scopes the contract declares for `method`."""
        ctx = current_context()
        policy = method_policy(f"/{IDENTITY_SERVICE}/{method}")
        if not ctx.tenant_id or not ctx.subject:
            raise _error(grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", "the call carries no caller")
        missing = sorted(set(policy.scopes) - ctx.scopes)
        if missing:
            raise _error(
                grpc.StatusCode.PERMISSION_DENIED,
                "MISSING_SCOPE",
                f"{method} needs scope {', '.join(missing)}",
                scopes=" ".join(missing),
            )
        return ctx

    def _is_operator(self, ctx: RequestContext) -> bool:
        return ctx.tenant_id == self._platform_tenant_id and ADMIN_SCOPE in ctx.scopes

    @staticmethod
    async def _replay(
        tx: IdentityTransaction, tenant: str, method: str, request: Any, cls: type[M]
    ) -> M | None:
        """The recorded response of an earlier call with the same Idempotency-Key."""
        key = current_context().idempotency_key
        if not key:
            return None
        found = await tx.idempotent_response(tenant, method, key)
        if found is None:
            return None
        if found[0] != _request_hash(request):
            raise _error(
                grpc.StatusCode.FAILED_PRECONDITION,
                "IDEMPOTENCY_KEY_REUSED",
                "the Idempotency-Key was already used for a different request",
            )
        return cls.FromString(found[1])

    @staticmethod
    async def _remember(
        tx: IdentityTransaction, tenant: str, method: str, request: Any, response: Any
    ) -> None:
        key = current_context().idempotency_key
        if key:
            await tx.save_idempotent_response(
                tenant, method, key, _request_hash(request), response.SerializeToString()
            )

    # ---- tokens --------------------------------------------------------------------------------

    async def _issue(
        self,
        tx: IdentityTransaction,
        tenant_id: str,
        user: UserRow,
        family_id: str,
        refresh_expires_at: datetime,
    ) -> pb.AuthTokens:
        """A new access token and the next refresh token of `family_id` (stored in `tx`)."""
        scopes = self._role_scopes.of_roles(user.roles)
        now = int(time.time())
        expires = now + self._settings.access_token_ttl_s
        claims = {
            "iss": self._settings.issuer,
            "aud": self._settings.audience,
            "sub": user.user_id,
            "tenant": tenant_id,
            "roles": sorted(user.roles),
            "scopes": sorted(scopes),
            "iat": now,
            "exp": expires,
            "jti": str(uuid.uuid4()),
        }
        access, _ = await self._keys.sign(claims)
        refresh = domain.new_refresh_token(tenant_id)
        await tx.insert_refresh(
            domain.token_hash(refresh), tenant_id, user.user_id, family_id, refresh_expires_at
        )
        return pb.AuthTokens(
            access_token=access,
            token_type="Bearer",
            access_token_expires_at=_ts(float(expires)),
            refresh_token=refresh,
            refresh_token_expires_at=_ts(refresh_expires_at),
            scopes=sorted(scopes),
        )

    async def _check_login_rate(self, limiter_key: str) -> None:
        failures, ttl = await self._login_failures.count(limiter_key)
        if failures >= self._settings.login_max_failures:
            raise ServiceError(
                domain_error(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "LOGIN_RATE_LIMITED",
                    DOMAIN,
                    "too many failed logins; try again later",
                    retry_after_s=float(max(ttl, 1)),
                )
            )

    async def _count_failure(self, limiter_key: str) -> None:
        await self._login_failures.add(limiter_key, window_s=self._settings.login_failure_window_s)

    @contextlib.asynccontextmanager
    async def _verification_slot(self) -> AsyncIterator[None]:
        """One of the bounded password verification slots, or RESOURCE_EXHAUSTED."""
        wait = self._settings.login_verification_wait_s
        remaining = current_context().time_remaining()
        if remaining is not None:
            wait = min(wait, remaining / 2)  # leave the caller time to hear the answer
        try:
            async with asyncio.timeout(max(wait, 0.0)):
                await self._verifications.acquire()
        except TimeoutError:
            raise ServiceError(
                domain_error(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "LOGIN_BUSY",
                    DOMAIN,
                    "too many logins in progress; try again shortly",
                    retry_after_s=1.0,
                )
            ) from None
        try:
            yield
        finally:
            self._verifications.release()

    async def Login(self, request: pb.LoginRequest, context: Ctx) -> pb.LoginResponse:
        email = domain.normalize_email(request.email)
        fingerprint = hashlib.sha256(f"{request.tenant_slug}\0{email}".encode()).hexdigest()[:32]
        limiter_key = LOGIN_FAILURES_PREFIX + fingerprint
        await self._check_login_rate(limiter_key)
        # RLS: the slug is all we know, so it is resolved by the login_tenant
        # definer function as the tenant role; the user is then read in a
        # tenant transaction of the tenant found.
        async with self._store.anonymous() as tx:
            found = await tx.login_tenant(request.tenant_slug)
        user: UserRow | None = None
        if found is not None and found[1] == "ACTIVE":
            async with self._store.tenant(found[0]) as tx:
                user = await tx.get_user_by_email(email)
        stored = user.password_hash if user is not None and user.enabled else None
        # argon2 takes tens of ms of CPU: off the event loop, a bounded number
        # at once. Unknown users verify against a dummy hash, so timing does
        # not tell them apart.
        async with self._verification_slot():
            if not await asyncio.to_thread(self._passwords.verify, stored, request.password):
                await self._count_failure(limiter_key)
                raise _bad_credentials()
            assert user is not None and found is not None
            new_hash = None
            if self._passwords.needs_rehash(user.password_hash):
                new_hash = await asyncio.to_thread(self._passwords.hash, request.password)
        await self._login_failures.clear(limiter_key)
        refresh_expires = datetime.now(UTC) + timedelta(seconds=self._settings.refresh_token_ttl_s)
        async with self._store.tenant(user.tenant_id) as tx:
            if new_hash is not None:
                await tx.set_password_hash(user.user_id, new_hash)
            tokens = await self._issue(tx, user.tenant_id, user, str(uuid7()), refresh_expires)
        return pb.LoginResponse(
            tokens=tokens, user_id=user.user_id, tenant_id=user.tenant_id, roles=_role_values(user.roles)
        )

    async def RefreshToken(self, request: pb.RefreshTokenRequest, context: Ctx) -> pb.RefreshTokenResponse:
        try:
            tenant = domain.refresh_token_tenant(request.refresh_token)
        except domain.MalformedRefreshToken:
            raise _error(
                grpc.StatusCode.UNAUTHENTICATED, "INVALID_REFRESH_TOKEN", "invalid refresh token"
            ) from None
        digest = domain.token_hash(request.refresh_token)
        failure = "INVALID_REFRESH_TOKEN"
        tokens: pb.AuthTokens | None = None
        async with self._store.tenant(tenant) as tx:
            row = await tx.claim_refresh(digest)
            if row is None:
                previous = await tx.find_refresh(digest)
                if previous is not None and previous.rotated_at is not None:
                    # A rotated token presented again: someone else holds a
                    # copy. Revoke the whole login session (committed below).
                    await tx.revoke_family(previous.family_id)
                    failure = "REFRESH_TOKEN_REUSED"
            else:
                user = await tx.get_user(row.user_id)
                tenant_row = await tx.get_tenant(tenant)
                if user is None or not user.enabled or tenant_row is None or tenant_row.status != "ACTIVE":
                    await tx.revoke_family(row.family_id)
                else:
                    tokens = await self._issue(tx, tenant, user, row.family_id, row.expires_at)
        if tokens is None:
            raise _error(grpc.StatusCode.UNAUTHENTICATED, failure, "invalid refresh token")
        return pb.RefreshTokenResponse(tokens=tokens)

    async def Logout(self, request: pb.LogoutRequest, context: Ctx) -> pb.LogoutResponse:
        try:
            tenant = domain.refresh_token_tenant(request.refresh_token)
        except domain.MalformedRefreshToken:
            return pb.LogoutResponse(revoked_count=0)
        async with self._store.tenant(tenant) as tx:
            row = await tx.find_refresh(domain.token_hash(request.refresh_token))
            if (
                row is None
                or row.rotated_at is not None
                or row.revoked_at is not None
                or row.expires_at <= datetime.now(UTC)
            ):
                return pb.LogoutResponse(revoked_count=0)
            if request.all_sessions:
                count = await tx.revoke_user_sessions(row.user_id)
            else:
                count = await tx.revoke_family(row.family_id)
        return pb.LogoutResponse(revoked_count=count)

    async def GetJwks(self, request: pb.GetJwksRequest, context: Ctx) -> pb.GetJwksResponse:
        return pb.GetJwksResponse(keys=[pb.Jwk(**jwk) for jwk in await self._keys.jwks()])

    # ---- API keys ------------------------------------------------------------------------------

    def _principal(self, row: ApiKeyRow, owner_roles: Iterable[str]) -> apikeys.ApiKeyPrincipal:
        roles = frozenset(owner_roles)
        return apikeys.ApiKeyPrincipal(
            api_key_id=row.api_key_id,
            tenant_id=row.tenant_id,
            subject=row.owner_user_id,
            # Never more than the owner's roles grant now.
            scopes=frozenset(row.scopes) & self._role_scopes.of_roles(roles),
            roles=roles,
            expires_at=None if row.expires_at is None else row.expires_at.timestamp(),
        )

    async def CreateApiKey(self, request: pb.CreateApiKeyRequest, context: Ctx) -> pb.CreateApiKeyResponse:
        ctx = self._caller("CreateApiKey")
        extra = sorted(set(request.scopes) - ctx.scopes)
        if extra:
            raise _error(
                grpc.StatusCode.PERMISSION_DENIED,
                "SCOPES_NOT_HELD",
                f"cannot grant scopes the caller does not hold: {', '.join(extra)}",
                scopes=" ".join(extra),
            )
        secret = apikeys.new_secret()
        now = datetime.now(UTC)
        async with self._store.tenant(ctx.tenant_id) as tx:
            replay = await self._replay(tx, ctx.tenant_id, "CreateApiKey", request, pb.CreateApiKeyResponse)
            if replay is not None:
                # The secret was shown once and is not kept: say so instead of
                # answering with a key the client cannot use.
                raise _error(
                    grpc.StatusCode.ALREADY_EXISTS,
                    "API_KEY_ALREADY_CREATED",
                    "this Idempotency-Key already created an API key; its secret is not shown again"
                    " (revoke it and create a new one if the secret was lost)",
                    api_key_id=replay.api_key.api_key_id,
                )
            owner = await tx.get_user(ctx.subject)
            if owner is None or not owner.enabled:
                raise _error(grpc.StatusCode.PERMISSION_DENIED, "NOT_A_USER", "only users can own API keys")
            row = ApiKeyRow(
                api_key_id=str(uuid7()),
                tenant_id=ctx.tenant_id,
                owner_user_id=owner.user_id,
                name=request.name,
                key_prefix=apikeys.key_prefix(secret),
                key_hash=domain.token_hash(secret),
                scopes=tuple(sorted(request.scopes)),
                created_at=now,
                expires_at=request.expires_at.ToDatetime(UTC) if request.HasField("expires_at") else None,
                revoked_at=None,
            )
            try:
                await tx.insert_api_key(row)
            except AlreadyExists as exc:
                raise _error(
                    grpc.StatusCode.ALREADY_EXISTS, "API_KEY_NAME_TAKEN", str(exc), name=row.name
                ) from None
            api_key = _api_key(row)
            await tx.record(
                ctx.tenant_id,
                ev.ApiKeyCreated(
                    api_key_id=row.api_key_id,
                    owner_user_id=row.owner_user_id,
                    name=row.name,
                    key_prefix=row.key_prefix,
                    scopes=list(row.scopes),
                    expires_at=api_key.expires_at if row.expires_at is not None else None,
                    created_at=api_key.created_at,
                    actor_id=ctx.subject,
                ),
            )
            await self._remember(
                tx, ctx.tenant_id, "CreateApiKey", request, pb.CreateApiKeyResponse(api_key=api_key)
            )
            # Inside the transaction: if Redis fails, nothing is committed.
            await self._api_keys.publish(row.key_hash, self._principal(row, owner.roles), now=time.time())
        self._relay.wake()
        return pb.CreateApiKeyResponse(api_key=api_key, secret=secret)

    async def RevokeApiKey(self, request: pb.RevokeApiKeyRequest, context: Ctx) -> pb.RevokeApiKeyResponse:
        ctx = self._caller("RevokeApiKey")
        async with self._store.tenant(ctx.tenant_id) as tx:
            row = await tx.get_api_key(request.api_key_id, for_update=True)
            # Other users' keys look absent unless the caller administers the tenant.
            if row is None or (row.owner_user_id != ctx.subject and ADMIN_SCOPE not in ctx.scopes):
                raise _not_found("api key", request.api_key_id)
            if row.revoked_at is None:
                now = datetime.now(UTC)
                await tx.revoke_api_key(row.api_key_id, now)
                row = replace(row, revoked_at=now)
                await tx.record(
                    ctx.tenant_id,
                    ev.ApiKeyRevoked(
                        api_key_id=row.api_key_id,
                        owner_user_id=row.owner_user_id,
                        revoked_at=_ts(now),
                        actor_id=ctx.subject,
                    ),
                )
                # Before the commit: a failed Redis delete leaves the key active everywhere.
                await self._api_keys.withdraw(row.key_hash)
                self._relay.wake()
        return pb.RevokeApiKeyResponse(api_key=_api_key(row))

    async def ListApiKeys(self, request: pb.ListApiKeysRequest, context: Ctx) -> pb.ListApiKeysResponse:
        ctx = self._caller("ListApiKeys")
        before = _page_cursor(request.page_token, "before")
        limit = paging.page_size(request.page_size)
        async with self._store.tenant(ctx.tenant_id) as tx:
            rows = await tx.list_api_keys(
                owner=None if ADMIN_SCOPE in ctx.scopes else ctx.subject,
                before=before,
                limit=limit + 1,
                include_revoked=request.include_revoked,
            )
        page, more = rows[:limit], len(rows) > limit
        used = await self._api_keys.last_used([r.api_key_id for r in page])
        return pb.ListApiKeysResponse(
            api_keys=[_api_key(r, u) for r, u in zip(page, used, strict=True)],
            next_page_token=paging.encode_token({"before": page[-1].api_key_id}) if more else "",
        )

    # ---- tenants -------------------------------------------------------------------------------

    async def CreateTenant(self, request: pb.CreateTenantRequest, context: Ctx) -> pb.CreateTenantResponse:
        ctx = self._caller("CreateTenant")
        if not self._is_operator(ctx):
            raise _error(
                grpc.StatusCode.PERMISSION_DENIED,
                "PLATFORM_OPERATOR_REQUIRED",
                "only platform operators can create tenants",
            )
        async with self._store.tenant(ctx.tenant_id) as tx:
            replay = await self._replay(tx, ctx.tenant_id, "CreateTenant", request, pb.CreateTenantResponse)
        if replay is not None:
            return replay
        password_hash = await asyncio.to_thread(self._passwords.hash, request.admin_password)
        now = datetime.now(UTC)
        tenant = TenantRow(str(uuid7()), request.slug, request.display_name, "ACTIVE", False, now)
        admin = UserRow(
            str(uuid7()), tenant.tenant_id, domain.normalize_email(request.admin_email), "Administrator",
            password_hash, (ADMIN,), True, now,
        )  # fmt: skip
        # The new tenant's rows are written under its own RLS context.
        async with self._store.tenant(tenant.tenant_id) as tx:
            try:
                await tx.insert_tenant(tenant)
            except AlreadyExists as exc:
                raise _error(
                    grpc.StatusCode.ALREADY_EXISTS, "TENANT_SLUG_TAKEN", str(exc), slug=tenant.slug
                ) from None
            await tx.insert_user(admin)
            await tx.record(tenant.tenant_id, _tenant_created(tenant, ctx.subject))
            await tx.record(tenant.tenant_id, _user_created(admin, ctx.subject))
        response = pb.CreateTenantResponse(tenant=_tenant(tenant), admin_user=_user(admin))
        async with self._store.tenant(ctx.tenant_id) as tx:
            await self._remember(tx, ctx.tenant_id, "CreateTenant", request, response)
        self._relay.wake()
        return response

    async def IssueDelegation(
        self, request: pb.IssueDelegationRequest, context: Ctx
    ) -> pb.IssueDelegationResponse:
        # Callers are checked by the contract (decision, audit); the purpose
        # table says which of them may hold which delegation.
        caller = current_context().caller
        purpose = PURPOSES.get(request.purpose)
        if purpose is None:
            raise _error(
                grpc.StatusCode.INVALID_ARGUMENT,
                "UNKNOWN_PURPOSE",
                f"unknown delegation purpose {request.purpose!r}; known: {', '.join(sorted(PURPOSES))}",
            )
        if purpose.holder != caller:
            raise _error(
                grpc.StatusCode.PERMISSION_DENIED,
                "DELEGATION_NOT_ALLOWED",
                f"{caller or 'this caller'} may not hold {request.purpose} delegations",
            )
        async with self._store.platform() as tx:
            row = await tx.get_tenant(request.tenant_id)
        if row is None or row.status != "ACTIVE":
            raise _not_found("tenant", request.tenant_id)
        token, expires = self._delegation_signer.sign_delegation(
            caller, request.tenant_id, request.purpose, purpose.scopes, purpose.audiences, purpose.ttl_s
        )
        response = pb.IssueDelegationResponse(
            delegation=token, scopes=sorted(purpose.scopes), audiences=sorted(purpose.audiences)
        )
        response.expire_time.FromSeconds(int(expires))
        return response

    async def GetTenant(self, request: pb.GetTenantRequest, context: Ctx) -> pb.GetTenantResponse:
        ctx = self._caller("GetTenant")
        if self._is_operator(ctx):
            async with self._store.platform() as tx:
                row = await tx.get_tenant(request.tenant_id)
        else:
            async with self._store.tenant(ctx.tenant_id) as tx:
                row = await tx.get_tenant(request.tenant_id)
        if row is None:
            raise _not_found("tenant", request.tenant_id)
        return pb.GetTenantResponse(tenant=_tenant(row))

    async def ListTenants(self, request: pb.ListTenantsRequest, context: Ctx) -> pb.ListTenantsResponse:
        ctx = self._caller("ListTenants")
        after = _page_cursor(request.page_token, "after") or ""
        limit = paging.page_size(request.page_size)
        if self._is_operator(ctx):
            async with self._store.platform() as tx:
                rows = await tx.list_tenants(after=after, limit=limit + 1)
        else:
            # RLS leaves exactly the caller's own tenant.
            async with self._store.tenant(ctx.tenant_id) as tx:
                rows = await tx.list_tenants(after=after, limit=limit + 1)
        page, more = rows[:limit], len(rows) > limit
        return pb.ListTenantsResponse(
            tenants=[_tenant(r) for r in page],
            next_page_token=paging.encode_token({"after": page[-1].tenant_id}) if more else "",
        )

    # ---- users ---------------------------------------------------------------------------------

    async def CreateUser(self, request: pb.CreateUserRequest, context: Ctx) -> pb.CreateUserResponse:
        ctx = self._caller("CreateUser")
        async with self._store.tenant(ctx.tenant_id) as tx:
            replay = await self._replay(tx, ctx.tenant_id, "CreateUser", request, pb.CreateUserResponse)
        if replay is not None:
            return replay
        password_hash = await asyncio.to_thread(self._passwords.hash, request.password)
        row = UserRow(
            str(uuid7()), ctx.tenant_id, domain.normalize_email(request.email), request.display_name,
            password_hash, tuple(_role_names(request.roles)), True, datetime.now(UTC),
        )  # fmt: skip
        response = pb.CreateUserResponse(user=_user(row))
        async with self._store.tenant(ctx.tenant_id) as tx:
            try:
                await tx.insert_user(row)
            except AlreadyExists as exc:
                raise _error(grpc.StatusCode.ALREADY_EXISTS, "USER_EMAIL_TAKEN", str(exc)) from None
            except UnknownTenant as exc:
                raise _error(grpc.StatusCode.FAILED_PRECONDITION, "TENANT_NOT_FOUND", str(exc)) from None
            await tx.record(ctx.tenant_id, _user_created(row, ctx.subject))
            await self._remember(tx, ctx.tenant_id, "CreateUser", request, response)
        self._relay.wake()
        return response

    async def GetUser(self, request: pb.GetUserRequest, context: Ctx) -> pb.GetUserResponse:
        ctx = self._caller("GetUser")
        async with self._store.tenant(ctx.tenant_id) as tx:
            row = await tx.get_user(request.user_id)
        if row is None:
            raise _not_found("user", request.user_id)
        return pb.GetUserResponse(user=_user(row))

    async def ListUsers(self, request: pb.ListUsersRequest, context: Ctx) -> pb.ListUsersResponse:
        ctx = self._caller("ListUsers")
        after = _page_cursor(request.page_token, "after") or ""
        limit = paging.page_size(request.page_size)
        async with self._store.tenant(ctx.tenant_id) as tx:
            rows = await tx.list_users(after=after, limit=limit + 1)
        page, more = rows[:limit], len(rows) > limit
        return pb.ListUsersResponse(
            users=[_user(r) for r in page],
            next_page_token=paging.encode_token({"after": page[-1].user_id}) if more else "",
        )

    async def UpdateUserRoles(
        self, request: pb.UpdateUserRolesRequest, context: Ctx
    ) -> pb.UpdateUserRolesResponse:
        ctx = self._caller("UpdateUserRoles")
        roles = tuple(_role_names(request.roles))
        async with self._store.tenant(ctx.tenant_id) as tx:
            admins = await tx.lock_admins()
            user = await tx.get_user(request.user_id, for_update=True)
            if user is None:
                raise _not_found("user", request.user_id)
            if ADMIN not in roles and admins == [user.user_id]:
                raise _error(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "LAST_ADMIN",
                    "cannot remove the ADMIN role from the tenant's last administrator",
                )
            updated = replace(user, roles=roles)
            if set(roles) != set(user.roles):
                await tx.set_roles(user.user_id, roles)
                await tx.record(
                    ctx.tenant_id,
                    ev.UserRolesChanged(
                        user_id=user.user_id,
                        previous_roles=_role_values(user.roles),
                        roles=_role_values(roles),
                        changed_at=_ts(datetime.now(UTC)),
                        actor_id=ctx.subject,
                    ),
                )
                # API keys act as their owner: narrow (or widen) them now.
                now = time.time()
                for key in await tx.active_api_keys(owner=user.user_id):
                    await self._api_keys.publish(key.key_hash, self._principal(key, roles), now=now)
                self._relay.wake()
        return pb.UpdateUserRolesResponse(user=_user(updated))


def _tenant_created(row: TenantRow, actor: str) -> ev.TenantCreated:
    return ev.TenantCreated(
        tenant_id=row.tenant_id,
        slug=row.slug,
        display_name=row.display_name,
        created_at=_ts(row.created_at),
        actor_id=actor,
    )


def _user_created(row: UserRow, actor: str) -> ev.UserCreated:
    return ev.UserCreated(
        user_id=row.user_id,
        email=row.email,
        display_name=row.display_name,
        roles=_role_values(row.roles),
        created_at=_ts(row.created_at),
        actor_id=actor,
    )
