/**
 * The latents stay on the device between the denoise loop and the VAE (issue 8):
 * `Denoiser.run({ output: "device" })` returns x_M as a DeviceTensor of its own, bit for bit the
 * host output; the scale-cast kernel that divides by the VAE scaling factor matches its host path
 * and the TypeScript division bit for bit; and, where TensorRT can build engines, decoding device
 * latents with `scalingFactor` gives the same pixels as decoding host latents divided in TS.
 * Skipped (with the reason) where there is no GPU; `npm run test:gpu` runs it.
 */
import { join } from "node:path";
import { expect, test } from "@jest/globals";
import { Denoiser } from "../../lib/native/denoiser.js";
import { callNative, callNativeAsync, loadNativeBinding } from "../../lib/native/load.js";
import { tensorRtBindingOf, type TrtContext, type TrtDeviceScratch, type TrtEngine } from "../../lib/native/tensorrt-types.js";
import type { NativeDeviceTensor } from "../../lib/native/types.js";
import { createScheduler } from "../../lib/schedulers/index.js";
import { divideInTs, floatBits, halfBits, scaleCastInputs } from "../native/float-bits.js";
import { describeGpu, describeTensorRt, syntheticRequest } from "./support.js";

const SCALING_FACTOR = 0.18215; // tiny-sd's vae_decoder/config.json

async function download(tensor: NativeDeviceTensor): Promise<Float32Array> {
  const values = await callNativeAsync(() => tensor.toHost());
  expect(values).toBeInstanceOf(Float32Array);
  return values as Float32Array;
}

describeGpu("latents on the device (analytic stand-in, scale-cast kernel)", ({ addon }) => {
  test.each([
    ["euler_a", "float32", 1],
    ["dpmpp_2m_karras", "float32", 2],
    ["heun", "float16", 3],
    ["unipc", "float16", 2],
  ] as const)("%s (%s stand-in, batch %d): device output downloaded equals the host output bit for bit", async (name, dtype, batch) => {
    const denoiser = await Denoiser.create({ unet: "analytic", analyticDtype: dtype });
    try {
      const program = createScheduler(name).compile(12);
      const request = { ...syntheticRequest(program, batch, 8, 16, batch), guidance: new Float64Array(batch).fill(7.5) };
      const host = await denoiser.run(request);
      const device = await denoiser.run({ ...request, output: "device" });
      const plain = await denoiser.run({ ...request, output: "device", useGraphs: false });
      try {
        // Same layout: the output mode does not change the captured graph.
        expect([host.graph, device.graph, plain.graph]).toEqual(["captured", "replayed", "disabled"]);
        for (const result of [device, plain]) {
          expect(result.latents.dtype).toBe("float32");
          expect(result.latents.shape).toEqual([batch, 4, 8, 16]);
          expect(result.latents.byteLength).toBe(host.latents.byteLength);
          expect(floatBits(await download(result.latents))).toEqual(floatBits(host.latents));
        }
      } finally {
        device.latents.dispose();
        plain.latents.dispose();
      }
    } finally {
      await denoiser.dispose();
    }
  });

  test("the device latents are a buffer of their own: later runs, and disposing the denoiser, leave them alone", async () => {
    const denoiser = await Denoiser.create({ unet: "analytic" });
    const program = createScheduler("euler").compile(8);
    const first = syntheticRequest(program, 1, 8, 8, 11);
    const firstHost = (await denoiser.run(first)).latents;
    const kept = (await denoiser.run({ ...first, output: "device" })).latents;
    // Same shapes and program: the next runs reuse the ring buffers x_M was copied from.
    const other = await denoiser.run({ ...syntheticRequest(program, 1, 8, 8, 99), output: "device" });
    await denoiser.run(syntheticRequest(program, 1, 8, 8, 7));
    expect(floatBits(await download(other.latents))).not.toEqual(floatBits(firstHost));
    expect(floatBits(await download(kept))).toEqual(floatBits(firstHost));
    await denoiser.dispose();
    expect(floatBits(await download(kept))).toEqual(floatBits(firstHost));
    kept.dispose();
    kept.dispose();
    expect(kept.disposed).toBe(true);
    await expect(callNativeAsync(() => kept.toHost())).rejects.toMatchObject({ code: "ERR_DISPOSED" });
    other.latents.dispose();
  });

  test("a dispose() while toHost() runs frees the memory afterwards", async () => {
    const denoiser = await Denoiser.create({ unet: "analytic" });
    try {
      const request = syntheticRequest(createScheduler("ddim").compile(20), 4, 64, 64, 5);
      const host = await denoiser.run(request);
      const { latents } = await denoiser.run({ ...request, output: "device" });
      const pending = latents.toHost();
      latents.dispose();
      expect(floatBits((await pending) as Float32Array)).toEqual(floatBits(host.latents));
    } finally {
      await denoiser.dispose();
    }
  });

  test.each(["divide", "multiply"] as const)("the scale-cast kernel (%s) matches its host path and TypeScript bit for bit", async (op) => {
    const values = scaleCastInputs();
    for (const factor of [0.18215, 0.13025, 1.5305]) {
      const device = (await callNativeAsync(() => addon.deviceScaleCast!({ values, factor, op }))) as Float32Array;
      const host = addon.hostScaleCast({ values, factor, op }) as Float32Array;
      const s = Math.fround(factor);
      const ts = op === "divide" ? divideInTs(values, factor) : Float32Array.from(values, (x) => x * s);
      expect(floatBits(device)).toEqual(floatBits(host));
      expect(floatBits(device)).toEqual(floatBits(ts));
      const half = (await callNativeAsync(() => addon.deviceScaleCast!({ values, factor, op, dtype: "float16" }))) as Uint16Array;
      expect(halfBits(half)).toEqual(halfBits(addon.hostFloatToHalf(ts)));
      const bits = addon.hostFloatToHalf(values);
      const fromHalf = (await callNativeAsync(() => addon.deviceScaleCast!({ values: bits, factor, op }))) as Float32Array;
      expect(floatBits(fromHalf)).toEqual(floatBits(addon.hostScaleCast({ values: bits, factor, op }) as Float32Array));
    }
  });
});

