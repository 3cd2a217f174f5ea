// Offline checks of the hand-written SDK code (no server needed).
import assert from "node:assert/strict";
import test from "node:test";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { authInterceptor, IDEMPOTENCY_KEY, idempotencyInterceptor, isMutating, isPublic, Session, TradingError } from "../index.js";
import { ExecutionService } from "../gen/trading/execution/v1/execution_service_pb.js";
import { IdentityService } from "../gen/trading/identity/v1/identity_service_pb.js";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "../gen/google/rpc/error_details_pb.js";

test("TradingError names the rich error details", () => {
  const wire = new ConnectError("order refused", Code.FailedPrecondition, { "x-request-id": "r-1" }, [
    { desc: ErrorInfoSchema, value: { reason: "RISK_MAX_NOTIONAL_EXCEEDED", domain: "trading.risk", metadata: { limit: "1000" } } },
    { desc: BadRequestSchema, value: { fieldViolations: [{ field: "quantity", description: "must be greater than zero" }] } },
    { desc: RetryInfoSchema, value: { retryDelay: durationFromMs(1500) } },
  ]);
  const error = TradingError.from(wire);
  assert.equal(error.code, Code.FailedPrecondition);
  assert.equal(error.rawMessage, "order refused");
  assert.equal(error.reason, "RISK_MAX_NOTIONAL_EXCEEDED");
  assert.equal(error.domain, "trading.risk");
  assert.deepEqual(error.infoMetadata, { limit: "1000" });
  assert.deepEqual(error.fieldViolations, [{ field: "quantity", description: "must be greater than zero", reason: "" }]);
  assert.equal(error.retryAfterMs, 1500);
  assert.equal(error.metadata.get("x-request-id"), "r-1");
  assert.ok(error instanceof TradingError);
  assert.ok(!(wire instanceof TradingError));
  assert.equal(TradingError.from(error), error);
  assert.equal(TradingError.from(new Error("socket hang up")).code, Code.Unknown);
});

test("mutating and public RPCs are read from the contract's method options", () => {
  assert.ok(isMutating(ExecutionService.method.placeOrder));
  assert.ok(!isMutating(ExecutionService.method.getOrder));
  assert.ok(!isMutating(IdentityService.method.login));
  assert.ok(isPublic(IdentityService.method.login) && isPublic(IdentityService.method.refreshToken));
  assert.ok(!isPublic(ExecutionService.method.placeOrder));
});

test("concurrent callers share one refresh (a refresh token is good once)", async () => {
  let refreshes = 0;
  const tokens = (n: number, lifetimeMs: number) => ({
    accessToken: `access-${n}`,
    refreshToken: `refresh-${n}`,
    accessTokenExpiresAt: { seconds: BigInt(Math.floor((Date.now() + lifetimeMs) / 1000)), nanos: 0 },
  });
  const identity = {
    login: async () => ({ tokens: tokens(0, 1_000) }),
    refreshToken: async (req: { refreshToken: string }) => {
      assert.equal(req.refreshToken, `refresh-${refreshes}`);
      refreshes++;
      await new Promise((resolve) => setTimeout(resolve, 10));
      return { tokens: tokens(refreshes, 300_000) };
    },
  };
  const session = new Session(identity as never, 30_000);
  await session.login({ tenantSlug: "t", email: "e@t.test", password: "p" });
  const got = await Promise.all([session.accessToken(), session.accessToken(), session.accessToken()]);
  assert.deepEqual(got, ["access-1", "access-1", "access-1"]);
  assert.equal(refreshes, 1);
  assert.equal(await session.accessToken(), "access-1"); // fresh now: no refresh
  assert.equal(refreshes, 1);
});

test("a mutating call retried after UNAVAILABLE carries the same key; reads carry none", async () => {
  const keys: (string | null)[] = [];
  const auth: (string | null)[] = [];
  const transport = createRouterTransport(
    (router) =>
      router.service(ExecutionService, {
        placeOrder(_req, ctx) {
          keys.push(ctx.requestHeader.get(IDEMPOTENCY_KEY));
          if (keys.length === 1) {
            // As if the connection broke after the server had the request.
            throw new ConnectError("connection reset", Code.Unavailable);
          }
          return { order: { orderId: "o-1" } };
        },
        getOrder(_req, ctx) {
          keys.push(ctx.requestHeader.get(IDEMPOTENCY_KEY));
          auth.push(ctx.requestHeader.get("x-api-key"));
          return {};
        },
      }),
    { transport: { interceptors: [authInterceptor("k-1", new Session({} as never, 0)), idempotencyInterceptor(2, 1)] } },
  );
  const execution = createClient(ExecutionService, transport);
  const placed = await execution.placeOrder({ clientOrderId: "c-1", symbol: "BTC-USD" });
  assert.equal(placed.order?.orderId, "o-1");
  assert.equal(keys.length, 2);
  assert.match(keys[0] ?? "", /^[0-9a-f-]{36}$/);
  assert.equal(keys[1], keys[0]);
  await execution.getOrder({ orderRef: { case: "orderId", value: "o-1" } });
  assert.equal(keys[2], null);
  assert.deepEqual(auth, ["k-1"]);
});
