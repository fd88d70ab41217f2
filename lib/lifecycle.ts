/**
 * One lifecycle for every object that owns something to release (in the manner of
 * node-llama-cpp's `withLock` / `DisposeGuard`): calls run one at a time in the order they were
 * made, a disposed object refuses new calls with a `DisposedError`, and `dispose()` first lets the
 * calls it already accepted finish, then releases, exactly once.
 *
 * The dispose order of the library follows from who owns whom, each owner disposing what it owns
 * after its own calls have drained: service → pipeline → backend → native objects (engines,
 * contexts, the denoiser, the scratch buffer) or the ONNX Runtime worker.
 *
 * Promise-returning methods built on this never throw synchronously: a refused call is a
 * rejected promise.
 */
import { DisposedError } from "./errors.js";

export class Lifecycle {
  readonly #what: string;
  #tail: Promise<unknown> = Promise.resolve();
  #disposing: Promise<void> | null = null;

  /** @param what names the object in `DisposedError` messages ("Pipeline", "TensorRT backend"). */
  constructor(what: string) {
    this.#what = what;
  }

  /** True from the moment `dispose()` is called. */
  get disposed(): boolean {
    return this.#disposing !== null;
  }

  /** Throws a DisposedError once `dispose()` was called. */
  assertLive(): void {
    if (this.#disposing) throw new DisposedError(this.#what);
  }

  /**
   * Runs `fn` after every call accepted before it has settled (whatever its outcome). Rejects with
   * a DisposedError when the object is disposed now; a call accepted before `dispose()` still runs.
   */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#disposing) return Promise.reject(new DisposedError(this.#what));
    const run = this.#tail.then(fn);
    this.#tail = run.catch(() => undefined);
    return run;
  }

  /**
   * Refuses new calls, waits for the accepted ones, then runs `release` once. Idempotent: every
   * call returns the same promise, so concurrent disposers all wait for the release.
   */
  dispose(release: () => Promise<void> | void): Promise<void> {
    this.#disposing ??= this.#tail.then(() => release());
    return this.#disposing;
  }
}
