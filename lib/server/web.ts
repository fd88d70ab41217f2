/**
 * The web page (`GET /`): prompt, parameters, progress, interrupt and a gallery, in plain
 * HTML/CSS and one browser module (web/, built into dist/web by `npm run build`). It calls only
 * the public A1111 endpoints, so it needs nothing from the server but these three files, and it
 * works in front of a fleet as well. The files hold no data: the token (when set) protects
 * every API call the page makes, and the page asks for it (web/app.ts).
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { ServerResponse } from "node:http";
import { packageRoot } from "../package-info.js";
import { HttpError } from "./http/errors.js";
import type { Router } from "./http/router.js";

const WEB_DIR = join(packageRoot, "dist", "web");

const FILES: ReadonlyArray<{ path: string; file: string; type: string }> = [
  { path: "/", file: "index.html", type: "text/html; charset=utf-8" },
  { path: "/web/app.js", file: "app.js", type: "text/javascript; charset=utf-8" },
  { path: "/web/style.css", file: "style.css", type: "text/css; charset=utf-8" },
];

/** Only our own script and style; images come back as data: URLs. */
const CONTENT_SECURITY_POLICY = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/** Read once: the files change only with a new build. */
const cache = new Map<string, Promise<Buffer>>();

async function send(response: ServerResponse, file: string, type: string): Promise<void> {
  let body = cache.get(file);
  if (!body) {
    body = readFile(join(WEB_DIR, file));
    cache.set(file, body);
    // A missing build is reported, and looked for again on the next request.
    body.catch(() => cache.delete(file));
  }
  let bytes: Buffer;
  try {
    bytes = await body;
  } catch {
    throw new HttpError(404, "NotBuilt", `the web page is not built (${join(WEB_DIR, file)} is missing): run npm run build`);
  }
  response.writeHead(200, {
    "Content-Type": type,
    "Content-Length": bytes.length,
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
  });
  response.end(bytes);
}

export function addWebRoutes(router: Router): void {
  for (const { path, file, type } of FILES) router.add({ method: "GET", path, auth: false, handler: ({ response }) => send(response, file, type) });
}
