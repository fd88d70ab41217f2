/**
 * The fleet's wire format without Redis: requests and results survive the trip unchanged (seeds
 * beyond 2⁵³, init images as raw pixels or bytes), what cannot travel is refused naming the
 * option, failures come back as the same error classes, and the CLI's checks name their flag.
 */
import { describe, expect, test } from "@jest/globals";
import worker from "../../lib/cli/commands/worker.js";
import { AbortError, InvalidOptionError, JobFailedError, ModelMismatchError, VaeOverflowError } from "../../lib/errors.js";
import { fromFailedReason, fromWireRequest, fromWireResult, toWireFailure, toWireRequest, toWireResult } from "../../lib/fleet/protocol.js";
import { checkQueueName, checkRedisUrl } from "../../lib/fleet/redis.js";
import type { GenerateResult } from "../../lib/pipeline/generation.js";
import { runCommand } from "../support/run-cli.js";

describe("fleet wire format", () => {
  test("a request round-trips, seeds as exact decimal strings and init images inline", () => {
    const raw = { data: new Uint8Array([1, 2, 3, 4, 5, 6]), width: 2, height: 1, channels: 3 as const };
    const request = { prompt: ["a", "b"], seeds: [18446744073709551615n, 7], width: 64, height: 64, steps: 3, initImage: raw, strength: 0.5 };
    const wire = toWireRequest(request);
    expect(JSON.parse(JSON.stringify(wire)).seeds).toEqual(["18446744073709551615", "7"]);
    const back = fromWireRequest(JSON.parse(JSON.stringify(wire)));
    expect(back.seeds).toEqual([18446744073709551615n, 7n]);
    expect(back.initImage).toEqual(raw);
    expect(fromWireRequest(toWireRequest({ prompt: "x", seed: 5n, initImage: new Uint8Array([9, 8]) })).initImage).toEqual(new Uint8Array([9, 8]));
  });

  test("what cannot travel is refused, naming the option", () => {
    expect(() => toWireRequest({ prompt: "x" })).toThrow(/a fleet job needs explicit seeds/);
    expect(() => toWireRequest({ prompt: "x", seed: 1, initImage: "/tmp/a.png" })).toThrow(/initImage as a file path cannot travel/);
    expect(() => toWireRequest({ prompt: "x", seed: 1, returnLatents: true })).toThrow(InvalidOptionError);
    expect(() => toWireRequest({ prompt: "x", seed: 1, onLatents: () => {} })).toThrow(/onLatents is not available through a fleet queue/);
  });

  test("a result round-trips pixel for pixel", () => {
    const result = {
      images: [{ rgb: new Uint8Array([0, 127, 255]), width: 1, height: 1, seed: 12345678901234567n, infotext: "x\nSeed: 12345678901234567" }],
      seeds: [12345678901234567n],
      randomSeed: false,
      width: 1,
      height: 1,
      steps: 2,
      guidance: 7,
      scheduler: "euler",
      backend: "cpu",
      evaluations: 2,
      timings: { tokenize: 1, textEncode: 1, imageEncode: 0, denoise: 1, decode: 1, stepNoise: 0, total: 4 },
      warnings: [],
    } satisfies GenerateResult;
    expect(fromWireResult(JSON.parse(JSON.stringify(toWireResult(result))))).toEqual(result);
  });

  test("failures come back as the class the worker threw; others as JobFailedError with the code", () => {
    const roundTrip = (error: unknown) => fromFailedReason("j1", JSON.stringify(toWireFailure(error)), 2);
    const invalid = roundTrip(new InvalidOptionError("steps", "steps must be an integer from 1 to 1000, got 0"));
    expect(invalid).toBeInstanceOf(InvalidOptionError);
    expect((invalid as InvalidOptionError).option).toBe("steps");
    expect(roundTrip(new ModelMismatchError("other model"))).toBeInstanceOf(ModelMismatchError);
    expect(roundTrip(new AbortError("interrupted"))).toBeInstanceOf(AbortError);
    const vae = roundTrip(new VaeOverflowError("NaN in the image"));
    expect(vae).toBeInstanceOf(JobFailedError);
    expect(vae).toMatchObject({ reasonCode: "ERR_VAE_NAN", attempts: 2, message: "job j1 failed after 2 attempt(s): NaN in the image" });
    // BullMQ's own reasons are plain text.
    expect(fromFailedReason("j2", "job stalled more than allowable limit", 3)).toMatchObject({ reasonCode: "ERR_QUEUE", attempts: 3 });
  });

  test("Redis URLs and queue names are checked up front, naming the flag", () => {
    expect(checkRedisUrl("redis://127.0.0.1:6379")).toBe("redis://127.0.0.1:6379");
    expect(() => checkRedisUrl("127.0.0.1:6379", "--redis")).toThrow(/--redis must be a redis:\/\/ or rediss:\/\/ URL, got "127.0.0.1:6379"/);
    expect(() => checkRedisUrl("http://x", "--redis")).toThrow(InvalidOptionError);
    expect(checkQueueName("sd15")).toBe("sd15");
    expect(() => checkQueueName("a b:c", "--queue")).toThrow(/--queue must be 1 to 64 letters, digits, '_', '.' or '-', got "a b:c"/);
  });
});

describe("sd-trt worker flags", () => {
  test("bad values are refused before any model loads, naming the flag (exit 2)", async () => {
    const cases: Array<[string[], RegExp]> = [
      [["--redis", "localhost:6379"], /--redis must be a redis:\/\/ or rediss:\/\/ URL, got "localhost:6379"/],
      [["--redis", "redis://127.0.0.1:1", "--queue", "a:b"], /--queue must be 1 to 64 letters/],
      [["--redis", "redis://127.0.0.1:1", "--devices", "0,0"], /--devices must be a comma-separated list of distinct device indices/],
      [["--redis", "redis://127.0.0.1:1", "--stall-timeout", "0"], /--stall-timeout must be a number from 1 to 600, got 0/],
      [["--redis", "redis://127.0.0.1:1", "--concurrency", "1.5"], /--concurrency must be an integer from 1 to 1024, got 1.5/],
    ];
    for (const [args, message] of cases) {
      const run = await runCommand(worker, ["worker", ...args]);
      expect({ args, code: run.code }).toEqual({ args, code: 2 });
      expect(run.stderr).toMatch(message);
    }
  });
});
