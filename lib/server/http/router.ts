/** A minimal exact-path router: one handler per method and path, 404 / 405 otherwise. */
import type { IncomingMessage, ServerResponse } from "node:http";
import { HttpError } from "./errors.js";

export interface RouteContext {
  request: IncomingMessage;
  response: ServerResponse;
  url: URL;
  /** Aborts when the client goes away before the response is complete, or the server stops. */
  signal: AbortSignal;
}

export type Handler = (context: RouteContext) => Promise<void> | void;

export interface Route {
  method: "GET" | "POST";
  path: string;
  /** Whether the bearer token (when the server has one) is required. */
  auth: boolean;
  handler: Handler;
}

export class Router {
  readonly #routes = new Map<string, Map<string, Route>>();

  add(route: Route): this {
    let byMethod = this.#routes.get(route.path);
    if (!byMethod) {
      byMethod = new Map();
      this.#routes.set(route.path, byMethod);
    }
    byMethod.set(route.method, route);
    return this;
  }

  /** The route for a request, or a 404/405 HttpError. HEAD is served by GET routes. */
  find(method: string, path: string): Route {
    const byMethod = this.#routes.get(path.length > 1 ? path.replace(/\/+$/, "") : path);
    if (!byMethod) throw new HttpError(404, "NotFound", `no endpoint at ${path}`);
    const route = byMethod.get(method === "HEAD" ? "GET" : method);
    if (!route) {
      const allowed = [...byMethod.keys()].join(", ");
      throw new HttpError(405, "MethodNotAllowed", `${path} accepts ${allowed}, not ${method}`, { headers: { Allow: allowed } });
    }
    return route;
  }
}
