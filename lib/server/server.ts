/**
 * `sd-trt serve`: an HTTP server speaking the A1111 API over a PipelineService.
 *
 * Built on node:http alone: the API is a handful of JSON endpoints, and what a framework would
 * add (routing, body parsing) is a few dozen lines here, while the parts that matter for a
 * service — body size limits enforced while streaming, cancellation when a client disconnects,
 * graceful shutdown — need direct access to the sockets anyway.
 *
 * Endpoints:
 * - `POST /sdapi/v1/txt2img`, `POST /sdapi/v1/img2img`: A1111 generation (see a1111/handlers.ts).
 * - `GET /sdapi/v1/samplers`, `GET /sdapi/v1/schedulers`, `GET /sdapi/v1/sd-models`: what can be asked for.
 * - `GET /sdapi/v1/progress`, `POST /sdapi/v1/interrupt`: A1111's progress and interrupt.
 * - `GET`/`POST /sdapi/v1/options`: the A1111 settings the server honours (a1111/settings.ts).
 * - `GET /sdapi/v1/embeddings`: the textual-inversion embeddings loaded (`--embeddings-dir`).
 * - `GET /sdapi/v1/loras`: the LoRAs of `--lora-dir` as A1111 lists them (name, alias, path, metadata).
 * - `GET /health`: liveness, queue counters and memory (never needs the token).
 * - `GET /internal/ping`: A1111's liveness probe (never needs the token).
 * - `GET /`: the web page (web.ts); its API calls need the token like any other.
 *
 * Errors are JSON `{error, detail, field?}` (http/errors.ts). With a token, every `/sdapi/` call
 * needs `Authorization: Bearer <token>` and gets 401 without it.
 *
 * Shutdown (`close`): stop accepting connections, let in-flight requests finish for up to the
 * drain timeout, then cancel what is left (their clients get a 503 "shutting down"), and close
 * every socket.
 */
import type { LoraEntry } from "../convert/lora/library.js";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { AbortError, BusyError, InvalidOptionError, OutOfMemoryError, QueueUnavailableError, SdTrtError, ServiceClosedError } from "../errors.js";
import { packageVersion } from "../package-info.js";
import type { GenerationService } from "../service/generation-service.js";
import { a1111ProgressResponse, handleA1111Generation } from "./a1111/handlers.js";
import { a1111FieldFor } from "./a1111/request.js";
import { a1111SamplerList, a1111ScheduleTypeList } from "./a1111/samplers.js";
import { applyA1111Settings, defaultA1111Settings, type A1111Settings } from "./a1111/settings.js";
import { parseJsonObject, readBody } from "./http/body.js";
import { BearerAuth } from "./http/auth.js";
import { HttpError } from "./http/errors.js";
import { sendError, sendJson } from "./http/respond.js";
import { type RouteContext, Router } from "./http/router.js";
import { addWebRoutes } from "./web.js";

/** Default request body limit: room for a few base64 init images of SD sizes. */
export const DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024;

/** Defaults of the connection limits (see `SdServerOptions`). */
export const DEFAULT_HEADERS_TIMEOUT_MS = 10_000;
export const DEFAULT_REQUEST_TIMEOUT_MS = 60_000;
export const DEFAULT_KEEP_ALIVE_TIMEOUT_MS = 5_000;
export const DEFAULT_MAX_CONNECTIONS = 1024;

export interface SdServerOptions {
  /** What runs generations: a PipelineService, or a fleet front end (lib/fleet). Closed and disposed with the server unless `ownService` is false. */
  service: GenerationService;
  /** Bearer token required on `/sdapi/` endpoints. Defaults to none (open on loopback). */
  token?: string;
  /** Largest request body in bytes; larger bodies get 413. Defaults to 32 MiB. */
  maxBodyBytes?: number;
  /** Close the service when the server closes. Defaults to true. */
  ownService?: boolean;
  /** Where to write one line per request and lifecycle events. Defaults to nothing. */
  log?: (line: string) => void;
  /**
   * Time a client gets to send the request headers; a connection that has not sent them by then
   * is answered 408 and closed. Defaults to 10 000 ms.
   */
  headersTimeoutMs?: number;
  /** Time a client gets to send the whole request (headers and body); then 408. Defaults to 60 000 ms. */
  requestTimeoutMs?: number;
  /** How long an idle keep-alive connection is kept open. Defaults to 5000 ms. */
  keepAliveTimeoutMs?: number;
  /** Most open connections; further ones are closed at once. Defaults to 1024. */
  maxConnections?: number;
  /** The LoRAs `<lora:NAME:SCALE>` prompt tags can name (`--lora-dir`), for `GET /sdapi/v1/loras`. Defaults to none. */
  loras?: readonly LoraEntry[];
}

