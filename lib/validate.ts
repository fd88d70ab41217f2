/**
 * Option validation in one place (design rule 1): every message names the option, the allowed
 * values and what was received, e.g.
 * "steps must be an integer from 1 to 1000, got 0 (number)".
 */
import { InvalidOptionError } from "./errors.js";

function describe(value: unknown): string {
  if (typeof value === "string") return `${JSON.stringify(value)} (string)`;
  if (typeof value === "bigint") return `${value}n (bigint)`;
  if (value === null) return "null";
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (typeof value === "object") return `an object`;
  return `${String(value)} (${typeof value})`;
}

export function invalidOption(name: string, expected: string, actual: unknown): InvalidOptionError {
  return new InvalidOptionError(name, `${name} must be ${expected}, got ${describe(actual)}`);
}

export function integerInRange(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw invalidOption(name, `an integer from ${min} to ${max}`, value);
  }
  return value;
}

export function numberInRange(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > max) {
    throw invalidOption(name, `a number from ${min} to ${max}`, value);
  }
  return value;
}

export function oneOf<T extends string>(name: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value !== "string" || !(allowed as readonly string[]).includes(value)) {
    throw invalidOption(name, `one of ${allowed.map((a) => JSON.stringify(a)).join(", ")}`, value);
  }
  return value as T;
}

export function nonEmptyString(name: string, value: unknown): string {
  if (typeof value !== "string" || value.length === 0) throw invalidOption(name, "a non-empty string", value);
  return value;
}

export function stringValue(name: string, value: unknown): string {
  if (typeof value !== "string") throw invalidOption(name, "a string", value);
  return value;
}

export function booleanValue(name: string, value: unknown): boolean {
  if (typeof value !== "boolean") throw invalidOption(name, "true or false", value);
  return value;
}
