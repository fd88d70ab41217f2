/**
 * The host path of the device kernels (native/denoiser/loop_math.h, vae_math.h, half.h — the same
 * per-element code nvcc compiles into the kernels) against the TypeScript CPU executor and
 * diffusers' goldens. This is how CI, which has no GPU, checks the kernels' arithmetic.
 */
import { describe, expect, test } from "@jest/globals";
import { analyticReferenceModel, roundToFloat16 } from "../support/analytic-reference.js";
import { packProgram, runProgram, type SamplerProgram } from "../../lib/sampler/index.js";
import { createScheduler } from "../../lib/schedulers/index.js";
import { analyticModel, loadSchedulerGoldens, pseudoNormal, relativeError, type GoldenRun } from "../fixtures/schedulers/goldens.js";
import { loadKDiffusionGoldens } from "../fixtures/a1111/kdiffusion-goldens.js";
import { loadDdimCfgppGoldens } from "../fixtures/a1111/ddim-cfgpp-goldens.js";
import { compileA1111Run, etaRunConfig, loadDdimPlmsGoldens, loadUniPcGoldens, uniPcRunConfig } from "../fixtures/a1111/timestep-runs.js";
import { TorchGenerator } from "../../lib/rng/index.js";
import { BrownianNoiseSampler } from "../../lib/rng/brownian-tree.js";
import { loadSdeGoldens } from "../fixtures/a1111/sde-goldens.js";
import { builtAddon } from "./support.js";

const addon = builtAddon();
const goldens = loadSchedulerGoldens();
const IMAGE = 4 * 8 * 8;

function programFor(run: GoldenRun): SamplerProgram {
  return createScheduler(run.scheduler, { ...goldens.sd1_scheduler_config, ...run.overrides }).compile(run.num_inference_steps);
}

/** The program's draws in order, from the golden steps, concatenated `copies` times per draw (batch). */
function goldenNoise(run: GoldenRun, program: SamplerProgram, copies = 1): Float32Array {
  const draws = program.evals.flatMap((e, j) => (e.drawsNoise ? [run.steps[j]!.noise!] : []));
  const out = new Float32Array(draws.length * copies * IMAGE);
  draws.forEach((draw, d) => {
    for (let c = 0; c < copies; c++) out.set(draw, (d * copies + c) * IMAGE);
  });
  return out;
}

function drawOf(noise: Float32Array, program: SamplerProgram, n: number) {
  const index: number[] = [];
  let d = 0;
  for (const e of program.evals) index.push(e.drawsNoise ? d++ : -1);
  return (j: number) => noise.subarray(index[j]! * n, (index[j]! + 1) * n);
}

const float32Runs = goldens.runs.filter((r) => r.dtype === "float32");

describe.each(float32Runs.map((r) => [r.id, r] as const))("denoise loop host path, %s", (_id, run) => {
  const program = programFor(run);
  const packed = packProgram(program);
  const x0 = Float32Array.from(run.x0);

  test("reproduces the CPU executor and diffusers' final latents", () => {
    const noise = goldenNoise(run, program);
    const host = addon.hostRunProgram({ program: packed, latents: x0, noise, batch: 1, height: 8, width: 8 });
    const cpu = runProgram(program, x0, analyticModel("float32"), drawOf(noise, program, IMAGE));
    // Same update order, same float64 accumulation: only libm's sin/cos vs V8's may differ (1 ulp).
    expect(relativeError(host, cpu)).toBeLessThan(1e-6);
    expect(relativeError(host, run.final)).toBeLessThan(1e-5);
  });

  test("with guidance per image (1 and 7.5) matches the CPU executor on the stand-in's guided model", () => {
    const guidance = new Float64Array([1, 7.5]);
    const latents = new Float32Array(2 * IMAGE);
    latents.set(x0, 0);
    latents.set(x0, IMAGE);
    const noise = goldenNoise(run, program, 2);
    const host = addon.hostRunProgram({ program: packed, latents, noise, batch: 2, height: 8, width: 8, guidance });
    const model = analyticReferenceModel({ batch: 2, imageElems: IMAGE, guidance });
    const cpu = runProgram(program, latents, model, drawOf(noise, program, 2 * IMAGE));
    expect(relativeError(host, cpu)).toBeLessThan(1e-6);
    // Guidance 1: u + 1·(c − u) = c up to float32 rounding, so image 0 still follows diffusers.
    expect(relativeError(host.subarray(0, IMAGE), run.final)).toBeLessThan(1e-5);
    // Guidance 7.5 must change the result (the stand-in's uncond differs from its cond).
    expect(relativeError(host.subarray(IMAGE), run.final)).toBeGreaterThan(1e-3);
  });
});

