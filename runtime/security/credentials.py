"""One principal's credentials in one process: TLS material, context tokens, the guard.

A service process is one principal; its gRPC server and its gRPC clients
share these (so the tokens it verified as a server are known when it calls
on with them as a client). :func:`credentials_for` loads them once per
process and principal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from runtime.config import Settings
from runtime.security.guard import CallGuard
from runtime.security.tls import TlsIdentity, check_plaintext_allowed, target_name_option
from runtime.security.tokens import ContextTokens


@dataclass(frozen=True, slots=True)
class PrincipalCredentials:
    """What one principal needs to serve and call over the internal network."""

    principal: str
    tls: TlsIdentity
    tokens: ContextTokens
    guard: CallGuard
    plaintext: bool

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """None under the plaintext development switch."""
        return None if self.plaintext else self.tls.server_credentials()

    def channel(
        self,
        target: str,
        service: str,
        options: list[tuple[str, object]],
        interceptors: list[grpc.aio.ClientInterceptor],
    ) -> grpc.aio.Channel:
        """A channel to ``service`` at ``target``: mutual TLS (the server must
        prove it is ``service``), or plaintext under the development switch."""
        if self.plaintext:
            return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
        return grpc.aio.secure_channel(
            target,
            self.tls.channel_credentials(),
            options=[*options, target_name_option(service)],
            interceptors=interceptors,
        )


_loaded: dict[tuple[str, Path, str, bool, str], PrincipalCredentials] = {}


def credentials_for(settings: Settings, principal: str) -> PrincipalCredentials:
    """The credentials of ``principal`` per ``settings.security`` (loaded once per
    process; in development the local PKI is created first). Refuses the
    plaintext switch outside development."""
    check_plaintext_allowed(settings)
    sec = settings.security
    key = (
        principal,
        sec.cert_file or sec.pki_path(settings.var_dir),
        settings.environment,
        sec.plaintext,
        sec.trust_domain,
    )
    loaded = _loaded.get(key)
    if loaded is None:
        tls = TlsIdentity.for_principal(settings, principal)
        tokens = ContextTokens(tls, ttl_s=sec.context_token_ttl_s)
        guard = CallGuard(tokens, sec.trust_domain, plaintext=sec.plaintext)
        loaded = _loaded[key] = PrincipalCredentials(principal, tls, tokens, guard, sec.plaintext)
    return loaded
