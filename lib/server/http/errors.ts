/**
 * HTTP errors of the server. Every error response has the same JSON shape,
 * `{error, detail, field?}`: `error` is a stable short name a client can branch on, `detail` a
 * sentence for people, and `field` the request field at fault (dotted path, e.g.
 * `override_settings.sd_vae`) when there is one.
 */
export interface ErrorBody {
  /** Stable short name: `InvalidField`, `MalformedJson`, `PayloadTooLarge`, `Unauthorized`, … */
  error: string;
  /** A human-readable explanation naming the field, the allowed values and what was received. */
  detail: string;
  /** The request field at fault, when there is one. */
  field?: string;
}

export class HttpError extends Error {
  readonly status: number;
  readonly error: string;
  readonly field?: string;
  /** Extra response headers (`Retry-After`, `WWW-Authenticate`, …). */
  readonly headers: Record<string, string>;

  constructor(status: number, error: string, detail: string, options: { field?: string; headers?: Record<string, string> } = {}) {
    super(detail);
    this.name = "HttpError";
    this.status = status;
    this.error = error;
    this.field = options.field;
    this.headers = options.headers ?? {};
  }

  get body(): ErrorBody {
    return this.field === undefined
      ? { error: this.error, detail: this.message }
      : { error: this.error, detail: this.message, field: this.field };
  }
}

/** 422: a field has a wrong type or a value we cannot accept (FastAPI, and so A1111, use 422). */
export function invalidField(field: string, detail: string): HttpError {
  return new HttpError(422, "InvalidField", detail, { field });
}