export interface ListenOptions {
  /** Interface to bind. Defaults to 127.0.0.1 (loopback only). */
  host?: string;
  /** Port; 0 picks a free one. Defaults to 7860 (A1111's). */
  port?: number;
}

export class SdServer {
  readonly #http: Server;
  readonly #service: GenerationService;
  readonly #auth: BearerAuth | null;
  readonly #maxBody: number;
  readonly #ownService: boolean;
  readonly #log: (line: string) => void;
  readonly #router = new Router();
  readonly #inFlight = new Set<Promise<void>>();
  /** Aborted when shutdown gives up waiting: cancels every request still being handled. */
  readonly #shutdown = new AbortController();
  /**
   * One per request being handled, aborted with the shutdown. Kept here rather than as listeners
   * on the shutdown signal: a long-lived signal with one listener per in-flight request trips
   * Node's MaxListenersExceededWarning from 11 concurrent requests on.
   */
  readonly #requestControllers = new Set<AbortController>();
  #closing: Promise<void> | null = null;
  /** Ends the drain wait of a running `close` early (`closeNow`). */
  #endDrain: (() => void) | null = null;
  /** A1111's settings this server honours (`/sdapi/v1/options`); requests' override_settings apply on top. */
  #settings: A1111Settings;
  readonly #loras: readonly LoraEntry[];

