"""HTTP-level replay of mutating calls sent with an ``Idempotency-Key``
(after draft-ietf-httpapi-idempotency-key-header).

The key is always forwarded as ``idempotency-key`` metadata (services make the
effect happen once); on top of that the gateway remembers the first answer
per (tenant, subject, RPC, key) in Redis, so a retry gets the *same body* even when
the resource has moved on since (an order filled between the two calls):

* first request: a short "in progress" marker is set (SET NX), the call is
  made, and its outcome is stored for ``ttl_s`` (2xx and final 4xx; 5xx, 429
  and transport failures drop the marker so the client may retry);
* a retry with the same key and the same request (fingerprint: SHA-256 of the
  deterministic serialization of the request message) gets the stored answer
  with ``Idempotent-Replayed: true``;
* the same key with a different request: 422; while the first is in flight: 409.

Redis trouble never blocks a call: the gateway then only forwards the key.
The store's commands go out in pipelines shared by the requests in flight at
the same moment (:class:`gateway.redis_batch.Batcher`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.responses import Response

from gateway.problems import Problem
from gateway.redis_batch import Batcher
from runtime.storage.redis import tenant_key

log = logging.getLogger(__name__)

REPLAYED_HEADER = "Idempotent-Replayed"


@dataclass(frozen=True, slots=True)
class Slot:
    """A claimed key: :meth:`IdempotencyStore.finish` stores the outcome under it."""

    key: str
    fingerprint: str


class IdempotencyStore:
    def __init__(self, redis: Redis, ttl_s: int = 24 * 3600, in_flight_s: int = 60) -> None:
        self._redis = redis
        self._batch = Batcher(redis)
        self._ttl_ms = ttl_s * 1000
        self._in_flight_ms = in_flight_s * 1000

    @staticmethod
    def fingerprint(request: message.Message) -> str:
        return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()

    async def begin(
        self, tenant: str, subject: str, grpc_path: str, key: str, request: message.Message
    ) -> Slot | Response:
        """Claim the key of one principal (a :class:`Slot`), or the stored answer
        of its earlier call. Keys are scoped to (tenant, subject): two callers of
        one tenant choosing the same key never see each other's answers."""
        claimed = await self.claim(tenant, subject, grpc_path, key, request)
        if isinstance(claimed, Slot):
            return claimed
        return Response(
            claimed["body"].encode(),
            status_code=int(claimed["status"]),
            media_type=str(claimed["media_type"]),
            headers={REPLAYED_HEADER: "true"},
        )

    async def claim(
        self, tenant: str, subject: str, scope: str, key: str, request: message.Message
    ) -> Slot | dict[str, Any]:
        """The protocol-neutral half of :meth:`begin`: a :class:`Slot`, or the
        document :meth:`store` kept for the first call. ``scope`` names the RPC
        (and, for the gRPC edge, the protocol: the two store different answers)."""
        if not tenant or not subject:
            raise ValueError("idempotency keys need an authenticated principal")
        digest = hashlib.sha256(f"{subject}\n{scope}\n{key}".encode()).hexdigest()
        redis_key = tenant_key(tenant, "gateway", "idem", digest)
        fp = self.fingerprint(request)
        try:
            marker = json.dumps({"fp": fp, "state": "pending"})
            in_flight = self._in_flight_ms
            claimed = await self._batch.execute(lambda p: p.set(redis_key, marker, nx=True, px=in_flight))
            if claimed:
                return Slot(redis_key, fp)
            raw = await self._batch.execute(lambda p: p.get(redis_key))
        except RedisError as exc:
            log.warning("idempotency store unavailable, forwarding the key only: %r", exc)
            return Slot("", fp)
        if raw is None:  # expired between SET and GET: treat as new, unguarded
            return Slot("", fp)
        stored: dict[str, Any] = json.loads(raw)
        if stored["fp"] != fp:
            raise Problem(
                grpc.StatusCode.INVALID_ARGUMENT,
                "Idempotency-Key was already used with a different request",
                status=422,
                reason="IDEMPOTENCY_KEY_REUSED",
                domain="trading.gateway",
            )
        if stored["state"] == "pending":
            raise Problem(
                grpc.StatusCode.ABORTED,
                "a request with this Idempotency-Key is still in progress",
                reason="IDEMPOTENCY_KEY_IN_PROGRESS",
                domain="trading.gateway",
                retry_after_s=1.0,
            )
        return stored

    async def finish(self, slot: Slot, response: Response) -> None:
        """Store a final outcome, or release the key when retrying may help."""
        status = response.status_code
        if status >= 500 or status in (408, 429):
            await self.release(slot)
            return
        await self.store(
            slot,
            {
                "status": status,
                "media_type": response.media_type or "application/json",
                "body": bytes(response.body).decode(),
            },
        )

    async def store(self, slot: Slot, outcome: dict[str, Any]) -> None:
        """Keep ``outcome`` (JSON-serializable) as the answer to every retry."""
        if not slot.key:
            return
        try:
            doc = json.dumps({**outcome, "fp": slot.fingerprint, "state": "done"})
            ttl = self._ttl_ms
            await self._batch.execute(lambda p: p.set(slot.key, doc, px=ttl))
        except RedisError as exc:
            log.warning("could not store the idempotent outcome: %r", exc)

    async def release(self, slot: Slot) -> None:
        if slot.key:
            try:
                await self._batch.execute(lambda p: p.delete(slot.key))
            except RedisError as exc:
                log.warning("could not release an idempotency key: %r", exc)
