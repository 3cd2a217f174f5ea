// createTradingClient: typed clients of the public gRPC edge over one
// HTTP/2 + TLS connection, with credentials, idempotency keys and typed errors.
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import type { DescService } from "@bufbuild/protobuf";
import { authInterceptor, Session, type Credentials } from "./auth.js";
import { idempotencyInterceptor } from "./idempotency.js";
import { TradingError } from "./errors.js";
import type { LoginResponse } from "./gen/trading/identity/v1/identity_service_pb.js";
import { AnalyticsService } from "./gen/trading/analytics/v1/analytics_service_pb.js";
import { AuditService } from "./gen/trading/audit/v1/audit_service_pb.js";
import { DecisionService } from "./gen/trading/decision/v1/decision_service_pb.js";
import { ExecutionService } from "./gen/trading/execution/v1/execution_service_pb.js";
import { FeaturesService } from "./gen/trading/features/v1/features_service_pb.js";
import { IdentityService } from "./gen/trading/identity/v1/identity_service_pb.js";
import { MarketDataService } from "./gen/trading/marketdata/v1/marketdata_service_pb.js";
import { NotificationService } from "./gen/trading/notification/v1/notification_service_pb.js";
import { PortfolioService } from "./gen/trading/portfolio/v1/portfolio_service_pb.js";
import { RiskService } from "./gen/trading/risk/v1/risk_service_pb.js";

export interface TradingClientOptions {
  /** The edge, e.g. "https://127.0.0.1:8443". */
  baseUrl: string;
  /** PEM of the CA that signed the edge's certificate (the platform's local CA in development). */
  ca: string | Buffer;
  /** Authenticate every call with this API key instead of a login. */
  apiKey?: string;
  /** Refresh the access token when it expires within this many ms (default 30 s). */
  refreshMarginMs?: number;
  /** Further interceptors, run inside the SDK's (they see the credentials and keys it added). */
  interceptors?: Interceptor[];
}

export interface TradingClient {
  analytics: Client<typeof AnalyticsService>;
  audit: Client<typeof AuditService>;
  decision: Client<typeof DecisionService>;
  execution: Client<typeof ExecutionService>;
  features: Client<typeof FeaturesService>;
  identity: Client<typeof IdentityService>;
  marketdata: Client<typeof MarketDataService>;
  notification: Client<typeof NotificationService>;
  portfolio: Client<typeof PortfolioService>;
  risk: Client<typeof RiskService>;
  /** Logs in; later calls carry the session's access token, refreshed as needed. */
  login(credentials: Credentials): Promise<LoginResponse>;
  /** Revokes the session's refresh token (IdentityService.Logout) and forgets the tokens. */
  logout(): Promise<void>;
  /** The login session (tokens, `refresh()`). */
  session: Session;
  /** Closes the HTTP/2 connection; calls in flight fail. */
  close(): void;
}

export function createTradingClient(options: TradingClientOptions): TradingClient {
  // One HTTP/2 session for every service, kept so that close() can end it.
  const sessionManager = new Http2SessionManager(options.baseUrl, undefined, { ca: options.ca });
  const transport = (interceptors: Interceptor[]) =>
    createGrpcTransport({ baseUrl: options.baseUrl, sessionManager, interceptors });
  // The session's own Login/RefreshToken calls go through a transport without
  // the auth interceptor, which would otherwise wait on the refresh it is making.
  const session = new Session(
    withTypedErrors(createClient(IdentityService, transport([]))),
    options.refreshMarginMs ?? 30_000,
  );
  // First is outermost: credentials and the key are set once, before any retry.
  const authed = transport([
    authInterceptor(options.apiKey, session),
    idempotencyInterceptor(),
    ...(options.interceptors ?? []),
  ]);
  const client = <S extends DescService>(service: S): Client<S> => withTypedErrors(createClient(service, authed));
  const identity = client(IdentityService);
  return {
    analytics: client(AnalyticsService),
    audit: client(AuditService),
    decision: client(DecisionService),
    execution: client(ExecutionService),
    features: client(FeaturesService),
    identity,
    marketdata: client(MarketDataService),
    notification: client(NotificationService),
    portfolio: client(PortfolioService),
    risk: client(RiskService),
    login: (credentials) => session.login(credentials),
    async logout() {
      const refreshToken = session.refreshToken;
      if (refreshToken !== undefined) {
        await identity.logout({ refreshToken });
      }
      session.clear();
    },
    session,
    close: () => sessionManager.abort(),
  };
}

/**
 * The same client, with every failure thrown as a TradingError. This wraps
 * the client rather than running as an interceptor because Connect
 * re-wraps whatever an interceptor throws into a plain ConnectError.
 */
function withTypedErrors<S extends DescService>(client: Client<S>): Client<S> {
  const wrapped: Record<string, unknown> = {};
  for (const [name, call] of Object.entries(client as Record<string, (...args: unknown[]) => unknown>)) {
    wrapped[name] = (...args: unknown[]) => {
      const result = call(...args);
      return result instanceof Promise ? result.catch(rethrow) : typedStream(result as AsyncIterable<unknown>);
    };
  }
  return wrapped as Client<S>;
}

function rethrow(error: unknown): never {
  throw TradingError.from(error);
}

async function* typedStream<T>(stream: AsyncIterable<T>): AsyncGenerator<T> {
  try {
    yield* stream;
  } catch (error) {
    rethrow(error);
  }
}
