/**
 * A1111's noise fields: variation seeds (`subseed`, `subseed_strength`), "resize seed from"
 * (`seed_resize_from_w/h`) and ENSD (`override_settings.eta_noise_seed_delta`), and how A1111
 * spreads seeds over a request's images (processing.py): with a variation strength every image
 * keeps the same seed and image i gets subseed + i; without one, image i gets seed + i.
 */
import { randomInt } from "node:crypto";
import { invalidField } from "../http/errors.js";
import { type Body, isAbsent, optionalNumber } from "./fields.js";
import { describeValue } from "./samplers.js";

/** Largest subseed A1111 draws for −1 (`random.randrange(4294967294)`), exclusive. */
const RANDOM_SUBSEED_LIMIT = 4294967294;

export interface A1111NoiseFields {
  /** The first image's subseed (−1 resolved). */
  subseed: number;
  subseedStrength: number;
  /** Both positive, or absent. */
  seedResizeFrom?: { width: number; height: number };
  ensd: number;
}

/** Parses the fields; undefined when none changes the noise. */
export function parseA1111Noise(body: Body, ensd: number): A1111NoiseFields | undefined {
  const strength = optionalNumber(body, "subseed_strength") ?? 0;
  if (!(strength >= 0 && strength <= 1)) throw invalidField("subseed_strength", `subseed_strength must be a number from 0 to 1, got ${describeValue(body.subseed_strength)}`);
  let subseed = 0;
  if (strength > 0) {
    const raw = body.subseed;
    if (isAbsent(raw) || raw === -1) subseed = randomInt(RANDOM_SUBSEED_LIMIT);
    else if (typeof raw === "number" && Number.isSafeInteger(raw) && raw >= 0) subseed = raw;
    else throw invalidField("subseed", `subseed must be an integer from 0 to ${Number.MAX_SAFE_INTEGER} (or -1 for a random one), got ${describeValue(raw)}`);
  } else {
    optionalNumber(body, "subseed"); // unused while subseed_strength is 0
  }
  const w = optionalNumber(body, "seed_resize_from_w");
  const h = optionalNumber(body, "seed_resize_from_h");
  let seedResizeFrom: A1111NoiseFields["seedResizeFrom"];
  // A1111 applies it only when both are positive.
  if (w !== null && h !== null && w > 0 && h > 0) {
    for (const [field, v] of [["seed_resize_from_w", w], ["seed_resize_from_h", h]] as const) {
      if (!Number.isInteger(v) || v < 8 || v > 16384) throw invalidField(field, `${field} must be an integer from 8 to 16384 (or -1/0 for off), got ${describeValue(v)}`);
    }
    seedResizeFrom = { width: w, height: h };
  }
  if (strength === 0 && seedResizeFrom === undefined && ensd === 0) return undefined;
  return { subseed, subseedStrength: strength, ...(seedResizeFrom ? { seedResizeFrom } : {}), ensd };
}

/** The generate() options of images `first … first + count − 1` of the request. */
export function noiseOptions(noise: A1111NoiseFields | undefined, seed: number, first: number, count: number) {
  const index = Array.from({ length: count }, (_, i) => first + i);
  if (!noise) return { seeds: index.map((i) => seed + i) };
  return {
    seeds: noise.subseedStrength > 0 ? index.map(() => seed) : index.map((i) => seed + i),
    ...(noise.subseedStrength > 0 ? { subseeds: index.map((i) => noise.subseed + i), subseedStrength: noise.subseedStrength } : {}),
    ...(noise.seedResizeFrom ? { seedResizeFrom: noise.seedResizeFrom } : {}),
    ...(noise.ensd !== 0 ? { ensd: noise.ensd } : {}),
  };
}
