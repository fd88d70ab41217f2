/**
 * The ONNX Runtime worker thread behind `OrtHost` (ort-host.ts): it owns every session and runs
 * one request at a time, in arrival order. Protocol: ort-protocol.ts.
 *
 * Besides plain `run` calls it runs a whole denoise loop (`cpu-denoise.ts`) next to the UNet
 * session, so no model evaluation waits for the main thread: per-step progress (and, when asked,
 * each step's latents) is posted back without waiting, and a stop request arrives through a
 * SharedArrayBuffer flag polled between evaluations. `decode` converts the VAE output to 8-bit RGB
 * here as well, so that work stays off the main thread too. `generate` chains the text encoder,
 * the denoise and the decoder in one request: a txt2img generation wakes this thread once and
 * the main thread once, and its embeddings never cross.
 *
 * This file only runs compiled (dist/backends/cpu/ort-worker.js), as a worker's entry module.
 */
import { parentPort } from "node:worker_threads";
import { createRequire } from "node:module";
import type * as Ort from "onnxruntime-node";
import { AbortError } from "../../errors.js";
import { decodedToRgb } from "../../image/pixels.js";
import { divideFloat32 } from "../../sampler/latents.js";
import { applyEmphasis } from "../../prompt/emphasis.js";
import { textsAt } from "../../prompt/schedule.js";
import { runCpuDenoise, TOKENS, type CpuDenoiseHooks, type CpuDenoiseJob } from "./denoise-loop.js";
import { joinEncoderStates, pooledOfRows, uncondThenCond, zeroRows } from "../sdxl-conditioning.js";
import type {
  AddedFeeds,
  DecodeValue,
  DenoiseValue,
  EncodeJob,
  EncodeValue,
  FinalReply,
  GenerateJob,
  GenerateStage,
  GenerateValue,
  HostTensor,
  LoadValue,
  ModelCalls,
  NoiseMessage,
  PromptRows,
  RunValue,
  SdxlGenerateJob,
  StageReply,
  StepReply,
  StepReport,
  WorkerRequest,
} from "./ort-protocol.js";
import type { TensorSpec } from "../../model/graph-io.js";

const ort = createRequire(import.meta.url)("onnxruntime-node") as typeof Ort;
ort.env.logLevel = "fatal";
const port = parentPort!;
const sessions = new Map<number, Ort.InferenceSession>();
/** How each session was made, so it can be made again (see `freeArenas`). */
const recipes = new Map<number, { path: string; bytes?: Uint8Array; options: Ort.InferenceSession.SessionOptions }>();
let nextHandle = 1;

type Metadata = Ort.InferenceSession["inputMetadata"];

function describe(meta: Metadata): TensorSpec[] {
  return meta.map((m) => ({ name: m.name, type: m.isTensor ? m.type : "non-tensor", shape: m.isTensor ? [...m.shape] : [] }));
}

function session(handle: number): Ort.InferenceSession {
  const s = sessions.get(handle);
  if (!s) throw new Error(`session ${handle} was released`);
  return s;
}

/**
 * The ONNX Runtime tensor over each feed's array (no copy). One per feed object: the denoise loop
 * passes the same feed objects to every UNet call, their arrays updated in place, so its tensors
 * are made once per loop instead of once per call.
 */
const ortTensors = new WeakMap<HostTensor, Ort.Tensor>();
function toOrt(feeds: Record<string, HostTensor>): Record<string, Ort.Tensor> {
  const out: Record<string, Ort.Tensor> = {};
  for (const name in feeds) {
    const feed = feeds[name]!;
    let tensor = ortTensors.get(feed);
    if (!tensor || tensor.data !== feed.data) {
      tensor = new ort.Tensor(feed.type, feed.data, feed.dims);
      ortTensors.set(feed, tensor);
    }
    out[name] = tensor;
  }
  return out;
}

/** One `session.run`, timed: the only time the overhead ratio counts as ONNX Runtime's. */
async function timedRun(s: Ort.InferenceSession, feeds: Record<string, HostTensor>, outputs: string[]): Promise<{ results: Ort.InferenceSession.ReturnType; ms: number }> {
  const ortFeeds = toOrt(feeds);
  const start = performance.now();
  const results = await s.run(ortFeeds, outputs);
  return { results, ms: performance.now() - start };
}

