/**
 * Reads a request body with a size limit and parses it as JSON. The limit is enforced twice:
 * up front from `Content-Length`, and while streaming (chunked uploads have no length), so a
 * client can never make the server buffer more than `maxBytes`.
 */
import type { IncomingMessage } from "node:http";
import { HttpError } from "./errors.js";

export function payloadTooLarge(maxBytes: number, received: string): HttpError {
  return new HttpError(413, "PayloadTooLarge", `the request body must be at most ${maxBytes} bytes, got ${received}`);
}

/** Reads the whole body into one Buffer, failing with 413 as soon as it passes `maxBytes`. */
export function readBody(request: IncomingMessage, maxBytes: number): Promise<Buffer> {
  const declared = request.headers["content-length"];
  if (declared !== undefined && Number(declared) > maxBytes) {
    return Promise.reject(payloadTooLarge(maxBytes, `${declared} bytes (Content-Length)`));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (error: Error | null, value?: Buffer) => {
      if (done) return;
      done = true;
      request.off("data", onData);
      request.off("end", onEnd);
      request.off("error", onError);
      request.off("close", onClose);
      if (error) reject(error);
      else resolve(value!);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        // Stop buffering; the caller answers 413 and closes the connection.
        request.pause();
        finish(payloadTooLarge(maxBytes, `more than that (${size} bytes so far)`));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => finish(null, Buffer.concat(chunks, size));
    const onError = (error: Error) => finish(error);
    const onClose = () => finish(new HttpError(400, "IncompleteBody", "the client closed the connection before the body was complete"));
    request.on("data", onData);
    request.on("end", onEnd);
    request.on("error", onError);
    request.on("close", onClose);
  });
}

/** Parses a JSON object body; anything else (bad JSON, an array, a number) is a 400. */
export function parseJsonObject(body: Buffer): Record<string, unknown> {
  const text = body.toString("utf8");
  if (text.trim() === "") throw new HttpError(400, "MalformedJson", "the request body is empty; expected a JSON object");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new HttpError(400, "MalformedJson", `the request body is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    const kind = value === null ? "null" : Array.isArray(value) ? "an array" : typeof value;
    throw new HttpError(400, "MalformedJson", `the request body must be a JSON object, got ${kind}`);
  }
  return value as Record<string, unknown>;
}
