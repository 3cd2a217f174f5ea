// A small order flow written against the types openapi-typescript generates
// from the gateway's OpenAPI document (src/generated/schema.d.ts, written by
// tests/contract/test_typescript_client.py). It must type-check; the lines
// marked @ts-expect-error must not (the document's required fields, enums and
// closed objects reach the client's types).
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/schema.js";

type Schemas = components["schemas"];
export type PlaceOrder = Schemas["trading.execution.v1.PlaceOrderRequest"];
export type Problem = Schemas["Problem"];

export interface Login {
  tenantSlug: string;
  email: string;
  password: string;
}

/** Logs in, places a market order, reads it back and lists the tenant's orders. */
export async function placeAndReadBack(baseUrl: string, login: Login, clientOrderId: string): Promise<string> {
  const client = createClient<paths>({ baseUrl });
  const session = await client.POST("/v1/auth/login", { body: login });
  if (session.error) {
    throw new Error(describe(session.error));
  }
  const headers = { Authorization: `Bearer ${session.data.tokens?.accessToken ?? ""}` };
  const order: PlaceOrder = {
    clientOrderId,
    symbol: "BTC-USD",
    side: "SIDE_BUY",
    type: "ORDER_TYPE_MARKET",
    timeInForce: "TIME_IN_FORCE_IOC",
    quantity: { value: "0.001" },
  };
  const placed = await client.POST("/v1/orders", {
    body: order,
    params: { header: { "Idempotency-Key": clientOrderId } },
    headers,
  });
  if (placed.error) {
    throw new Error(describe(placed.error));
  }
  const orderId = placed.data.order?.orderId ?? "";
  const read = await client.GET("/v1/orders/{order_id}", { params: { path: { order_id: orderId } }, headers });
  if (read.error) {
    throw new Error(describe(read.error));
  }
  const listed = await client.GET("/v1/orders", { params: { query: { page_size: 10 } }, headers });
  if (listed.error) {
    throw new Error(describe(listed.error));
  }
  const found = (listed.data.orders ?? []).some((o) => o.orderId === orderId);
  return `${read.data.order?.status ?? "?"} ${found ? "listed" : "not listed"}`;
}

function describe(problem: Problem): string {
  const fields = (problem.fieldViolations ?? []).map((v) => `${v.pointer}: ${v.description}`);
  return `${problem.status} ${problem.code}: ${problem.detail} ${fields.join("; ")}`.trim();
}

const valid: PlaceOrder = {
  clientOrderId: "c-1",
  symbol: "BTC-USD",
  side: "SIDE_SELL",
  type: "ORDER_TYPE_LIMIT",
  timeInForce: "TIME_IN_FORCE_GTC",
  quantity: { value: "1" },
  limitPrice: { value: "100" },
};

// @ts-expect-error symbol is required (the server refuses an empty one)
export const missingSymbol: PlaceOrder = {
  clientOrderId: "c-2",
  side: "SIDE_BUY",
  type: "ORDER_TYPE_MARKET",
  timeInForce: "TIME_IN_FORCE_IOC",
  quantity: { value: "1" },
};

// @ts-expect-error quantity is required
export const missingQuantity: PlaceOrder = { ...valid, quantity: undefined };

// @ts-expect-error SIDE_UNSPECIFIED is refused by the server, so not in the type
export const unspecifiedSide: PlaceOrder = { ...valid, side: "SIDE_UNSPECIFIED" };

// @ts-expect-error unknown members are refused (closed objects)
export const unknownMember: PlaceOrder = { ...valid, venue: "x" };

export const cancelBodyHasNoOrderId: Schemas["trading.execution.v1.CancelOrderRequest.BodyWithout.client_order_id.order_id"] =
  // @ts-expect-error the order id is the path's; the body cannot repeat it
  { orderId: "4f1c1d1e-0000-4000-8000-000000000000" };
