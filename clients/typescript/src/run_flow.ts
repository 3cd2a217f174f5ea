// Runs the order flow against a gateway: `node build/run_flow.js` with
// TRADING_BASE_URL, TRADING_TENANT, TRADING_EMAIL, TRADING_PASSWORD and
// TRADING_CLIENT_ORDER_ID set (tests/contract/test_typescript_client.py).
import { placeAndReadBack } from "./order_flow.js";

function env(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set`);
  }
  return value;
}

const outcome = await placeAndReadBack(
  env("TRADING_BASE_URL"),
  { tenantSlug: env("TRADING_TENANT"), email: env("TRADING_EMAIL"), password: env("TRADING_PASSWORD") },
  env("TRADING_CLIENT_ORDER_ID"),
);
console.log(outcome);
