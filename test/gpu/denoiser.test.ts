/**
 * The denoise loop on a real GPU (docs/architecture.md, test tier 4): the analytic stand-in UNet under CUDA
 * graphs against the scheduler goldens and the CPU executor, for all 10 schedulers; graph capture,
 * replay and re-capture; plain launches; guidance per image in float32 and float16; progress,
 * cancellation, dispose; and the standalone kernels against their host paths bit for bit.
 * Skipped (with the reason) where there is no GPU; `npm run test:gpu` runs it.
 */
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { expect, test } from "@jest/globals";
import { AbortError, DisposedError, NativeError, UnetOverflowError } from "../../lib/errors.js";
import { analyticReferenceModel } from "../support/analytic-reference.js";
import { Denoiser, type DenoiseRunOptions } from "../../lib/native/denoiser.js";
import { callNativeAsync, cancelNativeWork, loadNativeBinding } from "../../lib/native/load.js";
import { packProgram, runProgram, type SamplerProgram } from "../../lib/sampler/index.js";
import { createScheduler } from "../../lib/schedulers/index.js";
import { applyEmphasis } from "../../lib/prompt/emphasis.js";
import { analyticModel, loadSchedulerGoldens, pseudoNormal, relativeError, type GoldenRun } from "../fixtures/schedulers/goldens.js";
import { describeGpu, syntheticRequest } from "./support.js";
import { loadDdimCfgppGoldens } from "../fixtures/a1111/ddim-cfgpp-goldens.js";
import { loadUniPcGoldens, uniPcRunConfig } from "../fixtures/a1111/timestep-runs.js";
import { TorchGenerator } from "../../lib/rng/index.js";

const IMAGE = 4 * 8 * 8;

function drawOf(noise: Float32Array, program: SamplerProgram, n: number) {
  const index: number[] = [];
  let d = 0;
  for (const e of program.evals) index.push(e.drawsNoise ? d++ : -1);
  return (j: number) => noise.subarray(index[j]! * n, (index[j]! + 1) * n);
}

function addonPath(): string {
  const load = loadNativeBinding();
  if (!load.loaded) throw new Error(load.message);
  return load.path;
}

function thrownBy(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error("expected a throw");
}

