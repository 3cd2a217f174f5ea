"""Signed request context: who a call acts for, proven, bound to one callee.

Every internal call carries a *context token* (metadata ``x-context-token``):
a JWS (ES256) signed with the calling service's own TLS key, its
certificate in the ``x5c`` header (chained to the platform CA), with

    iss  the caller (must equal the mTLS peer)   aud  the callee (one service)
    iat, exp (at most security.context_token_ttl_s), jti
    ten, sub, scp, rol   tenant, subject, scopes, roles (absent: no tenant)
    grt  the caller's authority for that tenant context:
         "edge"  the caller is an edge principal (gateway, operator CLI) that
                 verified the user itself (JWT or API key);
         "chain" ``prt`` holds the token the caller received for the call it is
                 handling (addressed to the caller); tenant and subject equal,
                 scopes a subset, expiry no later;
         "dlg"   ``dlg`` holds a delegation identity signed for this caller,
                 tenant and purpose, listing the callee among its audiences;
         "svc"   no tenant: the caller acts as itself.

The callee verifies signature, certificate chain, audience, expiry and the
grant (recursively for chains), and only then builds the request context;
bare ``x-tenant-id``/``x-scopes`` metadata is never read. A token made for
execution is refused by risk (audience), and one replayed by another service
is refused because its issuer is not the peer.

Asymmetric checks cost ~0.1-0.3 ms on these machines, so both sides cache:
the caller reuses a token for the same callee and context until half its
lifetime is gone, the callee remembers tokens it has verified until they
expire. In the steady state a hop verifies with one dict lookup.

PyJWT does the JWS encoding and checks; certificate chain checks are
``cryptography``'s. Nothing here is hand-rolled crypto.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from runtime.context import RequestContext
from runtime.security.pki import principal_of_spiffe_id
from runtime.security.tls import TlsIdentity

CONTEXT_TYPE = "trading-ctx+jwt"
DELEGATION_TYPE = "trading-dlg+jwt"
# Principals that turn an end user's credential into a tenant context on their own authority.
EDGE_PRINCIPALS: frozenset[str] = frozenset({"gateway", "operator"})
# The only principal whose delegations are honoured.
DELEGATION_ISSUER = "identity"
MAX_CHAIN_DEPTH = 4
LEEWAY_S = 5.0
# A hard cap whatever the settings say: a context token is a per-hop credential.
MAX_CONTEXT_TTL_S = 900.0
_CACHE_LIMIT = 20_000
_ALGORITHMS = ["ES256"]


class TokenError(Exception):
    """A context token or delegation that must be refused; ``reason`` is machine-readable."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class VerifiedContext:
    """What a verified context token proves."""

    issuer: str
    audience: str
    tenant_id: str
    subject: str
    scopes: frozenset[str]
    roles: frozenset[str]
    grant: str
    expires_at: float  # unix seconds
    token: str
    delegation: str = ""
    purpose: str = ""


@dataclass(frozen=True, slots=True)
class Delegation:
    """A verified delegation from identity."""

    holder: str
    tenant_id: str
    purpose: str
    scopes: frozenset[str]
    audiences: frozenset[str]
    expires_at: float
    token: str


class _Certificates:
    """Signer certificates from ``x5c`` headers, checked against our CA once each."""

    def __init__(self, tls: TlsIdentity, clock: Callable[[], float]) -> None:
        self._tls = tls
        self._clock = clock
        self._known: dict[str, tuple[str, ec.EllipticCurvePublicKey, float]] = {}

    def signer(self, header: dict[str, Any]) -> tuple[str, ec.EllipticCurvePublicKey]:
        chain = header.get("x5c")
        if not isinstance(chain, list) or not chain or not isinstance(chain[0], str):
            raise TokenError("token has no signer certificate (x5c)", "no_certificate")
        der_b64 = chain[0]
        known = self._known.get(der_b64)
        if known is None:
            known = self._check(der_b64)
            if len(self._known) > 1024:
                self._known.clear()
            self._known[der_b64] = known
        principal, key, not_after = known
        if self._clock() > not_after:
            raise TokenError("signer certificate expired", "certificate_expired")
        return principal, key

    def _check(self, der_b64: str) -> tuple[str, ec.EllipticCurvePublicKey, float]:
        try:
            cert = x509.load_der_x509_certificate(base64.b64decode(der_b64, validate=True))
        except ValueError:
            raise TokenError("signer certificate unreadable", "bad_certificate") from None
        for ca in self._tls.ca_certificates:
            try:
                cert.verify_directly_issued_by(ca)
            except (InvalidSignature, ValueError, TypeError):
                continue
            break
        else:
            raise TokenError("signer certificate not issued by the platform CA", "untrusted_certificate")
        now = self._clock()
        if not (
            cert.not_valid_before_utc.timestamp() - LEEWAY_S <= now <= cert.not_valid_after_utc.timestamp()
        ):
            raise TokenError("signer certificate not valid now", "certificate_expired")
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            raise TokenError("signer certificate names no principal", "bad_certificate") from None
        principal = next(
            (
                p
                for uri in sans.get_values_for_type(x509.UniformResourceIdentifier)
                if (p := principal_of_spiffe_id(uri, self._tls.trust_domain)) is not None
            ),
            None,
        )
        key = cert.public_key()
        if principal is None or not isinstance(key, ec.EllipticCurvePublicKey):
            raise TokenError("signer certificate names no principal of ours", "bad_certificate")
        return principal, key, cert.not_valid_after_utc.timestamp()


