/**
 * Reading a component's diffusers/transformers `config.json` values for the graph builders: each
 * value is checked, and a missing or malformed one is a ModelFileError naming the component and key.
 * Defaults are those of the diffusers/transformers class constructors.
 */
import { ModelFileError } from "../../errors.js";

export class ComponentConfig {
  constructor(
    readonly values: Record<string, unknown>,
    /** For messages: "<checkpoint> unet", … */
    readonly origin: string,
  ) {}

  fail(key: string, expected: string): never {
    throw new ModelFileError(this.origin, `${this.origin}: config "${key}" must be ${expected}, got ${JSON.stringify(this.values[key])}`);
  }

  private get(key: string): unknown {
    const v = this.values[key];
    return v === null ? undefined : v;
  }

  number(key: string, fallback?: number): number {
    const v = this.get(key) ?? fallback;
    if (typeof v !== "number" || !Number.isFinite(v)) this.fail(key, "a number");
    return v;
  }

  integer(key: string, fallback?: number): number {
    const v = this.number(key, fallback);
    if (!Number.isInteger(v) || v <= 0) this.fail(key, "a positive integer");
    return v;
  }

  boolean(key: string, fallback: boolean): boolean {
    const v = this.get(key) ?? fallback;
    if (typeof v !== "boolean") this.fail(key, "true or false");
    return v;
  }

  string(key: string, fallback?: string): string {
    const v = this.get(key) ?? fallback;
    if (typeof v !== "string") this.fail(key, "a string");
    return v;
  }

  optionalString(key: string): string | undefined {
    const v = this.get(key);
    if (v !== undefined && typeof v !== "string") this.fail(key, "a string or null");
    return v;
  }

  strings(key: string): string[] {
    const v = this.get(key);
    if (!Array.isArray(v) || v.length === 0 || !v.every((s) => typeof s === "string")) this.fail(key, "a list of strings");
    return v;
  }

  /** A positive integer, or a list of them (one per block); always returned as a list of `count`. */
  perBlock(key: string, count: number, fallback?: number): number[] {
    const v = this.get(key) ?? fallback;
    if (typeof v === "number") {
      if (!Number.isInteger(v) || v <= 0) this.fail(key, "a positive integer or a list of them");
      return new Array<number>(count).fill(v);
    }
    if (!Array.isArray(v) || v.length !== count || !v.every((n) => Number.isInteger(n) && n > 0)) {
      this.fail(key, `a positive integer or a list of ${count}`);
    }
    return v as number[];
  }

  /** Refuses a config value the graphs do not implement, naming it. */
  require(key: string, supported: readonly unknown[], fallback: unknown): void {
    const v = this.get(key) ?? fallback;
    if (!supported.some((s) => s === v)) {
      throw new ModelFileError(
        this.origin,
        `${this.origin}: config "${key}" = ${JSON.stringify(v ?? null)} is not supported by sd-trt's converter (supported: ${supported.map((s) => JSON.stringify(s ?? null)).join(", ")})`,
      );
    }
  }
}
