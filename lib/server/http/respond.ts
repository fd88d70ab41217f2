/** Writing JSON responses, including the error shape of errors.ts. */
import type { ServerResponse } from "node:http";
import type { ErrorBody, HttpError } from "./errors.js";

export function sendJson(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (response.headersSent || response.destroyed) return;
  const text = JSON.stringify(body);
  response.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(text),
    ...headers,
  });
  response.end(text);
}

export function sendError(response: ServerResponse, error: HttpError, extraHeaders: Record<string, string> = {}): void {
  const body: ErrorBody = error.body;
  sendJson(response, error.status, body, { ...error.headers, ...extraHeaders });
}
