// Idempotency keys on mutating calls, so that retrying one is safe.
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { getOption, type DescMethod } from "@bufbuild/protobuf";
import { method as methodPolicy } from "./gen/trading/common/v1/options_pb.js";

export const IDEMPOTENCY_KEY = "idempotency-key";
/** Initial-metadata header the edge sets on a reply it stored for an earlier call with the same key. */
export const IDEMPOTENT_REPLAYED = "idempotent-replayed";

/**
 * Mutating RPCs, read from the contract itself (`trading.common.v1.method`):
 * those not marked `idempotent` (calling them twice could act twice) and not
 * `public` (the edge keeps keyed replies per authenticated caller only).
 */
export function isMutating(method: DescMethod): boolean {
  const policy = getOption(method, methodPolicy);
  return !policy.idempotent && !policy.public;
}

/**
 * Gives every mutating call an `idempotency-key` (a random UUID, unless the
 * caller passed one) and retries unary calls that fail with UNAVAILABLE with
 * the same key: the first attempt may have reached the server before the
 * connection broke, and the key makes the server apply the request once and
 * answer the retry with the stored first reply.
 *
 * To retry at a higher level (after a crash, or after the call returned an
 * error), pass your own key in the call's headers and reuse it.
 */
export function idempotencyInterceptor(retries = 2, backoffMs = 200): Interceptor {
  return (next) => async (req) => {
    if (!isMutating(req.method)) {
      return next(req);
    }
    if (!req.header.has(IDEMPOTENCY_KEY)) {
      req.header.set(IDEMPOTENCY_KEY, randomUUID());
    }
    for (let attempt = 0; ; attempt++) {
      try {
        return await next(req);
      } catch (error) {
        // A streaming request body is consumed by the first attempt; a
        // deadline or a cancel is the caller's decision.
        const retryable =
          !req.stream && !req.signal.aborted && ConnectError.from(error).code === Code.Unavailable;
        if (!retryable || attempt >= retries) {
          throw error;
        }
        await sleep(backoffMs * 2 ** attempt);
      }
    }
  };
}