describeGpu("denoise loop on the GPU (analytic stand-in)", ({ addon }) => {
  const goldens = loadSchedulerGoldens();
  const runs = goldens.runs.filter((r) => r.dtype === "float32" && r.num_inference_steps === 20);

  test.each(runs.map((r) => [r.key, r] as [string, GoldenRun]))(
    "%s: graph capture, replay and plain launches all match the CPU executor and the goldens",
    async (_key, run) => {
      const program = createScheduler(run.scheduler, { ...goldens.sd1_scheduler_config, ...run.overrides }).compile(run.num_inference_steps);
      const draws = program.evals.flatMap((e, j) => (e.drawsNoise ? [Float32Array.from(run.steps[j]!.noise!)] : []));
      const request: DenoiseRunOptions = {
        program: packProgram(program),
        latents: Float32Array.from(run.x0),
        noise: draws,
        batch: 1,
        latentHeight: 8,
        latentWidth: 8,
      };
      const cpu = runProgram(program, Float32Array.from(run.x0), analyticModel("float32"), (j) => run.steps[j]!.noise!);
      const denoiser = await Denoiser.create({ unet: "analytic" });
      try {
        const captured = await denoiser.run(request);
        const replayed = await denoiser.run(request);
        const plain = await denoiser.run({ ...request, useGraphs: false });
        const unpaced = await denoiser.run({ ...request, queueDepth: 0 });
        expect([captured.graph, replayed.graph, plain.graph, unpaced.graph]).toEqual(["captured", "replayed", "disabled", "replayed"]);
        expect(captured.evaluations).toBe(program.evals.length);
        // Same kernels, same data: bit-identical whichever way they were launched.
        for (const other of [replayed, plain, unpaced]) expect(Array.from(other.latents)).toEqual(Array.from(captured.latents));
        expect(relativeError(captured.latents, cpu)).toBeLessThan(1e-6);
        expect(relativeError(captured.latents, run.final)).toBeLessThan(1e-5);
        const host = addon.hostRunProgram({ program: request.program, latents: request.latents, noise: Float32Array.from(draws.flatMap((d) => Array.from(d))), batch: 1, height: 8, width: 8 });
        expect(relativeError(captured.latents, host)).toBeLessThan(1e-6);
        expect(captured.gpuMs).toBeGreaterThan(0);
      } finally {
        await denoiser.dispose();
      }
    },
  );

  // A1111's own UniPC: fractional timesteps and history up to order + 1 (order 5 → 6) in the device
  // loop (test/fixtures/a1111/unipc_goldens.json, float32 txt2img runs).
  const uniPcRuns = loadUniPcGoldens().filter((r) => r.refused === undefined && r.dtype === "float32" && r.strength === null);

  test.each(uniPcRuns.map((r) => [r.id, r] as const))("A1111 %s: the captured loop matches the CPU executor and A1111's final latents", async (_id, run) => {
    const program = createScheduler("a1111_unipc", uniPcRunConfig(run)).compile(run.steps);
    const latents = Float32Array.from(run.x0);
    const denoiser = await Denoiser.create({ unet: "analytic" });
    try {
      const result = await denoiser.run({ program: packProgram(program), latents, noise: [], batch: 1, latentHeight: 8, latentWidth: 8 });
      const cpu = runProgram(program, latents, analyticModel("float32"), () => {
        throw new Error("UniPC draws no noise");
      });
      expect(result.evaluations).toBe(program.evals.length);
      expect(relativeError(result.latents, cpu)).toBeLessThan(1e-6);
      expect(relativeError(result.latents, run.final)).toBeLessThan(1e-5);
    } finally {
      await denoiser.dispose();
    }
  });

  test.each([
    ["float32", 1e-6],
    ["float16", 2e-4],
  ] as const)("guidance per image with a %s stand-in matches the CPU mirror", async (dtype, tolerance) => {
    const denoiser = await Denoiser.create({ unet: "analytic", analyticDtype: dtype });
    try {
      for (const name of ["euler_a", "dpmpp_2m_karras", "pndm", "heun", "unipc"]) {
        const program = createScheduler(name).compile(15);
        const guidance = new Float64Array([1, 7.5, 3]);
        const request = { ...syntheticRequest(program, 3, 8, 8, 3), guidance };
        const result = await denoiser.run(request);
        const model = analyticReferenceModel({ batch: 3, imageElems: IMAGE, guidance, sampleType: dtype });
        const noise = request.noise as Float32Array;
        const cpu = runProgram(program, request.latents, model, drawOf(noise, program, 3 * IMAGE));
        expect(relativeError(result.latents, cpu)).toBeLessThan(tolerance);
      }
    } finally {
      await denoiser.dispose();
    }
  });

  test("A1111's DDIM CFG++ renoises with the uncond half on the device: A1111's latents, the CPU mirror's", async () => {
    const denoiser = await Denoiser.create({ unet: "analytic" });
    try {
      for (const run of loadDdimCfgppGoldens().runs.filter((r) => r.dtype === "float32" && r.strength === null)) {
        const program = createScheduler("a1111_ddim_cfgpp", run.eta === null ? {} : { eta: run.eta }).compile(run.steps);
        const generator = new TorchGenerator(run.seed);
        generator.randn([1, 4, 8, 8]); // the initial noise
        const noise = program.evals.filter((e) => e.drawsNoise).map(() => generator.randn([1, 4, 8, 8]));
        const guidance = Float64Array.of(run.cfg_scale);
        const x0 = Float32Array.from(run.x0);
        const result = await denoiser.run({ program: packProgram(program), latents: x0, noise, batch: 1, latentHeight: 8, latentWidth: 8, guidance });
        const cpu = runProgram(program, x0, analyticReferenceModel({ batch: 1, imageElems: IMAGE, guidance }), (j) => noise[program.evals.slice(0, j).filter((e) => e.drawsNoise).length]!);
        expect(relativeError(result.latents, cpu)).toBeLessThan(1e-6);
        expect(relativeError(result.latents, run.final)).toBeLessThan(1e-5);
      }
    } finally {
      await denoiser.dispose();
    }
  });

  test("the graph is captured again when shapes or program length change", async () => {
    const denoiser = await Denoiser.create({ unet: "analytic" });
    try {
      const euler20 = createScheduler("euler").compile(20);
      const euler30 = createScheduler("euler").compile(30);
      const small = syntheticRequest(euler20, 1, 8, 8);
      const graphs: string[] = [];
      graphs.push((await denoiser.run(small)).graph);
      graphs.push((await denoiser.run(small)).graph);
      graphs.push((await denoiser.run(syntheticRequest(euler20, 2, 16, 8))).graph);
      graphs.push((await denoiser.run(syntheticRequest(euler30, 2, 16, 8))).graph);
      graphs.push((await denoiser.run(syntheticRequest(euler30, 2, 16, 8))).graph);
      graphs.push((await denoiser.run(small)).graph);
      expect(graphs).toEqual(["captured", "replayed", "captured", "captured", "replayed", "captured"]);
      // A re-captured graph still computes the right thing.
      const again = await denoiser.run(small);
      const cpu = runProgram(euler20, small.latents, analyticReferenceModel({ batch: 1, imageElems: IMAGE }));
      expect(relativeError(again.latents, cpu)).toBeLessThan(1e-6);
    } finally {
      await denoiser.dispose();
    }
  });

  test("progress arrives once per evaluation, in order, before the run settles", async () => {
    const denoiser = await Denoiser.create({ unet: "analytic" });
    try {
      const program = createScheduler("heun").compile(25);
      const steps: [number, number][] = [];
      await denoiser.run({ ...syntheticRequest(program, 1, 16, 16), onStep: (i, total) => steps.push([i, total]) });
      const M = program.evals.length;
      expect(steps).toEqual(Array.from({ length: M }, (_, i) => [i, M]));
    } finally {
      await denoiser.dispose();
    }
  });

  test("an abort stops the loop between evaluations, and the denoiser keeps working", async () => {
    const denoiser = await Denoiser.create({ unet: "analytic" });
    try {
      const program = createScheduler("ddim").compile(1000);
      const request = syntheticRequest(program, 4, 64, 64);
      const controller = new AbortController();
      let seen = 0;
      const reason = new AbortError("stop requested by the test");
      const run = denoiser.run({
        ...request,
        queueDepth: 1,
        signal: controller.signal,
        onStep: () => {
          seen++;
          if (seen === 3) controller.abort(reason);
        },
      });
      await expect(run).rejects.toBe(reason);
      expect(seen).toBeLessThan(1000);
      const after = await denoiser.run(syntheticRequest(createScheduler("euler").compile(10), 1, 8, 8));
      expect(after.latents.every(Number.isFinite)).toBe(true);
    } finally {
      await denoiser.dispose();
    }
  });

  test("dispose cancels a running loop, is idempotent and refuses later runs", async () => {
    const denoiser = await Denoiser.create({ unet: "analytic" });
    const request = syntheticRequest(createScheduler("ddim").compile(1000), 4, 64, 64);
    let disposing: Promise<void> | undefined;
    const run = denoiser.run({
      ...request,
      queueDepth: 1,
      onStep: (i) => {
        if (i === 2) disposing = denoiser.dispose();
      },
    });
    await expect(run).rejects.toThrow(AbortError);
    await disposing;
    await denoiser.dispose();
    expect(denoiser.disposed).toBe(true);
    await expect(denoiser.run(request)).rejects.toThrow(DisposedError);
  });

  test("the native class: one run at a time, a throwing progress callback rejects the run, dispose guards", async () => {
    const native = new addon.Denoiser({ unet: "analytic" });
    const program = createScheduler("euler").compile(50);
    const { latents, noise, batch, latentHeight, latentWidth } = syntheticRequest(program, 1, 32, 32);
    const options = { program: packProgram(program), latents, noise: noise as Float32Array, batch, height: latentHeight, width: latentWidth };
    const first = native.run(options);
    expect(native.busy).toBe(true);
    expect(thrownBy(() => native.run(options))).toMatchObject({ code: "ERR_BUSY", stage: "denoise" });
    await first;
    expect(native.busy).toBe(false);
    await expect(
      native.run({
        ...options,
        onProgress: () => {
          throw new Error("progress callback failed");
        },
      }),
    ).rejects.toThrow("progress callback failed");
    native.dispose();
    native.dispose();
    expect(native.disposed).toBe(true);
    expect(thrownBy(() => native.run(options))).toMatchObject({ code: "ERR_DISPOSED", message: "denoise: Denoiser is disposed" });
  });

  test("the VAE output and float16 kernels match their host paths bit for bit", async () => {
    const batch = 2;
    const h = 64;
    const w = 48;
    const decoded = Float32Array.from(pseudoNormal(batch * 3 * h * w, 7), (v) => v * 0.8);
    decoded[5] = NaN;
    decoded[17] = Infinity;
    decoded[99] = -Infinity;
    const device = await callNativeAsync(() => addon.deviceVaeToUint8!({ decoded, batch, height: h, width: w }));
    const host = addon.hostVaeToUint8({ decoded, batch, height: h, width: w });
    expect(Array.from(device.pixels)).toEqual(Array.from(host.pixels));
    expect([device.nanCount, device.infCount]).toEqual([1, 2]);
    const bits = addon.hostFloatToHalf(decoded);
    const fromHalf = await addon.deviceVaeToUint8!({ decoded: bits, batch, height: h, width: w });
    expect(Array.from(fromHalf.pixels)).toEqual(Array.from(addon.hostVaeToUint8({ decoded: bits, batch, height: h, width: w }).pixels));
    const values = Float32Array.from(pseudoNormal(100000, 4), (v, i) => v * 2 ** ((i % 48) - 24));
    expect(Array.from(await addon.deviceFloatToHalf!(values))).toEqual(Array.from(addon.hostFloatToHalf(values)));
  });

  test("the TensorRT text encoder's emphasis kernel equals lib/prompt's applyEmphasis, chunk by chunk", async () => {
    const hidden = 96;
    const rows = 3;
    const z = Float32Array.from(pseudoNormal(rows * 77 * hidden, 9), (v) => v + 0.5);
    const multipliers = Float32Array.from({ length: rows * 77 }, (_, i) => (i % 5 === 0 ? 1.21 : i % 7 === 0 ? 1 / 1.1 : 1));
    for (const mode of ["original", "no-norm"] as const) {
      const device = await addon.deviceEmphasis!({ z, multipliers, hidden, mode });
      const host = z.slice();
      for (let r = 0; r < rows; r++) applyEmphasis(mode, host.subarray(r * 77 * hidden, (r + 1) * 77 * hidden), multipliers.subarray(r * 77, (r + 1) * 77), hidden);
      // Products are the same float32 operations; the means differ only in summation order.
      let worst = 0;
      host.forEach((v, i) => {
        worst = Math.max(worst, Math.abs(v - device[i]!));
      });
      expect({ mode, worst: worst <= 1e-6 }).toEqual({ mode, worst: true });
    }
  });

  test("emphasis \"original\" over groups of rows (a prompt's schedule in one A1111 call) equals applyEmphasis on each group", async () => {
    const hidden = 96;
    const rows = 5;
    const z = Float32Array.from(pseudoNormal(rows * 77 * hidden, 4), (v) => v + 0.5);
    // Row 1 has no weights: in its group it is still rescaled by the group's ratio, as in A1111.
    const multipliers = Float32Array.from({ length: rows * 77 }, (_, i) => (Math.floor(i / 77) === 1 ? 1 : i % 3 === 0 ? 1.4 : 1));
    const groups = Int32Array.from([7, 7, 2, 7, 5]);
    const device = await addon.deviceEmphasis!({ z, multipliers, hidden, mode: "original", groups });
    const chunk = 77 * hidden;
    const host = z.slice();
    for (const group of new Set(groups)) {
      const members = [...groups.keys()].filter((r) => groups[r] === group);
      const joined = new Float32Array(members.length * chunk);
      const weights = new Float32Array(members.length * 77);
      members.forEach((r, k) => {
        joined.set(z.subarray(r * chunk, (r + 1) * chunk), k * chunk);
        weights.set(multipliers.subarray(r * 77, (r + 1) * 77), k * 77);
      });
      applyEmphasis("original", joined, weights, hidden);
      members.forEach((r, k) => {
        host.set(joined.subarray(k * chunk, (k + 1) * chunk), r * chunk);
      });
    }
    let worst = 0;
    host.forEach((v, i) => {
      worst = Math.max(worst, Math.abs(v - device[i]!));
    });
    expect(worst).toBeLessThanOrEqual(1e-6);
    // The unweighted row of group 7 really moved (its group's mean was restored, not its own).
    expect(Array.from(device.subarray(chunk, 2 * chunk))).not.toEqual(Array.from(z.subarray(chunk, 2 * chunk)));
  });

  test("a worker thread that exits mid-run frees its denoiser through the cleanup hook", async () => {
    const program = createScheduler("ddim").compile(1000);
    const request = syntheticRequest(program, 4, 64, 64);
    const code = `
      const { parentPort, workerData } = require("node:worker_threads");
      const addon = require(workerData.addon);
      const denoiser = new addon.Denoiser({ unet: "analytic" });
      denoiser.run({ ...workerData.options, queueDepth: 1, onProgress: (done) => {
        if (done === 3) { parentPort.postMessage("exiting"); process.exit(0); }
      } });
    `;
    const { Worker } = await import("node:worker_threads");
    const options = { program: request.program, latents: request.latents, noise: request.noise, batch: 4, height: 64, width: 64 };
    const worker = new Worker(code, { eval: true, workerData: { addon: process.env.SDTRT_ADDON ?? addonPath(), options } });
    const messages: unknown[] = [];
    worker.on("message", (m) => messages.push(m));
    const exitCode = await new Promise((resolve, reject) => {
      worker.once("exit", resolve);
      worker.once("error", reject);
    });
    expect(messages).toEqual(["exiting"]);
    expect(exitCode).toBe(0);
    // The process (and the GPU) is still fine afterwards.
    const denoiser = await Denoiser.create({ unet: "analytic" });
    await denoiser.run(syntheticRequest(createScheduler("euler").compile(5), 1, 8, 8));
    await denoiser.dispose();
  });

  test("cancelNativeWork() (the addon's cancelAll) stops a running loop between evaluations", async () => {
    const denoiser = await Denoiser.create({ unet: "analytic" });
    try {
      const program = createScheduler("ddim").compile(1000);
      let stopped = -1;
      const error = await denoiser
        .run({
          ...syntheticRequest(program, 4, 64, 64),
          queueDepth: 1,
          onStep: (i) => {
            if (i === 2) stopped = cancelNativeWork();
          },
        })
        .catch((e: unknown) => e);
      expect(stopped).toBe(1);
      expect(error).toBeInstanceOf(AbortError);
      const done = Number(/cancelled after (\d+) of 1000 evaluations/.exec((error as Error).message)?.[1]);
      expect(done).toBeLessThan(1000);
      // The denoiser is not disposed by a cancellation: the next run works.
      await denoiser.run(syntheticRequest(createScheduler("euler").compile(5), 1, 8, 8));
    } finally {
      await denoiser.dispose();
    }
  });

  test("process.exit() mid-run: shutdown() on 'exit' stops the running loop and frees it before the process ends", () => {
    // What lib/native/load.ts installs, on the raw addon so that this hook is the only one: without
    // it, process.exit() would leave the loop running into the process teardown.
    const program = createScheduler("ddim").compile(1000);
    const request = syntheticRequest(program, 4, 64, 64);
    const script = `
      const addon = require(process.env.SDTRT_ADDON);
      const data = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
      const options = { program: Float64Array.from(data.program), latents: Float32Array.from(data.latents), noise: Float32Array.from(data.noise), batch: 4, height: 64, width: 64, queueDepth: 1 };
      const denoiser = new addon.Denoiser({ unet: "analytic" });
      process.on("exit", () => process.stdout.write(JSON.stringify({ stopped: addon.shutdown() })));
      denoiser.run({ ...options, onProgress: (done) => { if (done === 3) process.exit(0); } }).catch(() => {});
    `;
    const input = JSON.stringify({ program: Array.from(request.program), latents: Array.from(request.latents), noise: Array.from(request.noise as Float32Array) });
    const run = spawnSync(process.execPath, ["-e", script], { input, encoding: "utf8", env: { ...process.env, SDTRT_ADDON: process.env.SDTRT_ADDON ?? addonPath() } });
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
    expect(JSON.parse(run.stdout)).toEqual({ stopped: 1 });
  });

  test("alternating layouts replay their cached graphs instead of capturing every run", async () => {
    const denoiser = await Denoiser.create({ unet: "analytic" });
    try {
      const program = createScheduler("euler").compile(10);
      // The larger layout first, so the buffers do not grow (and move) afterwards.
      const two = syntheticRequest(program, 2, 16, 16, 5);
      const one = syntheticRequest(program, 1, 16, 16, 7);
      const runs = [];
      for (const request of [two, one, two, one, two]) runs.push(await denoiser.run(request));
      expect(runs.map((r) => r.graph)).toEqual(["captured", "captured", "replayed", "replayed", "replayed"]);
      expect(Array.from(runs[2]!.latents)).toEqual(Array.from(runs[0]!.latents));
      expect(Array.from(runs[3]!.latents)).toEqual(Array.from(runs[1]!.latents));
    } finally {
      await denoiser.dispose();
    }
  });

  test("uncond and cond as two calls (splitCalls): the one-call latents bit for bit, each layout captured then replayed, and the host path's", async () => {
    const denoiser = await Denoiser.create({ unet: "analytic", analyticDtype: "float16" });
    try {
      const program = createScheduler("euler_a").compile(8);
      // 3 images of 3×5 latents: the cond blocks' natural offsets are not 256-byte aligned (unet_layout.h).
      const request = { ...syntheticRequest(program, 3, 3, 5, 9), guidance: new Float64Array([7.5, 1, 3]) };
      const oneCall = await denoiser.run(request);
      const host = addon.hostRunProgram({ ...request, height: 3, width: 5, noise: request.noise as Float32Array, sampleType: "float16" });
      // Device sin/cos may differ from libm's by an ulp, which can flip one float16 rounding.
      expect(relativeError(oneCall.latents, host)).toBeLessThan(2e-4);
      for (const split of [
        { uncondSequenceLength: 154, callRows: 3 },
        { uncondSequenceLength: 154, callRows: 6 },
        { uncondSequenceLength: 231, callRows: 3 },
      ]) {
        const runs = [await denoiser.run({ ...request, splitCalls: split }), await denoiser.run({ ...request, splitCalls: split })];
        expect(runs.map((r) => r.graph)).toEqual(["captured", "replayed"]);
        for (const run of runs) expect(Array.from(run.latents)).toEqual(Array.from(oneCall.latents));
        const hostSplit = addon.hostRunProgram({ ...request, height: 3, width: 5, noise: request.noise as Float32Array, sampleType: "float16", splitCallRows: split.callRows });
        expect(Array.from(hostSplit)).toEqual(Array.from(host));
      }
      await expect(denoiser.run({ ...request, splitCalls: { uncondSequenceLength: 154, callRows: 4 } })).rejects.toThrow(/splitCalls.callRows must be the batch \(3\) or twice it \(6\), got 4/);
      await expect(denoiser.run({ ...request, guidance: null, splitCalls: { uncondSequenceLength: 154, callRows: 3 } })).rejects.toThrow(/splitCalls needs guidance/);
    } finally {
      await denoiser.dispose();
    }
  });

  test("a UNet output that overflows fails the run as a UnetOverflowError, naming the evaluation", async () => {
    const denoiser = await Denoiser.create({ unet: "analytic", analyticDtype: "float16" });
    try {
      const program = createScheduler("euler").compile(8);
      const request = syntheticRequest(program, 1, 8, 8);
      request.latents[10] = 1e9; // beyond float16: the stand-in's input and output become Inf
      const error = await denoiser.run(request).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(UnetOverflowError);
      expect(error).toMatchObject({ code: "ERR_UNET_NAN", evaluation: 0 });
      expect((error as UnetOverflowError).count).toBeGreaterThan(0);
    } finally {
      await denoiser.dispose();
    }
  });

  test("a Denoiser on a device index that does not exist is refused", async () => {
    await expect(Denoiser.create({ unet: "analytic", device: 1000 })).rejects.toThrow(NativeError);
  });

  test("reports loop time per evaluation with and without graphs", async () => {
    const denoiser = await Denoiser.create({ unet: "analytic", analyticDtype: "float16" });
    try {
      const program = createScheduler("euler").compile(50);
      const request = { ...syntheticRequest(program, 1, 64, 64), guidance: new Float64Array([7.5]) };
      const measure = async (useGraphs: boolean) => {
        await denoiser.run({ ...request, useGraphs });
        const r = await denoiser.run({ ...request, useGraphs, queueDepth: 0 });
        return { gpuMsPerEval: r.gpuMs / r.evaluations, hostMsPerEval: r.hostMs / r.evaluations, graph: r.graph };
      };
      const report = { graphs: await measure(true), plain: await measure(false), evaluations: program.evals.length };
      console.info(`analytic loop, 64×64 latents, CFG batch 2, ${report.evaluations} evaluations: ${JSON.stringify(report)}`);
      if (process.env.SDTRT_GPU_REPORT) writeFileSync(process.env.SDTRT_GPU_REPORT, JSON.stringify(report, null, 2));
      expect(report.graphs.graph).toBe("replayed");
      expect(report.graphs.gpuMsPerEval).toBeGreaterThan(0);
    } finally {
      await denoiser.dispose();
    }
  });
});