describeTensorRt("decodeImage from device latents (TensorRT, tiny-sd VAE decoder)", () => {
  const load = loadNativeBinding();
  if (!load.loaded) throw new Error(load.message);
  const binding = tensorRtBindingOf(load.binding)!;

  test("device latents + scalingFactor decode to the same pixels as host latents divided in TypeScript", async () => {
    const onnxPath = join(process.cwd(), "models", "tiny-sd", "vae_decoder", "model.onnx");
    const built = await callNativeAsync(
      () => binding.buildEngine({ onnxPath, profiles: [{ latent_sample: { min: [1, 4, 8, 8], opt: [2, 4, 8, 8], max: [2, 4, 8, 8] } }] }).promise,
    );
    let engine: TrtEngine | undefined;
    let scratch: TrtDeviceScratch | undefined;
    let context: TrtContext | undefined;
    const denoiser = await Denoiser.create({ unet: "analytic" });
    try {
      engine = await callNativeAsync(() => binding.loadEngine(built.plan, { name: "vae_decoder" }));
      const input = engine.io.find((t) => t.mode === "input")!.name;
      const output = engine.io.find((t) => t.mode === "output")!.name;
      scratch = callNative(() => new binding.DeviceScratch(Math.max(engine!.deviceMemoryBytes, 1)));
      context = callNative(() => engine!.createContext(scratch!));
      const ctx = context;
      for (const batch of [1, 2]) {
        const program = createScheduler("dpmpp_2m").compile(10);
        const request = { ...syntheticRequest(program, batch, 8, 8, 40 + batch), guidance: new Float64Array(batch).fill(5) };
        const hostLatents = (await denoiser.run(request)).latents;
        const deviceLatents = (await denoiser.run({ ...request, output: "device" })).latents;
        try {
          const io = { batch, height: 8, width: 8, input, output };
          const fromTs = await callNativeAsync(() => ctx.decodeImage({ ...io, latents: divideInTs(hostLatents, SCALING_FACTOR) }));
          const fromDevice = await callNativeAsync(() => ctx.decodeImage({ ...io, latents: deviceLatents, scalingFactor: SCALING_FACTOR }));
          const fromHost = await callNativeAsync(() => ctx.decodeImage({ ...io, latents: hostLatents, scalingFactor: SCALING_FACTOR }));
          expect([fromDevice.width, fromDevice.height]).toEqual([64, 64]);
          expect(fromTs.pixels.length).toBe(batch * 64 * 64 * 3);
          expect(fromDevice.pixels.equals(fromTs.pixels)).toBe(true);
          expect(fromHost.pixels.equals(fromTs.pixels)).toBe(true);
          // The call pins the tensor, it does not consume it.
          expect(deviceLatents.disposed).toBe(false);
          expect(floatBits(await download(deviceLatents))).toEqual(floatBits(hostLatents));
        } finally {
          deviceLatents.dispose();
        }
      }

      // Refusals: wrong shape, disposed tensor, a scaling factor that is not a positive number.
      const { latents } = await denoiser.run({ ...syntheticRequest(createScheduler("euler").compile(3), 1, 8, 8), output: "device" });
      const io = { batch: 2, height: 8, width: 8, input, output };
      const refused = (fn: () => unknown) => {
        try {
          fn();
        } catch (e) {
          return e as Error & { code?: string };
        }
        throw new Error("expected a throw");
      };
      expect(refused(() => ctx.decodeImage({ ...io, latents }))).toMatchObject({ name: "RangeError", code: "ERR_OUT_OF_RANGE" });
      expect(refused(() => ctx.decodeImage({ ...io, batch: 1, latents, scalingFactor: 0 })).message).toMatch(/scalingFactor must be a finite number > 0/);
      latents.dispose();
      expect(refused(() => ctx.decodeImage({ ...io, batch: 1, latents })).message).toMatch(/DeviceTensor is disposed/);
    } finally {
      context?.dispose();
      scratch?.dispose();
      engine?.dispose();
      await denoiser.dispose();
    }
  }, 600_000);
});