interface Answer {
  value: unknown;
  transfer?: ArrayBuffer[];
}

/** Progress replies of one request: nothing, step indices, or steps with their latents. */
function stepPoster(id: number, steps: StepReport): ((step: number, x: Float32Array) => void) | undefined {
  if (steps === "none") return undefined;
  // Posted, never awaited: the next evaluation starts at once.
  return (step, x) => {
    if (steps === "latents") {
      const latents = x.slice();
      port.postMessage({ id, step, latents } satisfies StepReply, [latents.buffer]);
    } else {
      port.postMessage({ id, step } satisfies StepReply);
    }
  };
}

/**
 * The step noise of one `generate` request as it arrives from the main thread (`NoiseMessage`):
 * draws may come before the request starts or while its loop runs; the loop takes them in order.
 */
class NoiseInbox {
  readonly #draws: Float32Array[] = [];
  #waiter: { index: number; resolve: (draw: Float32Array) => void; reject: (error: Error) => void } | null = null;
  #cancelled: Error | null = null;

  put(index: number, draw: Float32Array): void {
    this.#draws[index] = draw;
    if (this.#waiter?.index === index) {
      const { resolve } = this.#waiter;
      this.#waiter = null;
      resolve(draw);
    }
  }

  /** No more draws will come: the loop stops as if its stop flag were raised. */
  cancel(): void {
    this.#cancelled = new AbortError("the generation was stopped");
    this.#waiter?.reject(this.#cancelled);
    this.#waiter = null;
  }