// A1111's k-diffusion samplers: fractional timesteps, two-call steps, ancestral draws from the
// image's generator (test/fixtures/a1111/kdiffusion_goldens.json, float32 runs).
const kdiffusionRuns = loadKDiffusionGoldens().runs.filter((r) => r.dtype === "float32");

describe.each(kdiffusionRuns.map((r) => [r.id, r] as const))("denoise loop host path, A1111 %s", (_id, run) => {
  test("reproduces the CPU executor and k-diffusion's final latents", () => {
    const prediction_type = run.parameterization === "v" ? "v_prediction" : "epsilon";
    const program = createScheduler(run.key, { sigmaSchedule: run.schedule, prediction_type, ...run.extra }).compile(run.steps);
    const x0 = Float32Array.from(run.x0);
    // A1111's ImageRNG, CPU source: the first draw was x0; later ones from seed (+ ENSD).
    const first = new TorchGenerator(run.seed);
    first.randn([1, 4, 8, 8]);
    const generator = run.ensd ? new TorchGenerator(run.seed + run.ensd) : first;
    const draws = program.evals.filter((e) => e.drawsNoise).length;
    const noise = new Float32Array(draws * IMAGE);
    for (let d = 0; d < draws; d++) noise.set(generator.randn([1, 4, 8, 8]), d * IMAGE);
    const host = addon.hostRunProgram({ program: packProgram(program), latents: x0, noise, batch: 1, height: 8, width: 8 });
    const cpu = runProgram(program, x0, analyticModel("float32"), drawOf(noise, program, IMAGE));
    expect(relativeError(host, cpu)).toBeLessThan(1e-6);
    expect(relativeError(host, run.final)).toBeLessThan(1e-5);
  });
});

// A1111's own DDIM and PLMS: integer timesteps, eps outputs (v models: eps from v), DDIM's draw every step
// (test/fixtures/a1111/timesteps_goldens.json and timesteps_v_goldens.json, float32 txt2img runs).
const timestepRuns = loadDdimPlmsGoldens().filter((r) => r.dtype === "float32" && r.strength === null);

describe.each(timestepRuns.map((r) => [r.id, r] as const))("denoise loop host path, A1111 %s", (_id, run) => {
  test("reproduces the CPU executor and A1111's final latents", () => {
    const program = createScheduler(run.key, etaRunConfig(run)).compile(run.steps);
    const x0 = Float32Array.from(run.x0);
    const generator = new TorchGenerator(run.seed);
    generator.randn([1, 4, 8, 8]); // x0
    const draws = program.evals.filter((e) => e.drawsNoise).length;
    const noise = new Float32Array(draws * IMAGE);
    for (let d = 0; d < draws; d++) noise.set(generator.randn([1, 4, 8, 8]), d * IMAGE);
    const host = addon.hostRunProgram({ program: packProgram(program), latents: x0, noise, batch: 1, height: 8, width: 8 });
    const cpu = runProgram(program, x0, analyticModel("float32"), drawOf(noise, program, IMAGE));
    expect(relativeError(host, cpu)).toBeLessThan(1e-6);
    expect(relativeError(host, run.final)).toBeLessThan(1e-5);
  });
});

// A1111's DDIM CFG++: the fused kernel reads u_j from the uncond half of the UNet output. The golden's
// model is the stand-in's own guided model (uncond = 0.9 · cond), so the host path meets A1111 directly
// (test/fixtures/a1111/ddim_cfgpp_goldens.json, float32 runs).
const cfgppRuns = loadDdimCfgppGoldens().runs.filter((r) => r.dtype === "float32");

