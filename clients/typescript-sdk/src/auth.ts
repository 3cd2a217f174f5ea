// Credentials on every call: an API key, or the access token of a login
// session that is refreshed before it expires.
import type { Client, Interceptor } from "@connectrpc/connect";
import { getOption, type DescMethod } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { method as methodPolicy } from "./gen/trading/common/v1/options_pb.js";
import type {
  AuthTokens,
  IdentityService,
  LoginResponse,
} from "./gen/trading/identity/v1/identity_service_pb.js";

export interface Credentials {
  tenantSlug: string;
  email: string;
  password: string;
}

/**
 * Tokens of one login. Access tokens live minutes, so the session exchanges
 * its refresh token for a new pair shortly before the access token expires
 * (or whenever asked to with `refresh()`).
 */
export class Session {
  private tokens: AuthTokens | undefined;
  private refreshing: Promise<void> | undefined;

  /**
   * @param identity an IdentityService client that adds no credentials
   *   (Login and RefreshToken are public; the session must not call itself).
   * @param refreshMarginMs refresh when the access token expires within this.
   */
  constructor(
    private readonly identity: Client<typeof IdentityService>,
    private readonly refreshMarginMs: number,
  ) {}

  async login(credentials: Credentials): Promise<LoginResponse> {
    const response = await this.identity.login(credentials);
    this.tokens = response.tokens;
    return response;
  }

  /** Forgets the tokens (does not revoke them; IdentityService.Logout does). */
  clear(): void {
    this.tokens = undefined;
  }

  get loggedIn(): boolean {
    return this.tokens !== undefined;
  }

  /** The refresh token of the current pair (for Logout). */
  get refreshToken(): string | undefined {
    return this.tokens?.refreshToken;
  }

  /** A valid access token, refreshed first when it is about to expire. */
  async accessToken(): Promise<string | undefined> {
    const tokens = this.tokens;
    if (tokens === undefined) {
      return undefined;
    }
    const expiresAt = tokens.accessTokenExpiresAt ? timestampMs(tokens.accessTokenExpiresAt) : Infinity;
    if (expiresAt - Date.now() <= this.refreshMarginMs) {
      await this.refresh();
    }
    return this.tokens?.accessToken;
  }

  /**
   * Rotates the token pair. Concurrent callers share one RefreshToken call:
   * the server consumes a refresh token when it is presented, and a second
   * presentation of the same token is treated as theft and revokes the whole
   * login session, so two parallel refreshes would log us out.
   */
  refresh(): Promise<void> {
    const refreshToken = this.tokens?.refreshToken;
    if (refreshToken === undefined) {
      return Promise.reject(new Error("not logged in"));
    }
    this.refreshing ??= this.identity
      .refreshToken({ refreshToken })
      .then((response) => {
        this.tokens = response.tokens;
      })
      .finally(() => {
        this.refreshing = undefined;
      });
    return this.refreshing;
  }
}

/** RPCs the contract marks public (Login, RefreshToken, GetJwks): sent without credentials. */
export function isPublic(method: DescMethod): boolean {
  return getOption(method, methodPolicy).public;
}

/**
 * Adds `x-api-key` when the client has an API key, else `authorization:
 * Bearer <access token>` when the session is logged in. Headers the caller
 * set explicitly win; public RPCs get nothing (an expired token must not
 * make a Login fail).
 */
export function authInterceptor(apiKey: string | undefined, session: Session): Interceptor {
  return (next) => async (req) => {
    if (!isPublic(req.method) && !req.header.has("authorization") && !req.header.has("x-api-key")) {
      if (apiKey !== undefined) {
        req.header.set("x-api-key", apiKey);
      } else {
        const token = await session.accessToken();
        if (token !== undefined) {
          req.header.set("authorization", `Bearer ${token}`);
        }
      }
    }
    return next(req);
  };
}
