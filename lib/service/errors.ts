/** Errors of the service layer, typed like the rest of the library (see lib/errors.ts). */
import { SdTrtError } from "../errors.js";

/**
 * The service's queue is full: the request was refused instead of waiting without limit. Retry
 * later (the HTTP server answers 503 with `Retry-After`).
 */
export class BusyError extends SdTrtError {
  /** Requests waiting when this one was refused. */
  readonly queued: number;
  /** The queue's bound (`maxQueue`). */
  readonly maxQueue: number;
  constructor(queued: number, maxQueue: number, asked = 1) {
    super(
      "ERR_BUSY",
      `the service is busy: ${queued} request(s) are already waiting and the queue holds at most ${maxQueue}` +
        (asked > 1 ? ` (this request needs ${asked} places)` : "") +
        "; retry later",
    );
    this.queued = queued;
    this.maxQueue = maxQueue;
  }
}

/** The service is shutting down (or shut down) and takes no new requests. */
export class ServiceClosedError extends SdTrtError {
  constructor() {
    super("ERR_SERVICE_CLOSED", "the service is shutting down and accepts no new requests");
  }
}