describe.each(cfgppRuns.map((r) => [r.id, r] as const))("denoise loop host path, A1111 DDIM CFG++ %s", (_id, run) => {
  test("renoises with the uncond half: A1111's final latents and the CPU executor's", () => {
    const scheduler = createScheduler("a1111_ddim_cfgpp", etaRunConfig(run));
    const program = compileA1111Run(scheduler, run);
    const x0 = Float32Array.from(run.x0);
    const generator = new TorchGenerator(run.seed);
    generator.randn([1, 4, 8, 8]); // the initial noise
    const draws = program.evals.filter((e) => e.drawsNoise).length;
    const noise = new Float32Array(draws * IMAGE);
    for (let d = 0; d < draws; d++) noise.set(generator.randn([1, 4, 8, 8]), d * IMAGE);
    const guidance = Float64Array.of(run.cfg_scale);
    const host = addon.hostRunProgram({ program: packProgram(program), latents: x0, noise, batch: 1, height: 8, width: 8, guidance });
    const cpu = runProgram(program, x0, analyticReferenceModel({ batch: 1, imageElems: IMAGE, guidance }), drawOf(noise, program, IMAGE));
    expect(relativeError(host, cpu)).toBeLessThan(1e-6);
    expect(relativeError(host, run.final)).toBeLessThan(1e-5);
  });
});

// A1111's own UniPC: fractional timesteps, eps outputs made into x0 in the coefficients, history up
// to order + 1 (test/fixtures/a1111/unipc_goldens.json, float32 txt2img runs).
const uniPcRuns = loadUniPcGoldens().filter((r) => r.refused === undefined && r.dtype === "float32" && r.strength === null);

describe.each(uniPcRuns.map((r) => [r.id, r] as const))("denoise loop host path, A1111 %s", (_id, run) => {
  test("reproduces the CPU executor and A1111's final latents", () => {
    const program = createScheduler("a1111_unipc", uniPcRunConfig(run)).compile(run.steps);
    const x0 = Float32Array.from(run.x0);
    const host = addon.hostRunProgram({ program: packProgram(program), latents: x0, noise: new Float32Array(0), batch: 1, height: 8, width: 8 });
    const cpu = runProgram(program, x0, analyticModel("float32"), () => {
      throw new Error("UniPC draws no noise");
    });
    expect(relativeError(host, cpu)).toBeLessThan(1e-6);
    expect(relativeError(host, run.final)).toBeLessThan(1e-5);
  });
});

test("denoise loop host path, DDIM CFG++ per image and without guidance: u_j per image, u_j = m_j without", () => {
  const program = createScheduler("a1111_ddim_cfgpp").compile(10);
  const latents = Float32Array.from(pseudoNormal(2 * IMAGE, 4));
  const noise = Float32Array.from(pseudoNormal(program.evals.filter((e) => e.drawsNoise).length * 2 * IMAGE, 6));
  const guidance = Float64Array.of(7.5, 2);
  const host = addon.hostRunProgram({ program: packProgram(program), latents, noise, batch: 2, height: 8, width: 8, guidance });
  const cpu = runProgram(program, latents, analyticReferenceModel({ batch: 2, imageElems: IMAGE, guidance }), drawOf(noise, program, 2 * IMAGE));
  expect(relativeError(host, cpu)).toBeLessThan(1e-6);
  const unguided = addon.hostRunProgram({ program: packProgram(program), latents, noise, batch: 2, height: 8, width: 8 });
  const unguidedCpu = runProgram(program, latents, analyticReferenceModel({ batch: 2, imageElems: IMAGE }), drawOf(noise, program, 2 * IMAGE));
  expect(relativeError(unguided, unguidedCpu)).toBeLessThan(1e-6);
  const ddim = addon.hostRunProgram({ program: packProgram(createScheduler("a1111_ddim").compile(10)), latents, noise, batch: 2, height: 8, width: 8 });
  expect(relativeError(unguided, ddim)).toBeLessThan(1e-6);
});

