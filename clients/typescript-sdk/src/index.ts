// @trading/sdk: the public API. Generated messages and service descriptors
// are under "@trading/sdk/gen/..." (build/gen), e.g. the PlaceOrderRequest type.
export { createTradingClient, type TradingClient, type TradingClientOptions } from "./client.js";
export { Session, authInterceptor, isPublic, type Credentials } from "./auth.js";
export { IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, idempotencyInterceptor, isMutating } from "./idempotency.js";
export { Code, TradingError, type FieldViolation } from "./errors.js";
