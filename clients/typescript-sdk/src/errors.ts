// Typed errors. The edge reports failures as standard gRPC status codes with
// a google.rpc.Status in the `grpc-status-details-bin` trailer; Connect
// decodes that trailer into ConnectError.details, and TradingError names the
// details callers act on, so nobody has to decode Any messages by hand.
import { Code, ConnectError } from "@connectrpc/connect";
import { durationMs } from "@bufbuild/protobuf/wkt";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  RequestInfoSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";

/** One invalid field of a request (google.rpc.BadRequest.FieldViolation). */
export interface FieldViolation {
  /** Path of the field, e.g. "quantity" or "quantity.value". */
  field: string;
  description: string;
  /** Machine-readable rule id, when the server sent one. */
  reason: string;
}

export class TradingError extends ConnectError {
  /** ErrorInfo.reason: stable, machine-readable, e.g. "RISK_MAX_NOTIONAL_EXCEEDED" ("" if none). */
  readonly reason: string;
  /** ErrorInfo.domain: who defines `reason`, e.g. "trading.risk" ("" if none). */
  readonly domain: string;
  /**
   * ErrorInfo.metadata. (`metadata`, inherited from ConnectError, is the
   * call's response headers and trailers.)
   */
  readonly infoMetadata: Readonly<Record<string, string>>;
  /** BadRequest.field_violations: what to fix in the request. */
  readonly fieldViolations: readonly FieldViolation[];
  /** RetryInfo.retry_delay in milliseconds: wait at least this long before retrying. */
  readonly retryAfterMs: number | undefined;
  /** RequestInfo.request_id: quote it when asking the operators about this call. */
  readonly requestId: string | undefined;

  constructor(error: ConnectError) {
    super(error.rawMessage, error.code, error.metadata, undefined, error);
    this.name = "TradingError";
    // Keep the incoming details, so findDetails() works for any other type too.
    this.details = error.details;
    const info = error.findDetails(ErrorInfoSchema)[0];
    this.reason = info?.reason ?? "";
    this.domain = info?.domain ?? "";
    this.infoMetadata = { ...info?.metadata };
    this.fieldViolations = error
      .findDetails(BadRequestSchema)
      .flatMap((bad) => bad.fieldViolations)
      .map((v) => ({ field: v.field, description: v.description, reason: v.reason }));
    const delay = error.findDetails(RetryInfoSchema)[0]?.retryDelay;
    this.retryAfterMs = delay === undefined ? undefined : durationMs(delay);
    this.requestId = error.findDetails(RequestInfoSchema)[0]?.requestId || undefined;
  }

  /** Any thrown value as a TradingError (transport failures become Unknown/Unavailable/...). */
  static override from(reason: unknown): TradingError {
    return reason instanceof TradingError ? reason : new TradingError(ConnectError.from(reason));
  }

  // ConnectError's instanceof test is structural and only accepts the name
  // "ConnectError" or its exact prototype (it must work across copies of the
  // library), and a subclass inherits that test: without this override every
  // plain ConnectError would pass `instanceof TradingError`, and no
  // TradingError would. Here the prototype chain decides.
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === "object" && value !== null && Object.prototype.isPrototypeOf.call(TradingError.prototype, value);
  }
}

export { Code };