def _split(value: Any) -> frozenset[str]:
    return frozenset(value.split()) if isinstance(value, str) and value else frozenset()


class ContextTokens:
    """Mints the context tokens one principal sends and verifies the ones it receives."""

    def __init__(
        self, tls: TlsIdentity, *, ttl_s: float = 120.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.principal = tls.principal
        self._tls = tls
        self._ttl = min(ttl_s, MAX_CONTEXT_TTL_S)
        self._clock = clock
        self._certs = _Certificates(tls, clock)
        self._minted: dict[tuple[Any, ...], tuple[str, float]] = {}
        self._verified: dict[str, VerifiedContext] = {}
        self._delegations: dict[str, Delegation] = {}
        self._x5c_for: tuple[x509.Certificate, list[str]] | None = None

    # ---- signing ----------------------------------------------------------------------------

    def _headers(self, typ: str) -> dict[str, Any]:
        cert = self._tls.certificate
        if self._x5c_for is None or self._x5c_for[0] is not cert:
            der = cert.public_bytes(serialization.Encoding.DER)
            self._x5c_for = (cert, [base64.b64encode(der).decode()])
        return {"typ": typ, "x5c": self._x5c_for[1]}

    def _sign(self, claims: dict[str, Any], typ: str) -> str:
        return jwt.encode(claims, self._tls.private_key, algorithm="ES256", headers=self._headers(typ))

    def mint(self, audience: str, ctx: RequestContext) -> str:
        """The token for a call to ``audience`` made under ``ctx`` (reused while
        more than half its lifetime is left)."""
        key = (audience, ctx.tenant_id, ctx.subject, ctx.scopes, ctx.roles, ctx.credential, ctx.delegation)
        now = self._clock()
        cached = self._minted.get(key)
        if cached is not None and cached[1] - now > self._ttl / 2:
            return cached[0]
        exp = now + self._ttl
        claims: dict[str, Any] = {
            "iss": self.principal,
            "aud": audience,
            "iat": int(now),
            "jti": secrets.token_urlsafe(9),
        }
        if ctx.tenant_id:
            claims.update(
                ten=ctx.tenant_id,
                sub=ctx.subject,
                scp=" ".join(sorted(ctx.scopes)),
                rol=" ".join(sorted(ctx.roles)),
            )
            # A call being handled carries its own authority on (chain), even when
            # it arrived under a delegation; only work this service started
            # itself (no inbound credential) uses a delegation it holds.
            if ctx.credential:
                parent = self._verified.get(ctx.credential)
                claims.update(grt="chain", prt=ctx.credential)
                if parent is not None:
                    exp = min(exp, parent.expires_at)
            elif ctx.delegation:
                dlg = self._delegation(ctx.delegation)
                claims.update(grt="dlg", dlg=ctx.delegation)
                exp = min(exp, dlg.expires_at)
            elif self.principal in EDGE_PRINCIPALS:
                claims["grt"] = "edge"
            else:
                raise TokenError(
                    f"{self.principal} has no authority to act for tenant {ctx.tenant_id}: "
                    "no inbound context and no delegation",
                    "no_authority",
                )
        else:
            claims["grt"] = "svc"
        claims["exp"] = int(exp)
        token = self._sign(claims, CONTEXT_TYPE)
        if len(self._minted) > _CACHE_LIMIT:
            self._minted.clear()
        self._minted[key] = (token, float(int(exp)))
        return token

    def sign_delegation(
        self,
        holder: str,
        tenant_id: str,
        purpose: str,
        scopes: frozenset[str],
        audiences: frozenset[str],
        ttl_s: float,
    ) -> tuple[str, float]:
        """(token, expiry): a delegation for ``holder``. Identity only: other
        principals' delegations are refused by every verifier."""
        now = self._clock()
        exp = int(now + ttl_s)
        claims = {
            "iss": self.principal, "sub": holder, "aud": sorted(audiences), "ten": tenant_id, "pur": purpose,
            "scp": " ".join(sorted(scopes)), "iat": int(now), "exp": exp, "jti": secrets.token_urlsafe(9),
        }  # fmt: skip
        return self._sign(claims, DELEGATION_TYPE), float(exp)

    # ---- verifying --------------------------------------------------------------------------

    def verify(self, token: str, peer: str | None) -> VerifiedContext:
        """The context ``token`` proves for a call to us from ``peer`` (the mTLS
        identity; None under the plaintext development switch, where the signer
        stands in for it). Raises :class:`TokenError`."""
        return self._verify(token, self.principal, peer, 0)

    def _verify(self, token: str, audience: str, peer: str | None, depth: int) -> VerifiedContext:
        now = self._clock()
        hit = self._verified.get(token)
        if hit is not None:
            if hit.expires_at + LEEWAY_S < now:
                raise TokenError("context token expired", "expired")
            if hit.audience != audience:
                raise TokenError(f"context token is for {hit.audience}, not {audience}", "wrong_audience")
            if peer is not None and hit.issuer != peer:
                raise TokenError(f"context token of {hit.issuer} presented by {peer}", "issuer_not_peer")
            return hit
        if depth > MAX_CHAIN_DEPTH:
            raise TokenError("context chain too deep", "chain_too_deep")
        claims, signer = self._decode(token, CONTEXT_TYPE, audience)
        if peer is not None and signer != peer:
            raise TokenError(f"context token of {signer} presented by {peer}", "issuer_not_peer")
        if claims.get("iss") != signer:
            raise TokenError("context token issuer is not its signer", "issuer_not_signer")
        exp = float(claims["exp"])
        if exp - float(claims["iat"]) > MAX_CONTEXT_TTL_S + LEEWAY_S:
            raise TokenError("context token lives too long", "ttl_too_long")
        tenant = claims.get("ten") or ""
        scopes, roles = _split(claims.get("scp")), _split(claims.get("rol"))
        grant = claims.get("grt")
        delegation_token = purpose = ""
        if not tenant:
            if grant != "svc":
                raise TokenError("a token without tenant must have grant svc", "bad_grant")
        elif grant == "edge":
            if signer not in EDGE_PRINCIPALS:
                raise TokenError(f"{signer} is not an edge principal", "not_edge")
        elif grant == "chain":
            parent = self._verify(str(claims.get("prt") or ""), signer, None, depth + 1)
            if parent.tenant_id != tenant or parent.subject != (claims.get("sub") or ""):
                raise TokenError("chained context changes tenant or subject", "chain_mismatch")
            if not scopes <= parent.scopes or not roles <= parent.roles:
                raise TokenError("chained context widens scopes or roles", "chain_widens")
            if exp > parent.expires_at + LEEWAY_S:
                raise TokenError("chained context outlives its parent", "chain_outlives")
            delegation_token, purpose = parent.delegation, parent.purpose
        elif grant == "dlg":
            delegation_token = str(claims.get("dlg") or "")
            dlg = self._delegation(delegation_token)
            if dlg.holder != signer:
                raise TokenError(f"delegation belongs to {dlg.holder}, not {signer}", "delegation_not_holder")
            if dlg.tenant_id != tenant:
                raise TokenError("delegation is for another tenant", "delegation_tenant")
            if audience not in dlg.audiences:
                raise TokenError(f"delegation does not reach {audience}", "delegation_audience")
            if not scopes <= dlg.scopes:
                raise TokenError("context asks more scopes than the delegation grants", "delegation_scopes")
            if exp > dlg.expires_at + LEEWAY_S:
                raise TokenError("context outlives its delegation", "delegation_outlived")
            purpose = dlg.purpose
        else:
            raise TokenError(f"unknown grant {grant!r}", "bad_grant")
        verified = VerifiedContext(
            issuer=signer,
            audience=audience,
            tenant_id=tenant,
            subject=str(claims.get("sub") or ""),
            scopes=scopes,
            roles=roles,
            grant=str(grant),
            expires_at=exp,
            token=token,
            delegation=delegation_token,
            purpose=purpose,
        )
        if len(self._verified) > _CACHE_LIMIT:
            self._verified.clear()
        self._verified[token] = verified
        return verified

    def _delegation(self, token: str) -> Delegation:
        now = self._clock()
        hit = self._delegations.get(token)
        if hit is not None:
            if hit.expires_at + LEEWAY_S < now:
                raise TokenError("delegation expired", "delegation_expired")
            return hit
        claims, signer = self._decode(token, DELEGATION_TYPE, None)
        if signer != DELEGATION_ISSUER or claims.get("iss") != signer:
            raise TokenError(f"delegation signed by {signer}, not identity", "delegation_issuer")
        aud = claims.get("aud")
        dlg = Delegation(
            holder=str(claims.get("sub") or ""),
            tenant_id=str(claims.get("ten") or ""),
            purpose=str(claims.get("pur") or ""),
            scopes=_split(claims.get("scp")),
            audiences=frozenset(str(a) for a in (aud if isinstance(aud, list) else [aud])),
            expires_at=float(claims["exp"]),
            token=token,
        )
        if len(self._delegations) > _CACHE_LIMIT:
            self._delegations.clear()
        self._delegations[token] = dlg
        return dlg

    def _decode(self, token: str, typ: str, audience: str | None) -> tuple[dict[str, Any], str]:
        if not token:
            raise TokenError("missing token", "missing")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise TokenError("malformed token", "malformed") from None
        if header.get("typ") != typ or header.get("alg") != "ES256":
            raise TokenError(f"not a {typ} token", "wrong_type")
        signer, key = self._certs.signer(header)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=_ALGORITHMS,
                audience=audience,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iat", "iss"], "verify_aud": audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired", "expired") from None
        except jwt.InvalidAudienceError:
            raise TokenError(f"token is not for {audience}", "wrong_audience") from None
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"invalid token: {exc}", "invalid") from None
        return claims, signer
