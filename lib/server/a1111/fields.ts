/**
 * Typed readers for A1111 request fields. Each returns the value or throws a 422 that names the
 * field, says what is allowed and what was received. `null` means "use the default", as in
 * A1111's pydantic models, where every field is Optional.
 */
import { invalidField } from "../http/errors.js";
import { describeValue } from "./samplers.js";

export type Body = Record<string, unknown>;

export function isAbsent(value: unknown): value is null | undefined {
  return value === undefined || value === null;
}

export function stringField(body: Body, field: string, fallback: string): string {
  const value = body[field];
  if (isAbsent(value)) return fallback;
  if (typeof value !== "string") throw invalidField(field, `${field} must be a string, got ${describeValue(value)}`);
  return value;
}

export function booleanField(body: Body, field: string, fallback: boolean): boolean {
  const value = body[field];
  if (isAbsent(value)) return fallback;
  if (typeof value !== "boolean") throw invalidField(field, `${field} must be true or false, got ${describeValue(value)}`);
  return value;
}

/** An integer (an integral float such as `-1.0` counts, as pydantic accepts it) in [min, max]. */
export function integerField(body: Body, field: string, fallback: number, min: number, max: number, hint = ""): number {
  const value = body[field];
  if (isAbsent(value)) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw invalidField(field, `${field} must be an integer from ${min} to ${max}${hint}, got ${describeValue(value)}`);
  }
  return value;
}

export function numberField(body: Body, field: string, fallback: number, min: number, max: number): number {
  const value = body[field];
  if (isAbsent(value)) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > max) {
    throw invalidField(field, `${field} must be a number from ${min} to ${max}, got ${describeValue(value)}`);
  }
  return value;
}

/** Type check only (number), for fields whose value is judged elsewhere. */
export function optionalNumber(body: Body, field: string): number | null {
  const value = body[field];
  if (isAbsent(value)) return null;
  if (typeof value !== "number" || !Number.isFinite(value)) throw invalidField(field, `${field} must be a number, got ${describeValue(value)}`);
  return value;
}

export function optionalString(body: Body, field: string): string | null {
  const value = body[field];
  if (isAbsent(value)) return null;
  if (typeof value !== "string") throw invalidField(field, `${field} must be a string, got ${describeValue(value)}`);
  return value;
}

export function optionalBoolean(body: Body, field: string): boolean | null {
  const value = body[field];
  if (isAbsent(value)) return null;
  if (typeof value !== "boolean") throw invalidField(field, `${field} must be true or false, got ${describeValue(value)}`);
  return value;
}

export function optionalObject(body: Body, field: string): Record<string, unknown> | null {
  const value = body[field];
  if (isAbsent(value)) return null;
  if (typeof value !== "object" || Array.isArray(value)) throw invalidField(field, `${field} must be an object, got ${describeValue(value)}`);
  return value as Record<string, unknown>;
}

export function optionalArray(body: Body, field: string): unknown[] | null {
  const value = body[field];
  if (isAbsent(value)) return null;
  if (!Array.isArray(value)) throw invalidField(field, `${field} must be an array, got ${describeValue(value)}`);
  return value;
}
