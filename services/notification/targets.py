"""Webhook target validation: which URLs notification will POST to.

A webhook makes the platform send requests on the tenant's behalf, so its
target is checked like any server-side request forgery risk:

- scheme https (http only when the deployment allows it for local testing);
- no credentials in the URL (``user:pass@``): they would be stored and logged
  in clear; webhooks authenticate the platform by signature instead;
- a host name or address, no fragment;
- every address the host resolves to must be public (not loopback, private,
  link-local, carrier-grade NAT, multicast, reserved, ...), unless private
  targets are allowed for local testing. Checked at registration and again
  before every delivery, and the delivery then connects to exactly the
  address that was checked (DNS rebinding cannot swap it in between).

`parse_target` and `address_refusal` are pure; `resolve_target` adds DNS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = {"https": 443, "http": 80}


class TargetRefusedError(ValueError):
    """A webhook URL the policy refuses; `reason` is a stable code for clients."""

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed webhook URL."""

    url: str
    scheme: str
    host: str  # lower-case name, or the address text without brackets
    port: int
    parts: SplitResult

    def url_for(self, address: IPAddress) -> str:
        """The URL with its host replaced by `address` (the pinned connection)."""
        host = f"[{address}]" if address.version == 6 else str(address)
        netloc = host if self.parts.port is None else f"{host}:{self.parts.port}"
        return self.parts._replace(netloc=netloc).geturl()

    @property
    def host_header(self) -> str:
        """The Host header value the receiver expects (the original authority)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.parts.port is None else f"{host}:{self.parts.port}"


@dataclass(frozen=True, slots=True)
class ResolvedTarget:
    """A target with the public (or allowed) addresses it resolved to."""

    target: Target
    addresses: tuple[IPAddress, ...]


def parse_target(url: str, *, allow_http: bool) -> Target:
    """The parsed URL, or TargetRefusedError saying what is wrong with it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefusedError("WEBHOOK_URL_MALFORMED", f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise TargetRefusedError("WEBHOOK_URL_SCHEME", "must be an https URL")
    if scheme == "http" and not allow_http:
        raise TargetRefusedError(
            "WEBHOOK_URL_INSECURE", "must be an https URL (http is accepted only for local testing)"
        )
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise TargetRefusedError(
            "WEBHOOK_URL_CREDENTIALS",
            "must not contain credentials (user:password@); receivers verify the signature instead",
        )
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise TargetRefusedError("WEBHOOK_URL_HOST", "must name a host")
    if parts.fragment:
        raise TargetRefusedError("WEBHOOK_URL_FRAGMENT", "must not contain a fragment (#...)")
    if any(c.isspace() for c in url):
        raise TargetRefusedError("WEBHOOK_URL_MALFORMED", "must not contain white space")
    return Target(url, scheme, host.lower(), port or DEFAULT_PORTS[scheme], parts)


def address_refusal(address: IPAddress) -> str | None:
    """Why `address` is not a public unicast address, or None when it is one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address_refusal(address.ipv4_mapped)  # ::ffff:127.0.0.1 is loopback
    # Most specific first: link-local and unspecified addresses are also "private".
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if address.is_reserved or not address.is_global:
        return "reserved"
    return None


def check_addresses(
    target: Target, addresses: tuple[IPAddress, ...], *, allow_private: bool
) -> ResolvedTarget:
    """The target with its addresses, if every one of them may be used."""
    if not addresses:
        raise TargetRefusedError("WEBHOOK_URL_UNRESOLVABLE", f"host {target.host} has no address")
    if not allow_private:
        for address in addresses:
            refusal = address_refusal(address)
            if refusal is not None:
                raise TargetRefusedError(
                    "WEBHOOK_URL_PRIVATE_ADDRESS",
                    f"host {target.host} resolves to a {refusal} address ({address}); "
                    "only public addresses are accepted",
                )
    return ResolvedTarget(target, addresses)


async def resolve_target(target: Target, *, allow_private: bool, timeout_s: float = 3.0) -> ResolvedTarget:
    """Resolve the host and check every address it resolves to."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(target.host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses: tuple[IPAddress, ...] = (literal,)
    else:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                infos = await loop.getaddrinfo(
                    target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
                )
        except (OSError, TimeoutError, ValueError) as exc:  # ValueError: UnicodeError, NUL bytes
            raise TargetRefusedError(
                "WEBHOOK_URL_UNRESOLVABLE", f"host {target.host} does not resolve: {exc}"
            ) from None
        seen: dict[IPAddress, None] = {}
        for _family, _type, _proto, _name, sockaddr in infos:
            # Scope ids ("fe80::1%eth0") are dropped: the address class is what matters.
            seen[ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])] = None
        addresses = tuple(seen)
    return check_addresses(target, addresses, allow_private=allow_private)
