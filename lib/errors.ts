/**
 * Typed errors. Every error the library throws on purpose is an `SdTrtError` with a stable
 * `code`, so callers (and the CLI) can branch on it without parsing messages.
 */
export class SdTrtError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** An option has a value outside what is allowed. The message names the option and the limit. */
export class InvalidOptionError extends SdTrtError {
  readonly option: string;
  constructor(option: string, message: string) {
    super("ERR_INVALID_OPTION", message);
    this.option = option;
  }
}

/** A generation ran out of memory; what it allocated has been released. */
export class OutOfMemoryError extends SdTrtError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("ERR_OUT_OF_MEMORY", message, options);
  }
}

/** A model, vocabulary, engine or other file is missing, unreadable or malformed. */
export class ModelFileError extends SdTrtError {
  readonly file: string;
  constructor(file: string, message: string, options?: { cause?: unknown }) {
    super("ERR_MODEL_FILE", message, options);
    this.file = file;
  }
}

/** The operation was cancelled through an AbortSignal. */
export class AbortError extends SdTrtError {
  constructor(message = "The operation was aborted", options?: { cause?: unknown }) {
    super("ABORT_ERR", message, options);
  }
}

/** A call on an object whose `dispose()` already ran. */
export class DisposedError extends SdTrtError {
  constructor(what: string) {
    super("ERR_DISPOSED", `${what} is disposed`);
  }
}

/** A native (CUDA / TensorRT) failure, carrying the stage and the status name. */
export class NativeError extends SdTrtError {
  readonly stage: string;
  readonly status?: string;
  constructor(code: string, stage: string, message: string, status?: string) {
    super(code, message);
    this.stage = stage;
    this.status = status;
  }
}

/** Throws `signal.reason` (or an AbortError) when the signal is aborted. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) {
    const reason = signal.reason;
    if (reason instanceof Error) throw reason;
    throw new AbortError(typeof reason === "string" ? reason : undefined);
  }
}