  take(index: number): Float32Array | Promise<Float32Array> {
    const draw = this.#draws[index];
    if (draw) {
      delete this.#draws[index]; // the loop keeps what it needs
      return draw;
    }
    if (this.#cancelled) return Promise.reject(this.#cancelled);
    return new Promise((resolve, reject) => {
      this.#waiter = { index, resolve, reject };
    });
  }
}

const noiseInboxes = new Map<number, NoiseInbox>();
/** Requests are answered in id order: a noise message for an id up to this one is for a finished request. */
let lastFinishedGenerate = 0;

function noiseInbox(id: number): NoiseInbox | undefined {
  if (id <= lastFinishedGenerate) return undefined;
  let inbox = noiseInboxes.get(id);
  if (!inbox) {
    inbox = new NoiseInbox();
    noiseInboxes.set(id, inbox);
  }
  return inbox;
}

function receiveNoise(message: NoiseMessage): void {
  const inbox = noiseInbox(message.id);
  if (message.op === "noise") inbox?.put(message.index, message.data);
  else inbox?.cancel();
}

/** The whole denoise loop next to the UNet; `latents` is null when the stop flag ended it. */
async function denoise(
  unet: Ort.InferenceSession,
  job: CpuDenoiseJob,
  stop: Int32Array,
  onStep: ((step: number, x: Float32Array) => void) | undefined,
  calls: ModelCalls,
  switching?: Pick<CpuDenoiseHooks, "contextAt" | "textEmbedsAt">,
  noise?: NoiseInbox,
): Promise<Float32Array | null> {
  try {
    return await runCpuDenoise(
      job,
      async (feeds) => {
        const run = await timedRun(unet, feeds, [job.io.outputName]);
        calls.calls++;
        calls.ms += run.ms;
        return run.results[job.io.outputName]!.data as Float32Array;
      },
      {
        stopRequested: () => Atomics.load(stop, 0) !== 0,
        ...(onStep ? { onStep } : {}),
        ...switching,
        ...(noise ? { noise: (k: number) => noise.take(k) } : {}),
      },
    );
  } catch (error) {
    if (error instanceof AbortError) return null;
    throw error;
  }
}

/**
 * Images per VAE decoder call. Decoding a batch image by image keeps ONNX Runtime's arena at one
 * image's activations (at 512² four images at once held ~0.6 GB more) and was no slower in the
 * measurements of issue 16; the rows are independent, so the pixels are the same either way.
 */
const DECODE_SLICE = 1;

/**
 * The VAE decoder, `DECODE_SLICE` images per call, each output converted to 8-bit RGB here
 * (`decodedToRgb`). `dims` is the shape the whole batch's output would have had.
 */
async function decode(handle: number, latentName: string, imageName: string, latents: HostTensor, source: string): Promise<DecodeValue> {
  const [batch = 0, ...rest] = latents.dims;
  const perImage = rest.reduce((n, d) => n * d, 1);
  const images: Uint8Array[] = [];
  let dims: number[] = [];
  let ms = 0;
  for (let first = 0; first < batch; first += DECODE_SLICE) {
    const rows = Math.min(DECODE_SLICE, batch - first);
    const slice: HostTensor = { type: "float32", dims: [rows, ...rest], data: (latents.data as Float32Array).subarray(first * perImage, (first + rows) * perImage) };
    const run = await timedRun(session(handle), { [latentName]: slice }, [imageName]);
    ms += run.ms;
    const image = run.results[imageName]!;
    const [, channels, height, width] = image.dims;
    dims = [batch, ...image.dims.slice(1)];
    if (image.dims.length !== 4 || image.dims[0] !== rows || channels !== 3) return { dims: [...image.dims], images: [], ms }; // the caller reports the shape
    images.push(...decodedToRgb(image.data as Float32Array, rows, height!, width!, source, first));
  }
  return { dims, images, ms };
}

/**
 * The embeddings of every text of one prompt list, [texts, 77 · chunks, hidden]: every chunk in one
 * encoder call, then each chunk's output weighted by the emphasis — A1111 applies it per chunk,
 * with "original"'s means taken over the texts it encodes together (one prompt's schedule). A
 * text's chunks are consecutive rows, so they come out joined along the sequence.
 */
async function encodeTexts(job: Pick<GenerateJob, "textEncoder" | "emphasis">, prompts: PromptRows, hiddenSize: number, calls: ModelCalls): Promise<Float32Array> {
  return (await encodeTextsPooled(job.textEncoder, job.emphasis, prompts, hiddenSize, calls)).states;
}

/**
 * `encodeTexts` for an encoder given on its own, also returning its pooled output
 * [texts · chunks, P] (unweighted) when `encoder.pooledName` names one (SDXL's text_encoder_2).
 */
async function encodeTextsPooled(
  encoder: GenerateJob["textEncoder"] & { pooledName?: string },
  emphasis: GenerateJob["emphasis"],
  prompts: PromptRows,
  hiddenSize: number,
  calls: ModelCalls,
): Promise<{ states: Float32Array; pooled?: Float32Array }> {
  const job = { emphasis };
  const { handle, idsName, hiddenName, pooledName } = encoder;
  const { results, ms } = await timedRun(session(handle), { ...encoder.extraFeeds, [idsName]: prompts.ids }, pooledName ? [hiddenName, pooledName] : [hiddenName]);
  calls.calls++;
  calls.ms += ms;
  const hidden = results[hiddenName]!;
  const chunkSize = TOKENS * hiddenSize;
  const chunkRows = prompts.ids.dims[0]!;
  if (hidden.data.length !== chunkRows * chunkSize) {
    throw Object.assign(new Error(`returned ${hiddenName} of shape [${hidden.dims.join(", ")}], expected [${chunkRows}, ${TOKENS}, ${hiddenSize}]`), { code: "ERR_OUTPUT_SHAPE" });
  }
  const data = hidden.data as Float32Array;
  const { chunks, groupOf, multipliers } = prompts;
  // The texts of a group are consecutive.
  for (let first = 0; first < groupOf.length; ) {
    let end = first + 1;
    while (end < groupOf.length && groupOf[end] === groupOf[first]) end++;
    for (let c = 0; c < chunks; c++) {
      const rows = Array.from({ length: end - first }, (_, i) => (first + i) * chunks + c);
      if (rows.length === 1) {
        const r = rows[0]!;
        applyEmphasis(job.emphasis, data.subarray(r * chunkSize, (r + 1) * chunkSize), multipliers.subarray(r * TOKENS, (r + 1) * TOKENS), hiddenSize);
        continue;
      }
      const z = gather(data, chunkSize, rows);
      applyEmphasis(job.emphasis, z, gather(multipliers, TOKENS, rows), hiddenSize);
      rows.forEach((r, i) => {
        data.set(z.subarray(i * chunkSize, (i + 1) * chunkSize), r * chunkSize);
      });
    }
    first = end;
  }
  return pooledName ? { states: data, pooled: results[pooledName]!.data as Float32Array } : { states: data };
}

/**
 * SDXL: both encoders on both prompt lists, joined as diffusers joins them (sdxl-conditioning.ts):
 * the UNet's encoder_hidden_states, text_embeds and time_ids, [uncond; cond] with guidance. Every
 * text is encoded once; `at(evalIndex)` joins each row's texts of that evaluation (prompt editing
 * switches both the embeddings and the pooled text_embeds, as A1111's dict conds do), the same
 * arrays while the texts hold.
 */
async function sdxlConditioning(
  job: GenerateJob,
  sdxl: SdxlGenerateJob,
  calls: ModelCalls,
): Promise<{ at: (evalIndex: number) => { context: Float32Array; textEmbeds: Float32Array }; added: Omit<AddedFeeds, "textEmbeds">; edited: boolean }> {
  const { batch } = job.denoise;
  const [h1, h2] = sdxl.hiddenSizes;
  const encodeSide = async (first: PromptRows, second: PromptRows) => ({
    // h1 = 0: a refiner, conditioned on text_encoder_2 alone.
    first,
    second,
    e1: h1 === 0 ? null : await encodeTextsPooled(job.textEncoder, job.emphasis, first, h1, calls),
    e2: await encodeTextsPooled(sdxl.textEncoder2, job.emphasis, second, h2, calls),
  });
  type Side = Awaited<ReturnType<typeof encodeSide>>;
  const joinAt = (side: Side, evalIndex: number, zero?: Uint8Array) => {
    const rows1 = textsAt(side.first, evalIndex);
    const rows2 = textsAt(side.second, evalIndex);
    const context = joinEncoderStates(side.e1 && { states: side.e1.states, hidden: h1, rowOf: rows1 }, { states: side.e2.states, hidden: h2, rowOf: rows2 }, side.second.chunks, batch);
    const pooled = pooledOfRows(side.e2.pooled!, sdxl.pooledSize, side.second.chunks, rows2);
    if (zero) zeroRows(zero, context, pooled);
    return { context, pooled, key: `${Array.from(rows1).join(",")}/${Array.from(rows2).join(",")}` };
  };
  const cond = await encodeSide(job.cond, sdxl.cond2);
  const uncond = job.uncond && !sdxl.zeroUncond ? await encodeSide(job.uncond, sdxl.uncond2!) : null;
  const edited = [job.cond, sdxl.cond2, job.uncond, sdxl.uncond2].some((p) => p?.schedules !== undefined);
  let key = "";
  let current: { context: Float32Array; textEmbeds: Float32Array } = { context: new Float32Array(0), textEmbeds: new Float32Array(0) };
  const at = (evalIndex: number) => {
    const c = joinAt(cond, evalIndex);
    // force_zeros_for_empty_prompt: torch.zeros_like(prompt_embeds), zeros_like(pooled_prompt_embeds).
    const u = !job.uncond ? null : uncond ? joinAt(uncond, evalIndex, sdxl.zeroUncondRows) : { context: new Float32Array(c.context.length), pooled: new Float32Array(c.pooled.length), key: "0" };
    const next = `${u?.key ?? ""}|${c.key}`;
    if (next !== key) {
      key = next;
      current = { context: uncondThenCond(u?.context ?? null, c.context), textEmbeds: uncondThenCond(u?.pooled ?? null, c.pooled) };
    }
    return current;
  };
  return {
    at,
    edited,
    added: {
      textEmbedsName: sdxl.textEmbedsName,
      timeIdsName: sdxl.timeIdsName,
      timeIds: uncondThenCond(job.uncond ? sdxl.negativeTimeIds : null, sdxl.timeIds),
      textEmbedsSize: sdxl.pooledSize,
      timeIdsSize: sdxl.timeIdsSize,
    },
  };
}

/** `encode` on SDXL: every text through both encoders, joined per token, with its pooled embedding. */
async function sdxlTexts(job: EncodeJob, sdxl: NonNullable<EncodeJob["sdxl"]>, calls: ModelCalls): Promise<{ embeddings: Float32Array; pooled: Float32Array }> {
  const [h1, h2] = sdxl.hiddenSizes;
  const { chunks } = job.prompts;
  const texts = job.prompts.ids.dims[0]! / chunks;
  const identity = Int32Array.from({ length: texts }, (_, i) => i);
  const e1 = h1 === 0 ? null : await encodeTextsPooled(job.textEncoder, job.emphasis, job.prompts, h1, calls);
  const e2 = await encodeTextsPooled(sdxl.textEncoder2, job.emphasis, sdxl.prompts2, h2, calls);
  const embeddings = joinEncoderStates(e1 && { states: e1.states, hidden: h1, rowOf: identity }, { states: e2.states, hidden: h2, rowOf: identity }, chunks, texts);
  const pooled = pooledOfRows(e2.pooled!, sdxl.pooledSize, chunks, identity);
  if (sdxl.zeroTexts) zeroRows(sdxl.zeroTexts, embeddings, pooled);
  return { embeddings, pooled };
}

/** Rows `rows` of a [*, size] array, in that order. */
function gather(data: Float32Array, size: number, rows: ArrayLike<number>): Float32Array {
  const out = new Float32Array(rows.length * size);
  for (let i = 0; i < rows.length; i++) out.set(data.subarray(rows[i]! * size, (rows[i]! + 1) * size), i * size);
  return out;
}

/** `generate`: text encoder → denoise → decoder without leaving the worker. */
async function generate(id: number, job: GenerateJob, stop: Int32Array, steps: StepReport): Promise<Answer> {
  const calls: GenerateValue["calls"] = { textEncoder: { calls: 0, ms: 0 }, unet: { calls: 0, ms: 0 }, vaeDecoder: { calls: 0, ms: 0 } };
  const stageMs: GenerateValue["stageMs"] = { textEncode: 0, denoise: 0, decode: 0 };
  const stopped = (): Answer => ({ value: { latents: null, images: [], imageDims: [], calls, stageMs } satisfies GenerateValue });
  let stage: GenerateStage = "textEncoder";
  try {
    const { denoise: d } = job;
    let t = performance.now();
    const condTokens = job.cond.chunks * TOKENS;
    const uncondTokens = job.uncond ? job.uncond.chunks * TOKENS : condTokens;
    if (job.sdxl) {
      const { at, added, edited } = await sdxlConditioning(job, job.sdxl, calls.textEncoder);
      const { context, textEmbeds } = at(0);
      stageMs.textEncode = performance.now() - t;
      if (steps !== "none") port.postMessage({ id, stage: "text-encoded" } satisfies StageReply);
      if (Atomics.load(stop, 0) !== 0) return stopped();
      stage = "unet";
      t = performance.now();
      const switching = edited ? { contextAt: (j: number) => at(j).context, textEmbedsAt: (j: number) => at(j).textEmbeds } : undefined;
      const latents = await denoise(session(job.unet), { ...d, context, condTokens, uncondTokens, added: { ...added, textEmbeds } }, stop, stepPoster(id, steps), calls.unet, switching, noiseInbox(id));
      stageMs.denoise = performance.now() - t;
      if (latents === null || Atomics.load(stop, 0) !== 0) return stopped();
      return await decodeStage(job, latents, calls, stageMs, (s) => {
        stage = s;
      });
    }
    const cond = await encodeTexts(job, job.cond, d.hiddenSize, calls.textEncoder);
    const uncond = job.uncond ? await encodeTexts(job, job.uncond, d.hiddenSize, calls.textEncoder) : null;
    // encoder_hidden_states = cat([uncond, cond]), uncond first, as diffusers builds it; with prompt
    // editing it changes between evaluations (built once per change, reused while it holds).
    let key = "";
    let context: Float32Array = new Float32Array(0);
    const contextAt = (evalIndex: number): Float32Array => {
      const condRows = textsAt(job.cond, evalIndex);
      const uncondRows = job.uncond ? textsAt(job.uncond, evalIndex) : [];
      const next = `${Array.from(uncondRows).join(",")}|${Array.from(condRows).join(",")}`;
      if (next !== key) {
        key = next;
        const parts = [...(uncond ? [gather(uncond, uncondTokens * d.hiddenSize, uncondRows)] : []), gather(cond, condTokens * d.hiddenSize, condRows)];
        context = parts.length === 1 ? parts[0]! : new Float32Array(parts[0]!.length + parts[1]!.length);
        if (parts.length === 2) {
          context.set(parts[0]!);
          context.set(parts[1]!, parts[0]!.length);
        }
      }
      return context;
    };
    contextAt(0);
    stageMs.textEncode = performance.now() - t;
    if (steps !== "none") port.postMessage({ id, stage: "text-encoded" } satisfies StageReply);
    if (Atomics.load(stop, 0) !== 0) return stopped();

    stage = "unet";
    t = performance.now();
    const edited = job.cond.schedules !== undefined || job.uncond?.schedules !== undefined;
    const latents = await denoise(session(job.unet), { ...d, context, condTokens, uncondTokens }, stop, stepPoster(id, steps), calls.unet, edited ? { contextAt } : undefined, noiseInbox(id));
    stageMs.denoise = performance.now() - t;
    if (latents === null || Atomics.load(stop, 0) !== 0) return stopped();

    return await decodeStage(job, latents, calls, stageMs, (s) => {
      stage = s;
    });
  } catch (error) {
    // The host names the model (and its feeds) from the stage.
    throw Object.assign(error instanceof Error ? error : new Error(String(error)), { model: stage });
  }
}

/** `generate`'s last stage: x_M / scaling_factor through the VAE decoder. */
async function decodeStage(
  job: GenerateJob,
  latents: Float32Array,
  calls: GenerateValue["calls"],
  stageMs: GenerateValue["stageMs"],
  enter: (stage: GenerateStage) => void,
): Promise<Answer> {
  enter("vaeDecoder");
  const t = performance.now();
  const { decoder, denoise: d } = job;
  const { batch, latentHeight, latentWidth } = d;
  const scaled = divideFloat32(latents, decoder.scalingFactor);
  const image = await decode(decoder.handle, decoder.latentName, decoder.imageName, { type: "float32", dims: [batch, 4, latentHeight, latentWidth], data: scaled }, decoder.source);
  calls.vaeDecoder = { calls: Math.ceil(batch / DECODE_SLICE), ms: image.ms };
  stageMs.decode = performance.now() - t;
  const value: GenerateValue = { latents, images: image.images, imageDims: image.dims, calls, stageMs };
  return { value, transfer: [latents.buffer as ArrayBuffer, ...image.images.map((i) => i.buffer as ArrayBuffer)] };
}

async function handle(message: WorkerRequest): Promise<Answer> {
  switch (message.op) {
    case "load": {
      const options: Ort.InferenceSession.SessionOptions = {
        executionProviders: ["cpu"],
        graphOptimizationLevel: "all",
        // The arena stays on: without it every UNet call is 2.4–3.7× slower (measured). What a
        // failed oversized run left in it is given back by `freeArenas`.
        // Only fatal messages: errors come back to the caller as one typed error, not as
        // ONNX Runtime's coloured log lines on stderr.
        logSeverityLevel: 4,
      };
      if (message.intraOpThreads) options.intraOpNumThreads = message.intraOpThreads;
      const s = message.bytes ? await ort.InferenceSession.create(message.bytes, options) : await ort.InferenceSession.create(message.path, options);
      const handle = nextHandle++;
      sessions.set(handle, s);
      recipes.set(handle, message.bytes ? { path: message.path, bytes: message.bytes, options } : { path: message.path, options });
      const value: LoadValue = { handle, inputs: describe(s.inputMetadata), outputs: describe(s.outputMetadata) };
      return { value };
    }
    case "run": {
      const { results, ms } = await timedRun(session(message.handle), message.feeds, message.outputs);
      const outputs: Record<string, HostTensor> = {};
      const transfer: ArrayBuffer[] = [];
      for (const name of message.outputs) {
        const t = results[name]!;
        const data = t.data as HostTensor["data"];
        outputs[name] = { type: t.type as HostTensor["type"], dims: [...t.dims], data };
        transfer.push(data.buffer as ArrayBuffer);
      }
      const value: RunValue = { outputs, ms };
      return { value, transfer };
    }
    case "denoise": {
      const calls: ModelCalls = { calls: 0, ms: 0 };
      const latents = await denoise(session(message.handle), message.job, message.stop, stepPoster(message.id, message.steps), calls);
      const value: DenoiseValue = { latents, ...calls };
      return latents ? { value, transfer: [latents.buffer as ArrayBuffer] } : { value };
    }
    case "decode": {
      const value = await decode(message.handle, message.latentName, message.imageName, message.latents, message.source);
      return { value, transfer: value.images.map((i) => i.buffer as ArrayBuffer) };
    }
    case "generate":
      try {
        return await generate(message.id, message.job, message.stop, message.steps);
      } finally {
        noiseInboxes.delete(message.id);
        lastFinishedGenerate = message.id;
      }
    case "encode": {
      const { job } = message;
      const calls: ModelCalls = { calls: 0, ms: 0 };
      if (job.sdxl) {
        const { embeddings, pooled } = await sdxlTexts(job, job.sdxl, calls);
        const value: EncodeValue = { embeddings, pooled, ms: calls.ms };
        return { value, transfer: [embeddings.buffer as ArrayBuffer, pooled.buffer as ArrayBuffer] };
      }
      const texts = await encodeTexts(job, job.prompts, job.hiddenSize, calls);
      const embeddings = gather(texts, job.prompts.chunks * TOKENS * job.hiddenSize, job.prompts.rowOf);
      const value: EncodeValue = { embeddings, ms: calls.ms };
      return { value, transfer: [embeddings.buffer as ArrayBuffer] };
    }
    case "release": {
      const s = sessions.get(message.handle);
      sessions.delete(message.handle);
      recipes.delete(message.handle);
      if (s) await s.release();
      return { value: null };
    }
  }
}

function isAllocationFailure(error: unknown): boolean {
  return /Failed to allocate|bad_alloc|out of memory/i.test(String((error as Error)?.message ?? error));
}

/**
 * After an allocation failure, every session is made again: a session's memory arena keeps what
 * the failed run grabbed for the session's whole life, and releasing the session is the only way
 * ONNX Runtime's Node binding gives it back. Handles stay valid.
 */
async function freeArenas(): Promise<void> {
  for (const [handle, recipe] of recipes) {
    await sessions.get(handle)?.release();
    sessions.set(handle, recipe.bytes ? await ort.InferenceSession.create(recipe.bytes, recipe.options) : await ort.InferenceSession.create(recipe.path, recipe.options));
  }
}

async function answer(message: WorkerRequest): Promise<void> {
  let reply: FinalReply;
  let transfer: ArrayBuffer[] = [];
  try {
    const answer = await handle(message);
    reply = { id: message.id, value: answer.value };
    transfer = answer.transfer ?? [];
  } catch (error) {
    if (isAllocationFailure(error)) await freeArenas();
    const e = error as { message?: unknown; code?: unknown; model?: GenerateStage };
    reply = {
      id: message.id,
      error: String(e && e.message !== undefined ? e.message : error),
      ...(typeof e?.code === "string" ? { code: e.code } : {}),
      ...(e?.model ? { model: e.model } : {}),
    };
  }
  try {
    port.postMessage(reply, transfer);
  } catch {
    try {
      port.postMessage(reply); // a buffer that cannot be transferred is copied
    } catch (error) {
      // Never leave the caller waiting: say why the answer could not be sent.
      port.postMessage({ id: message.id, error: `the ONNX Runtime worker could not send its answer: ${String((error as Error)?.message ?? error)}` } satisfies FinalReply);
    }
  }
}

// One request at a time, in arrival order: a request waits for the one before it (its
// session.run calls and, for a denoise, every evaluation) before it starts.
let previous: Promise<void> = Promise.resolve();
// Noise messages are not requests: they are delivered at once, also while a request runs.
port.on("message", (message: WorkerRequest | NoiseMessage) => {
  if (message.op === "noise" || message.op === "noise-cancel") receiveNoise(message);
  else previous = previous.then(() => answer(message));
});