  constructor(options: SdServerOptions) {
    this.#service = options.service;
    this.#auth = options.token ? new BearerAuth(options.token) : null;
    this.#maxBody = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    this.#ownService = options.ownService ?? true;
    this.#log = options.log ?? (() => {});
    this.#settings = defaultA1111Settings(this.#service.modelName);
    this.#loras = options.loras ?? [];
    // Without these limits a client that opens connections and sends half a request keeps each
    // one forever, until the process runs out of file descriptors. The timeouts bound the time
    // to receive a request, not the time to answer it (a generation can take minutes).
    const headersTimeout = options.headersTimeoutMs ?? DEFAULT_HEADERS_TIMEOUT_MS;
    const requestTimeout = Math.max(options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS, headersTimeout);
    this.#http = createServer(
      {
        headersTimeout,
        requestTimeout,
        keepAliveTimeout: options.keepAliveTimeoutMs ?? DEFAULT_KEEP_ALIVE_TIMEOUT_MS,
        // How often node checks the two timeouts above (its default, 30 s, would let a slow
        // client keep its connection up to 30 s past its deadline).
        connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(headersTimeout / 4))),
      },
      (request, response) => this.#handle(request, response),
    );
    this.#http.maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    this.#addRoutes();
  }

  /** The underlying node:http server. */
  get http(): Server {
    return this.#http;
  }

  get service(): GenerationService {
    return this.#service;
  }

  /** Starts listening; resolves with the bound address. */
  listen(options: ListenOptions = {}): Promise<{ host: string; port: number; url: string }> {
    const host = options.host ?? "127.0.0.1";
    const port = options.port ?? 7860;
    return new Promise((resolve, reject) => {
      const onError = (error: Error) => reject(listenError(error, host, port));
      this.#http.once("error", onError);
      this.#http.listen(port, host, () => {
        this.#http.off("error", onError);
        const address = this.#http.address() as AddressInfo;
        const shown = address.family === "IPv6" ? `[${address.address}]` : address.address;
        resolve({ host: address.address, port: address.port, url: `http://${shown}:${address.port}` });
      });
    });
  }

  /**
   * Graceful shutdown: stops accepting, lets in-flight requests finish for up to `drainMs`,
   * then cancels the rest and closes every connection. Idempotent.
   */
  close(drainMs = 10_000): Promise<void> {
    this.#closing ??= this.#close(drainMs);
    return this.#closing;
  }

  /**
   * Shutdown without the drain: cancels every request still being handled (each client gets a
   * 503 "shutting down"), waits for the backend to stop at its next safe point (the evaluation
   * in progress), closes every connection and disposes the service. Works during a `close` too.
   */
  closeNow(): Promise<void> {
    const closing = this.close(0);
    this.#endDrain?.();
    return closing;
  }

  async #close(drainMs: number): Promise<void> {
    this.#log("shutting down: no new connections; finishing in-flight requests");
    const stopped = new Promise<void>((resolve) => this.#http.close(() => resolve()));
    this.#http.closeIdleConnections();
    const deadline = Date.now() + drainMs;
    // The service drains its queue within the same deadline, then cancels what is left.
    const serviceClosed = this.#service.close(drainMs);
    const drained = Promise.all([...this.#inFlight]).then(() => true);
    let timer: NodeJS.Timeout | undefined;
    let cutShort = false;
    const timedOut = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), Math.max(0, deadline - Date.now()));
      this.#endDrain = () => {
        cutShort = true;
        resolve(false);
      };
    });
    const finished = await Promise.race([drained, timedOut]);
    clearTimeout(timer);
    if (!finished) {
      this.#log(`${cutShort ? "closing now" : "drain timeout"}: cancelling the requests still running`);
      this.#shutdown.abort(new AbortError("the server is shutting down"));
      for (const controller of this.#requestControllers) controller.abort(this.#shutdown.signal.reason);
    }
    await serviceClosed;
    await Promise.all([...this.#inFlight]);
    this.#http.closeAllConnections();
    await stopped;
    if (this.#ownService) await this.#service.dispose();
  }

  #addRoutes(): void {
    const service = this.#service;
    const loras = this.#loras.map((e) => ({ name: e.name, alias: e.alias, path: e.path, metadata: e.metadata }));
    this.#router
      .add({ method: "GET", path: "/health", auth: false, handler: ({ response }) => sendJson(response, 200, this.#health()) })
      .add({ method: "GET", path: "/internal/ping", auth: false, handler: ({ response }) => sendJson(response, 200, {}) })
      .add({ method: "GET", path: "/sdapi/v1/samplers", auth: true, handler: ({ response }) => sendJson(response, 200, a1111SamplerList()) })
      .add({ method: "GET", path: "/sdapi/v1/schedulers", auth: true, handler: ({ response }) => sendJson(response, 200, a1111ScheduleTypeList()) })
      .add({
        method: "GET",
        path: "/sdapi/v1/sd-models",
        auth: true,
        handler: ({ response }) =>
          sendJson(response, 200, [
            { title: service.modelName, model_name: service.modelName, hash: service.modelHash ?? null, sha256: null, filename: service.modelDir, config: null },
          ]),
      })
      .add({ method: "GET", path: "/sdapi/v1/options", auth: true, handler: ({ response }) => sendJson(response, 200, this.#settings) })
      .add({
        method: "POST",
        path: "/sdapi/v1/options",
        auth: true,
        // All or nothing: a key that cannot be honoured is a 422 and changes nothing.
        handler: async ({ request, response }) => {
          this.#settings = applyA1111Settings(this.#settings, parseJsonObject(await readBody(request, this.#maxBody)), "");
          sendJson(response, 200, null);
        },
      })
      .add({ method: "GET", path: "/sdapi/v1/embeddings", auth: true, handler: ({ response }) => sendJson(response, 200, a1111Embeddings(this.#service)) })
      .add({ method: "GET", path: "/sdapi/v1/loras", auth: true, handler: ({ response }) => sendJson(response, 200, loras) })
      .add({ method: "GET", path: "/sdapi/v1/progress", auth: true, handler: ({ response }) => sendJson(response, 200, a1111ProgressResponse(service)) })
      // A1111's skip moves on to the next image of a job; a batch here is one job, so it interrupts.
      .add({ method: "POST", path: "/sdapi/v1/interrupt", auth: true, handler: ({ response }) => this.#interrupt(response) })
      .add({ method: "POST", path: "/sdapi/v1/skip", auth: true, handler: ({ response }) => this.#interrupt(response) })
      .add({ method: "POST", path: "/sdapi/v1/txt2img", auth: true, handler: (context) => handleA1111Generation("txt2img", context, this.#generationContext()) })
      .add({ method: "POST", path: "/sdapi/v1/img2img", auth: true, handler: (context) => handleA1111Generation("img2img", context, this.#generationContext()) });
    addWebRoutes(this.#router);
  }

  #interrupt(response: ServerResponse): void {
    this.#service.interrupt();
    sendJson(response, 200, {});
  }

  #generationContext() {
    return { service: this.#service, maxBodyBytes: this.#maxBody, settings: this.#settings };
  }

  #health() {
    const memory = process.memoryUsage();
    return {
      status: this.#closing ? "shutting-down" : "ok",
      version: packageVersion(),
      model: this.#service.modelName,
      backend: this.#service.backendName,
      counters: this.#service.counters(),
      ...this.#service.status(),
      memory: { rss: memory.rss, heapUsed: memory.heapUsed, external: memory.external, arrayBuffers: memory.arrayBuffers },
      uptimeSeconds: process.uptime(),
    };
  }

  #handle(request: IncomingMessage, response: ServerResponse): void {
    const started = performance.now();
    const controller = new AbortController();
    // The client went away before the response was complete: cancel its work.
    const onClose = () => {
      if (!response.writableFinished) controller.abort(new AbortError("the client closed the connection"));
    };
    // Shutdown gave up waiting: it cancels this request too (#requestControllers).
    if (this.#shutdown.signal.aborted) controller.abort(this.#shutdown.signal.reason);
    this.#requestControllers.add(controller);
    response.on("close", onClose);
    const work = this.#dispatch(request, response, controller.signal)
      .catch((error: unknown) => this.#fail(response, error))
      .finally(() => {
        this.#inFlight.delete(work);
        response.off("close", onClose);
        this.#requestControllers.delete(controller);
        // A client that left before its answer was sent got nothing: log 499 (nginx's "client
        // closed request"), not the 200 the response object defaults to.
        const status = response.writableFinished ? String(response.statusCode) : "499 (client closed the connection)";
        this.#log(`${request.method} ${request.url} ${status} ${(performance.now() - started).toFixed(1)}ms`);
      });
    this.#inFlight.add(work);
  }

  async #dispatch(request: IncomingMessage, response: ServerResponse, signal: AbortSignal): Promise<void> {
    const url = new URL(request.url ?? "/", "http://localhost");
    const route = this.#router.find(request.method ?? "GET", url.pathname);
    if (route.auth && this.#auth) this.#auth.check(request);
    if (this.#closing && route.path.startsWith("/sdapi/v1/") && route.method === "POST" && route.path !== "/sdapi/v1/interrupt") {
      throw new HttpError(503, "ShuttingDown", "the server is shutting down and accepts no new work", { headers: { Connection: "close" } });
    }
    // While shutting down, keep-alive connections are not kept for further requests.
    if (this.#closing) response.setHeader("Connection", "close");
    const context: RouteContext = { request, response, url, signal };
    await route.handler(context);
  }

  #fail(response: ServerResponse, error: unknown): void {
    // Cancelled because the server is going down: the client should retry elsewhere or later.
    const shutdown = this.#closing !== null && (error instanceof AbortError || (error instanceof Error && error.name === "AbortError"));
    const httpError = shutdown
      ? new HttpError(503, "ShuttingDown", "the server is shutting down; the request was cancelled", { headers: { Connection: "close" } })
      : toHttpError(error);
    if (httpError.status >= 500 && !(error instanceof BusyError) && !(error instanceof ServiceClosedError) && !(error instanceof AbortError) && !(error instanceof QueueUnavailableError)) {
      this.#log(`error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    }
    // After a 413 the rest of the body is unread: close the connection instead of draining it.
    const close: Record<string, string> = httpError.status === 413 ? { Connection: "close" } : {};
    sendError(response, httpError, close);
    if (httpError.status === 413) response.once("finish", () => response.socket?.destroy());
  }
}

/** Whether `host` names this machine only (a loopback address or localhost). */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  return h === "localhost" || h === "::1" || /^127(\.\d{1,3}){3}$/.test(h) || h === "::ffff:127.0.0.1";
}

/**
 * Why the server cannot listen on `host:port`, as one line saying what to do: InvalidOptionError
 * (naming --host or --port) for a host that does not resolve or is not this machine's, and
 * for a port that needs privileges; SdTrtError for a port in use.
 */
export function listenError(error: unknown, host: string, port: number): Error {
  const code = (error as NodeJS.ErrnoException)?.code;
  switch (code) {
    case "EADDRINUSE":
      return new SdTrtError("ERR_PORT_IN_USE", `port ${port} on ${host} is already in use (another server?); stop it, or pick another with --port (--port 0 picks a free one)`, { cause: error });
    case "EACCES":
      return new InvalidOptionError("port", `--port ${port}: binding it needs privileges on this machine; use a port from 1024 up`);
    case "ENOTFOUND":
    case "EAI_AGAIN":
    case "EAI_FAIL":
    case "EAI_NONAME":
      return new InvalidOptionError("host", `--host ${host} does not resolve to an address; give an IP address or a name this machine can resolve (127.0.0.1 for this machine only)`);
    case "EADDRNOTAVAIL":
    case "EINVAL":
      return new InvalidOptionError("host", `--host ${host} is not an address of this machine; use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)`);
    default:
      return error instanceof Error ? new SdTrtError("ERR_LISTEN", `cannot listen on ${host}:${port}: ${error.message}`, { cause: error }) : new SdTrtError("ERR_LISTEN", `cannot listen on ${host}:${port}: ${String(error)}`);
  }
}

/** Maps library errors to HTTP: validation 422 naming the field, busy 503, cancelled 499-ish. */
export function toHttpError(error: unknown): HttpError {
  if (error instanceof HttpError) return error;
  if (error instanceof InvalidOptionError) {
    const field = a1111FieldFor(error.option);
    // The library's message starts with its option name (then the client's field replaces it);
    // otherwise the client needs the field it sent ("hires.scale" → "hr_scale").
    const detail = error.message.startsWith(error.option)
      ? field + error.message.slice(error.option.length)
      : error.message.includes(field)
        ? error.message
        : `${field}: ${error.message}`;
    return new HttpError(422, "InvalidField", detail, { field });
  }
  if (error instanceof BusyError) {
    return new HttpError(503, "Busy", error.message, { headers: { "Retry-After": "1" } });
  }
  if (error instanceof QueueUnavailableError) {
    // A fleet front end with no worker, or Redis away: as busy, worth retrying later.
    return new HttpError(503, "QueueUnavailable", error.message, { headers: { "Retry-After": "5" } });
  }
  if (error instanceof ServiceClosedError) {
    return new HttpError(503, "ShuttingDown", error.message, { headers: { Connection: "close" } });
  }
  if (error instanceof AbortError || (error instanceof Error && error.name === "AbortError")) {
    // A1111 would return the partial picture; we have none to return.
    return new HttpError(409, "Interrupted", error.message);
  }
  if (error instanceof OutOfMemoryError) return new HttpError(507, "OutOfMemory", error.message);
  if (error instanceof SdTrtError) return new HttpError(500, error.code, error.message);
  return new HttpError(500, "InternalError", error instanceof Error ? error.message : String(error));
}

/**
 * A1111's EmbeddingsResponse: every loaded embedding by name with its step, checkpoint, width
 * (`shape`) and vector count. A .safetensors embedding carries no step or checkpoint (A1111 reads
 * them from a pickle's dict only), so those are null. `skipped` is always empty: a file A1111
 * would skip (another width) fails the load here.
 */
function a1111Embeddings(service: GenerationService) {
  const width = service.limits.tokenVectorWidth ?? null;
  const loaded = Object.fromEntries(
    (service.embeddings?.() ?? []).map((e) => [e.name, { step: null, sd_checkpoint: null, sd_checkpoint_name: null, shape: width, vectors: e.count }]),
  );
  return { loaded, skipped: {} };
}
