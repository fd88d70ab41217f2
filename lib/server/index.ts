/** The A1111-compatible HTTP server (`sd-trt serve`). */
export { DEFAULT_MAX_BODY_BYTES, SdServer, type ListenOptions, type SdServerOptions } from "./server.js";
export type { ErrorBody } from "./http/errors.js";
