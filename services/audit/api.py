"""gRPC API of the audit service (trading.audit.v1.AuditService).

Nothing is built here yet: it arrives with the analytics/audit/notification issue. Every RPC of the
contract answers UNIMPLEMENTED (reason NOT_BUILT_YET) until then, filled in by
runtime.service; none returns a made-up success.
"""

from __future__ import annotations

from runtime.resources import Resources


class AuditApi:
    """The AuditService servicer."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources
