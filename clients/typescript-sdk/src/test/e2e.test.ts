// End to end against a running platform's public gRPC edge. Reads:
//   TRADING_EDGE_URL       https://127.0.0.1:PORT
//   TRADING_EDGE_CA        path of the CA certificate (PEM) that signed the edge's
//   TRADING_TRADER_TENANT / TRADING_TRADER_EMAIL / TRADING_TRADER_PASSWORD    a trader
//   TRADING_OTHER_TENANT / TRADING_OTHER_EMAIL / TRADING_OTHER_PASSWORD  an administrator
//     (who also trades) of a second tenant
// Skipped when TRADING_EDGE_URL is unset (tests/contract/test_typescript_sdk.py sets it).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import type { Interceptor } from "@connectrpc/connect";
import { Code, createTradingClient, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, TradingError } from "../index.js";
import type { Credentials, TradingClient, TradingClientOptions } from "../index.js";
import { OrderType } from "../gen/trading/common/v1/market_pb.js";
import { Side } from "../gen/trading/common/v1/types_pb.js";
import { OrderStatus, TimeInForce } from "../gen/trading/execution/v1/types_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { PlaceOrderRequestSchema } from "../gen/trading/execution/v1/execution_service_pb.js";

const edgeUrl = process.env["TRADING_EDGE_URL"];
const SYMBOL = "BTC-USD";
const CALL = { timeoutMs: 15_000 };

function env(name: string): string {
  const value = process.env[name];
  assert.ok(value, `${name} is not set`);
  return value;
}

function credentials(prefix: "TRADER" | "OTHER"): Credentials {
  return {
    tenantSlug: env(`TRADING_${prefix}_TENANT`),
    email: env(`TRADING_${prefix}_EMAIL`),
    password: env(`TRADING_${prefix}_PASSWORD`),
  };
}

/** What the SDK put on the wire: method name -> headers, per call. */
function recorder(): { seen: { method: string; header: Headers }[]; interceptor: Interceptor } {
  const seen: { method: string; header: Headers }[] = [];
  return {
    seen,
    interceptor: (next) => async (req) => {
      seen.push({ method: req.method.name, header: new Headers(req.header) });
      return next(req);
    },
  };
}

function connect(extra: Partial<TradingClientOptions> = {}): TradingClient {
  return createTradingClient({ baseUrl: env("TRADING_EDGE_URL"), ca: readFileSync(env("TRADING_EDGE_CA")), ...extra });
}

async function expectError(call: Promise<unknown>, codes: Code[]): Promise<TradingError> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof TradingError, `not a TradingError: ${String(error)}`);
    assert.ok(codes.includes(error.code), `${Code[error.code]}: ${error.message}`);
    return error;
  }
  assert.fail(`expected ${codes.map((c) => Code[c]).join(" or ")}, the call succeeded`);
}

async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

describe("the SDK against the public gRPC edge", { skip: edgeUrl ? false : "TRADING_EDGE_URL is not set" }, () => {
  const wire = recorder();
  let trader: TradingClient;
  let bid = "";
  let filledOrderId = "";

  before(async () => {
    trader = connect({ interceptors: [wire.interceptor] });
    const session = await trader.login(credentials("TRADER"));
    assert.ok(session.tokens?.accessToken && session.tokens.refreshToken);
  });

  after(() => trader?.close());

  test("reads a quote", async () => {
    // The feed may not have quoted the symbol yet right after start-up.
    for (let attempt = 0; ; attempt++) {
      try {
        const { quote } = await trader.marketdata.getQuote({ symbol: SYMBOL }, CALL);
        assert.equal(quote?.symbol, SYMBOL);
        assert.ok(quote.bidPrice?.value && quote.askPrice?.value, "a two-sided quote");
        bid = quote.bidPrice.value;
        return;
      } catch (error) {
        if (!(error instanceof TradingError) || error.code !== Code.NotFound || attempt >= 20) {
          throw error;
        }
        await new Promise((resolve) => setTimeout(resolve, 1_000));
      }
    }
  });

  test("places a market order once per idempotency key and streams it until FILLED", { timeout: 90_000 }, async () => {
    // A resting buy far below the market: its open-order snapshot, the first
    // message of the stream, proves the subscription is live before the
    // market order is placed (which may fill within milliseconds).
    const resting = await trader.execution.placeOrder(
      {
        clientOrderId: `ts-sdk-rest-${randomUUID().slice(0, 8)}`,
        symbol: SYMBOL,
        side: Side.BUY,
        type: OrderType.LIMIT,
        timeInForce: TimeInForce.GTC,
        quantity: { value: "0.001" },
        limitPrice: { value: (Number(bid) * 0.97).toFixed(2) },
      },
      CALL,
    );
    const restingId = resting.order?.orderId ?? "";
    const updates = new AbortController();
    try {
      const stream = trader.execution
        .streamOrderUpdates({ symbol: SYMBOL, includeOpenOrders: true }, { signal: updates.signal })
        [Symbol.asyncIterator]();
      const first = await within(15_000, "open-order snapshot", stream.next());
      assert.ok(!first.done && first.value.snapshot, "the stream starts with the open orders");

      const key = `ts-sdk-${randomUUID()}`;
      const order: MessageInitShape<typeof PlaceOrderRequestSchema> = {
        clientOrderId: key,
        symbol: SYMBOL,
        side: Side.BUY,
        type: OrderType.MARKET,
        timeInForce: TimeInForce.IOC,
        quantity: { value: "0.001" },
      };
      const headers = { [IDEMPOTENCY_KEY]: key };
      let replayed: string | null = null;
      const placed = await trader.execution.placeOrder(order, { ...CALL, headers });
      const retried = await trader.execution.placeOrder(order, {
        ...CALL,
        headers,
        onHeader: (h) => (replayed = h.get(IDEMPOTENT_REPLAYED)),
      });
      filledOrderId = placed.order?.orderId ?? "";
      assert.ok(filledOrderId);
      assert.equal(retried.order?.orderId, filledOrderId, "the retry returns the first order");
      assert.equal(replayed, "true", "the retry is the stored first reply");
      // The caller's own key went out unchanged, on both attempts.
      const keys = wire.seen.filter((s) => s.method === "PlaceOrder").map((s) => s.header.get(IDEMPOTENCY_KEY));
      assert.deepEqual(keys.slice(-2), [key, key]);

      let status: OrderStatus | undefined;
      while (status !== OrderStatus.FILLED) {
        const next = await within(30_000, `FILLED update of ${filledOrderId}`, stream.next());
        assert.ok(!next.done, "the stream ended");
        if (next.value.order?.orderId === filledOrderId) {
          status = next.value.order.status;
          assert.notEqual(status, OrderStatus.REJECTED, "the order was rejected");
        }
      }
    } finally {
      updates.abort();
      if (restingId) {
        await trader.execution.cancelOrder({ orderRef: { case: "orderId", value: restingId } }, CALL).catch(() => {});
      }
    }
  });

  test("gives mutating calls an idempotency key of their own", async () => {
    const placed = await trader.execution.placeOrder(
      {
        clientOrderId: `ts-sdk-auto-${randomUUID().slice(0, 8)}`,
        symbol: SYMBOL,
        side: Side.BUY,
        type: OrderType.MARKET,
        timeInForce: TimeInForce.IOC,
        quantity: { value: "0.001" },
      },
      CALL,
    );
    await trader.execution.getOrder({ orderRef: { case: "orderId", value: placed.order?.orderId ?? "" } }, CALL);
    const last = (name: string) => wire.seen.filter((s) => s.method === name).at(-1)?.header;
    assert.match(last("PlaceOrder")?.get(IDEMPOTENCY_KEY) ?? "", /^[0-9a-f-]{36}$/);
    assert.equal(last("GetOrder")?.has(IDEMPOTENCY_KEY), false);
    assert.match(last("GetOrder")?.get("authorization") ?? "", /^Bearer /);
  });

  test("reads the portfolio with the position bought", { timeout: 60_000 }, async () => {
    for (let attempt = 0; ; attempt++) {
      const { portfolio } = await trader.portfolio.getPortfolio({}, CALL);
      assert.ok(portfolio?.cash && portfolio.equity);
      if (portfolio.positions.some((p) => p.symbol === SYMBOL) || attempt >= 20) {
        assert.ok(portfolio.positions.some((p) => p.symbol === SYMBOL), `no ${SYMBOL} position`);
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    }
  });

  test("reports bad input with field violations", async () => {
    const error = await expectError(
      trader.execution.placeOrder(
        {
          clientOrderId: `ts-sdk-bad-${randomUUID().slice(0, 8)}`,
          symbol: SYMBOL,
          side: Side.BUY,
          type: OrderType.MARKET,
          timeInForce: TimeInForce.IOC,
          quantity: { value: "0" },
        } satisfies MessageInitShape<typeof PlaceOrderRequestSchema>,
        CALL,
      ),
      [Code.InvalidArgument],
    );
    assert.ok(
      error.fieldViolations.some((v) => v.field.startsWith("quantity")),
      JSON.stringify(error.fieldViolations),
    );
  });

  test("refreshes the access token before it expires", async () => {
    // A margin longer than any token's life: every call refreshes first, so
    // two calls rotate the pair twice (each refresh token used once).
    const seen = recorder();
    const client = connect({ refreshMarginMs: 24 * 3600_000, interceptors: [seen.interceptor] });
    try {
      const login = await client.login(credentials("TRADER"));
      await client.portfolio.getPortfolio({}, CALL);
      await client.marketdata.getQuote({ symbol: SYMBOL }, CALL);
      const sent = seen.seen.map((s) => s.header.get("authorization"));
      assert.equal(sent.length, 2);
      assert.equal(new Set([`Bearer ${login.tokens?.accessToken}`, ...sent]).size, 3, "a new token per call");
    } finally {
      client.close();
    }
  });

  test("refuses an unauthenticated call", async () => {
    const anonymous = connect();
    try {
      await expectError(anonymous.portfolio.getPortfolio({}, CALL), [Code.Unauthenticated]);
      await expectError(anonymous.execution.getOrder({ orderRef: { case: "orderId", value: filledOrderId } }, CALL), [
        Code.Unauthenticated,
      ]);
    } finally {
      anonymous.close();
    }
  });

  test("another tenant cannot read the order; its API key works", async () => {
    assert.ok(filledOrderId, "the order test ran first");
    const other = connect();
    try {
      await other.login(credentials("OTHER"));
      await expectError(other.execution.getOrder({ orderRef: { case: "orderId", value: filledOrderId } }, CALL), [
        Code.NotFound,
        Code.PermissionDenied,
      ]);
      const created = await other.identity.createApiKey(
        { name: `ts-sdk-${randomUUID().slice(0, 8)}`, scopes: ["portfolio:read"] },
        CALL,
      );
      const keyed = connect({ apiKey: created.secret });
      try {
        const { portfolio } = await keyed.portfolio.getPortfolio({}, CALL);
        assert.equal(portfolio?.positions.length, 0, "a fresh tenant holds nothing");
      } finally {
        keyed.close();
        await other.identity.revokeApiKey({ apiKeyId: created.apiKey?.apiKeyId ?? "" }, CALL);
      }
    } finally {
      other.close();
    }
  });
});