describe("denoise loop host path, float16 model", () => {
  test.each(["euler_a", "dpmpp_2m", "pndm", "heun"])("%s: casts input and output like the CPU mirror", (name) => {
    const program = createScheduler(name).compile(12);
    const batch = 2;
    const n = batch * IMAGE;
    const latents = Float32Array.from(pseudoNormal(n, 5), (v) => v * program.initNoiseSigma);
    const draws = program.evals.filter((e) => e.drawsNoise).length;
    const noise = Float32Array.from(pseudoNormal(draws * n, 9));
    const guidance = new Float64Array([7.5, 3]);
    const host = addon.hostRunProgram({ program: packProgram(program), latents, noise, batch, height: 8, width: 8, guidance, sampleType: "float16" });
    const model = analyticReferenceModel({ batch, imageElems: IMAGE, guidance, sampleType: "float16" });
    const cpu = runProgram(program, latents, model, drawOf(noise, program, n));
    // A 1-ulp libm difference can flip one float16 rounding; that stays far below float16 resolution.
    expect(relativeError(host, cpu)).toBeLessThan(2e-4);
    const float32 = addon.hostRunProgram({ program: packProgram(program), latents, noise, batch, height: 8, width: 8, guidance });
    expect(relativeError(host, float32)).toBeGreaterThan(0);
  });
});

// A1111's prompt and negative prompt of different lengths (pad_cond_uncond off): uncond and cond
// run as two UNet calls per evaluation, in the buffer layout of native/denoiser/unet_layout.h (the
// cond blocks at 256-byte aligned offsets, NaN in the gaps). A 3×5 latent makes the blocks' natural
// offsets unaligned, so the gaps are really there; a misplaced row would read NaN or the other half.
describe("denoise loop host path, uncond and cond as two UNet calls", () => {
  const batch = 3;
  const [height, width] = [3, 5];
  const n = batch * 4 * height * width;
  test.each([
    ["euler_a", "float32"],
    ["dpmpp_2m", "float16"],
    ["pndm", "float32"],
    ["heun", "float16"],
  ] as const)("%s, %s: the same latents bit for bit as one call, with each call of batch or 2 × batch rows", (name, sampleType) => {
    const program = createScheduler(name).compile(10);
    const latents = Float32Array.from(pseudoNormal(n, 3), (v) => v * program.initNoiseSigma);
    const draws = program.evals.filter((e) => e.drawsNoise).length;
    const noise = Float32Array.from(pseudoNormal(draws * n, 4));
    const guidance = new Float64Array([7.5, 1, 3]);
    const options = { program: packProgram(program), latents, noise, batch, height, width, guidance, sampleType };
    const oneCall = addon.hostRunProgramStats(options);
    expect(oneCall.unetNonFinite).toBe(0);
    const model = analyticReferenceModel({ batch, imageElems: 4 * height * width, guidance, sampleType });
    expect(relativeError(oneCall.latents, runProgram(program, latents, model, drawOf(noise, program, n)))).toBeLessThan(sampleType === "float16" ? 2e-4 : 1e-6);
    for (const splitCallRows of [batch, 2 * batch]) {
      const split = addon.hostRunProgramStats({ ...options, splitCallRows });
      expect(split.unetNonFinite).toBe(0);
      expect(Array.from(split.latents)).toEqual(Array.from(oneCall.latents));
    }
  });

  test("two calls need guidance, and each call takes the batch or twice it", () => {
    const program = createScheduler("euler").compile(2);
    const base = { program: packProgram(program), latents: new Float32Array(n), noise: new Float32Array(0), batch, height, width };
    const guidance = new Float64Array(batch).fill(7);
    expect(() => addon.hostRunProgram({ ...base, splitCallRows: batch })).toThrow(/splitCallRows must be 0, or batch or 2 · batch with guidance, got 3/);
    expect(() => addon.hostRunProgram({ ...base, guidance, splitCallRows: batch + 1 })).toThrow(/splitCallRows .* got 4/);
  });
});

