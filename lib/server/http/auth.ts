/**
 * Optional bearer-token check (`sd-trt serve --token`). The comparison runs on SHA-256 digests
 * with `timingSafeEqual`, so neither the token's content nor its length leaks through timing.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { HttpError } from "./errors.js";

const digest = (text: string) => createHash("sha256").update(text, "utf8").digest();

export class BearerAuth {
  readonly #expected: Buffer;

  constructor(token: string) {
    this.#expected = digest(token);
  }

  /** Throws 401 unless the request carries `Authorization: Bearer <token>`. */
  check(request: IncomingMessage): void {
    const header = request.headers.authorization;
    const match = typeof header === "string" ? /^Bearer\s+(.+)$/i.exec(header.trim()) : null;
    if (!match || !timingSafeEqual(digest(match[1]!), this.#expected)) {
      throw new HttpError(
        401,
        "Unauthorized",
        header === undefined
          ? "this server requires an Authorization: Bearer <token> header"
          : "the bearer token in the Authorization header is not the one this server was started with",
        { field: "Authorization", headers: { "WWW-Authenticate": 'Bearer realm="sd-trt"' } },
      );
    }
  }
}
