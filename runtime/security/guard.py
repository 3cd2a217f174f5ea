"""The server side of the trust boundary: who is calling, and may they.

For every call, before the servicer runs (``runtime.interceptors.ServerCallInterceptor``):

1. the caller's principal comes from its mTLS client certificate (SPIFFE id);
2. the RPC's contract policy lists the principals allowed to call it
   (``(trading.common.v1.method).callers``): anyone else gets
   PERMISSION_DENIED (reason ``CALLER_NOT_ALLOWED``);
3. the context token (metadata ``x-context-token``) is verified for this
   callee and this peer (``runtime.security.tokens``): tenant, subject,
   scopes and roles come only from it. Non-public RPCs need one
   (UNAUTHENTICATED otherwise) and must find the contract's scopes in it
   (PERMISSION_DENIED, reason ``MISSING_SCOPE``).

Health checks and reflection need only a valid client certificate.
Under the plaintext development switch there is no certificate: the signer of
the context token stands in for the peer (so every other check still runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from runtime.contracts import METADATA, full_method_name, method_policy, services
from runtime.errors import ServiceError, domain_error
from runtime.security.tls import peer_principal
from runtime.security.tokens import ContextTokens, TokenError, VerifiedContext

DOMAIN = "trading.security"
_INFRA_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_K_TOKEN = METADATA.context_token


@dataclass(frozen=True, slots=True)
class _Rule:
    callers: frozenset[str]
    scopes: frozenset[str]
    public: bool


def _denied(reason: str, message: str, **metadata: str) -> ServiceError:
    return ServiceError(domain_error(grpc.StatusCode.PERMISSION_DENIED, reason, DOMAIN, message, metadata))


def _unauthenticated(reason: str, message: str) -> ServiceError:
    return ServiceError(domain_error(grpc.StatusCode.UNAUTHENTICATED, reason, DOMAIN, message))


@dataclass(frozen=True, slots=True)
class Admitted:
    """The outcome of a successful check."""

    caller: str
    context: VerifiedContext | None


class CallGuard:
    """Admits or refuses calls to one principal's server."""

    def __init__(self, tokens: ContextTokens, trust_domain: str, *, plaintext: bool = False) -> None:
        self.tokens = tokens
        self.principal = tokens.principal
        self._trust_domain = trust_domain
        self._plaintext = plaintext
        self._rules: dict[str, _Rule] = {}
        for svc in services():
            for method in svc.methods:
                name = full_method_name(method)
                policy = method_policy(name)
                self._rules[name] = _Rule(frozenset(policy.callers), frozenset(policy.scopes), policy.public)

    def admit(self, method: str, context: Any, token: str) -> Admitted:
        """Check one call; raises :class:`ServiceError` to refuse it."""
        peer = None if self._plaintext else peer_principal(context, self._trust_domain)
        if method.startswith(_INFRA_PREFIXES):
            if peer is None and not self._plaintext:
                raise _unauthenticated("NO_PEER_IDENTITY", "no client certificate of the platform")
            return Admitted(peer or "", None)
        rule = self._rules.get(method)
        if rule is None:
            raise _denied("UNKNOWN_METHOD", f"{method} is not in the contract")
        verified: VerifiedContext | None = None
        if token:
            try:
                verified = self.tokens.verify(token, peer)
            except TokenError as exc:
                raise _unauthenticated(
                    f"CONTEXT_TOKEN_{exc.reason.upper()}", f"context token refused: {exc}"
                ) from None
        caller = peer if peer is not None else (verified.issuer if verified is not None else None)
        if caller is None:
            raise _unauthenticated("NO_PEER_IDENTITY", "the caller proved no identity")
        if caller not in rule.callers:
            raise _denied(
                "CALLER_NOT_ALLOWED",
                f"{caller} may not call {method}",
                caller=caller,
                allowed=" ".join(sorted(rule.callers)),
            )
        if not rule.public:
            if verified is None:
                raise _unauthenticated(
                    "CONTEXT_TOKEN_MISSING", f"{method} needs a context token ({_K_TOKEN})"
                )
            missing = rule.scopes - verified.scopes
            if missing:
                raise _denied(
                    "MISSING_SCOPE",
                    f"missing scope(s): {' '.join(sorted(missing))}",
                    scopes=" ".join(sorted(missing)),
                )
        return Admitted(caller, verified)