describe("float16 conversion (half.h)", () => {
  test("known values: rounding to nearest even, subnormals, overflow, NaN", () => {
    const cases: [number, number][] = [
      [1, 0x3c00],
      [-2, 0xc000],
      [65504, 0x7bff],
      [65519.99, 0x7bff],
      [65520, 0x7c00],
      [Infinity, 0x7c00],
      [-Infinity, 0xfc00],
      [2 ** -24, 0x0001],
      [2 ** -25, 0x0000], // tie between 0 and the smallest subnormal: even is 0
      [3 * 2 ** -25, 0x0002], // tie between 1 and 2 subnormal steps: even is 2
      [2 ** -14, 0x0400],
      [1 + 2 ** -11, 0x3c00], // tie: 1.0 (even mantissa) wins
      [1 + 3 * 2 ** -11, 0x3c02], // tie: rounds up to the even mantissa
      [0.1, 0x2e66],
      [-0, 0x8000],
    ];
    const bits = addon.hostFloatToHalf(Float32Array.from(cases.map((c) => c[0])));
    expect(Array.from(bits)).toEqual(cases.map((c) => c[1]));
    expect(addon.hostFloatToHalf(new Float32Array([NaN]))[0]).toBe(0x7fff);
  });

  test("every float16 value converts back exactly, and agrees with the TS rounding", () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const values = addon.hostHalfToFloat(all);
    const finite = Array.from(all).filter((h) => (h & 0x7c00) !== 0x7c00);
    const back = addon.hostFloatToHalf(Float32Array.from(finite, (h) => values[h]!));
    expect(Array.from(back)).toEqual(finite);
    // Random float32 values (and exact midpoints): native and TS rounding agree.
    const samples = Float32Array.from(pseudoNormal(20000, 3), (v, i) => v * 2 ** ((i % 40) - 20));
    const midpoints = Float32Array.from(finite.slice(0, 30000), (h) => (values[h]! + values[h + 1]!) / 2);
    for (const input of [samples, midpoints]) {
      const native = addon.hostHalfToFloat(addon.hostFloatToHalf(input));
      const ts = Float32Array.from(input, roundToFloat16);
      expect(Array.from(native)).toEqual(Array.from(ts));
    }
  });
});

/** diffusers' postprocessing in float32 arithmetic: clamp(x / 2 + 0.5, 0, 1) · 255, np.round (half to even). */
function referenceByte(x: number): number {
  const v = Math.min(1, Math.max(0, Math.fround(Math.fround(x / 2) + 0.5)));
  const s = Math.fround(v * 255);
  const floor = Math.floor(s);
  if (s - floor !== 0.5) return Math.round(s);
  return floor % 2 === 0 ? floor : floor + 1;
}

describe("VAE output conversion (vae_math.h)", () => {
  test("NCHW [-1, 1] becomes uint8 HWC per image, diffusers' rounding", () => {
    const batch = 2;
    const h = 3;
    const w = 5;
    const decoded = Float32Array.from(pseudoNormal(batch * 3 * h * w, 11), (v) => v * 0.7);
    const { pixels, nanCount, infCount } = addon.hostVaeToUint8({ decoded, batch, height: h, width: w });
    expect(nanCount).toBe(0);
    expect(infCount).toBe(0);
    expect(pixels).toHaveLength(batch * h * w * 3);
    for (let b = 0; b < batch; b++) {
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          for (let c = 0; c < 3; c++) {
            const src = decoded[((b * 3 + c) * h + y) * w + x]!;
            expect(pixels[((b * h + y) * w + x) * 3 + c]).toBe(referenceByte(src));
          }
        }
      }
    }
  });

  test("exact .5 levels round half to even, like numpy", () => {
    // For each level k find a float32 x whose scaled value v·255 is exactly k + 0.5.
    const ties: number[] = [];
    const expected: number[] = [];
    for (let k = 0; k < 255; k++) {
      let v = Math.fround((k + 0.5) / 255);
      for (let step = 0; step < 64 && Math.fround(v * 255) !== k + 0.5; step++) {
        v = Math.fround(v + (Math.fround(v * 255) < k + 0.5 ? 1 : -1) * 2 ** -26);
      }
      if (Math.fround(v * 255) !== k + 0.5) continue;
      const x = Math.fround((v - 0.5) * 2);
      if (Math.fround(Math.fround(x / 2) + 0.5) !== v) continue;
      ties.push(x);
      expected.push(k % 2 === 0 ? k : k + 1);
    }
    expect(ties.length).toBeGreaterThan(150);
    // One image, one row: R = ties[0, W), G = ties[W, 2W), B = ties[2W, 3W).
    const width = Math.floor(ties.length / 3);
    const decoded = Float32Array.from(ties.slice(0, 3 * width));
    const { pixels } = addon.hostVaeToUint8({ decoded, batch: 1, height: 1, width });
    const hwc: number[] = [];
    for (let p = 0; p < width; p++) hwc.push(expected[p]!, expected[width + p]!, expected[2 * width + p]!);
    expect(Array.from(pixels)).toEqual(hwc);
  });

  test("clamps out-of-range values and counts NaN and ±Inf instead of hiding them", () => {
    // NCHW: R = [-3, NaN], G = [0, 2], B = [+Inf, −Inf] for two pixels.
    const decoded = new Float32Array([-3, NaN, 0, 2, Infinity, -Infinity]);
    const { pixels, nanCount, infCount } = addon.hostVaeToUint8({ decoded, batch: 1, height: 1, width: 2 });
    expect(Array.from(pixels)).toEqual([0, 128, 255, 0, 255, 0]);
    expect(nanCount).toBe(1);
    expect(infCount).toBe(2);
  });

  test("float16 input (Uint16Array bits) gives the float32 result of the same values", () => {
    const values = Float32Array.from(pseudoNormal(3 * 4 * 4, 2), (v) => roundToFloat16(v * 0.6));
    const bits = addon.hostFloatToHalf(values);
    const fromHalf = addon.hostVaeToUint8({ decoded: bits, batch: 1, height: 4, width: 4 });
    const fromFloat = addon.hostVaeToUint8({ decoded: values, batch: 1, height: 4, width: 4 });
    expect(Array.from(fromHalf.pixels)).toEqual(Array.from(fromFloat.pixels));
    const nanBits = new Uint16Array(3).fill(0x7e00);
    expect(addon.hostVaeToUint8({ decoded: nanBits, batch: 1, height: 1, width: 1 }).nanCount).toBe(3);
  });
});

// A1111's SDE samplers: the program's Brownian draws (one tree per image seed) fed to the kernels'
// host path (test/fixtures/a1111/sde_goldens.json, float32 txt2img runs whose queries torch computed as we do).
const sdeRuns = loadSdeGoldens().runs.filter((r) => r.dtype === "float32" && r.strength === null && !r.id.includes("/uniform/"));

describe.each(sdeRuns.map((r) => [r.id, r] as const))("denoise loop host path, A1111 %s", (_id, run) => {
  test("reproduces the CPU executor and k-diffusion's final latents from the Brownian noise", () => {
    const prediction_type = run.parameterization === "v" ? "v_prediction" : "epsilon";
    const program = createScheduler(run.key, { sigmaSchedule: run.schedule, prediction_type, ...run.extra }).compile(run.steps);
    const batch = run.seeds.length;
    const spec = program.brownian!;
    const sampler = new BrownianNoiseSampler(run.randn_source === "NV" ? "nv" : "cpu", run.seeds.map(BigInt), [4, 8, 8], spec.sigmaMin, spec.sigmaMax);
    const noise = new Float32Array(spec.draws.length * batch * IMAGE);
    for (const [d, [sigma, next]] of spec.draws.entries()) noise.set(sampler.noise(sigma, next), d * batch * IMAGE);
    const x0 = Float32Array.from(run.x0);
    const host = addon.hostRunProgram({ program: packProgram(program), latents: x0, noise, batch, height: 8, width: 8 });
    const cpu = runProgram(program, x0, analyticReferenceModel({ batch, imageElems: IMAGE }), drawOf(noise, program, batch * IMAGE));
    expect(relativeError(host, cpu)).toBeLessThan(1e-6);
    expect(relativeError(host, run.final)).toBeLessThan(1e-5);
  });
});
