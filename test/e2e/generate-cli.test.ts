/**
 * `sd-trt generate` in-process (the command module under yargs, as lib/cli/main.ts runs it):
 * reference cases through the flags and files, and every bad-input path — a non-zero exit, a
 * message naming the flag or file, and no output file.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import generate from "../../lib/cli/commands/generate.js";
import { decodeNpyFloat32 } from "../../lib/cli/shared/npy.js";
import { readPngText } from "../../lib/image/png-text.js";
import { runCommand } from "../support/run-cli.js";
import { gradientInitImage, loadReference, negativePromptOf, promptOf, referenceCases, type ReferenceCase } from "../fixtures/tiny-sd-cases/reference.js";
import { expectImageClose, expectLatentsClose, withoutModelHash } from "../fixtures/tiny-sd-cases/compare.js";
import { copyTinyModel, renameGraphName } from "../fixtures/tiny-sd-cases/model-variants.js";

const reference = loadReference();
let scratch: string;
let initImagePath: string;
let counter = 0;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "sd-trt-generate-cli-"));
  initImagePath = join(scratch, "init.png");
  await sharp(gradientInitImage(), { raw: { width: 64, height: 64, channels: 3 } }).png().toFile(initImagePath);
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

async function freshDir(): Promise<string> {
  const dir = join(scratch, `run-${counter++}`);
  await mkdir(dir);
  return dir;
}

/** The flags that ask for a reference case. */
function flagsFor(c: ReferenceCase): string[] {
  const flags = ["--backend", "cpu", "--width", String(c.width), "--height", String(c.height), "--steps", String(c.num_inference_steps), "--guidance", String(c.guidance_scale), "--scheduler", c.scheduler];
  const prompt = promptOf(reference, c);
  for (const p of Array.isArray(prompt) ? prompt : [prompt]) flags.push("--prompt", p);
  const negative = negativePromptOf(reference, c);
  if (negative !== undefined) flags.push("--negative-prompt", negative);
  if (c.generator === "list") flags.push("--seeds", c.generator_seeds.join(","));
  else flags.push("--seed", String(c.generator_seeds[0]), "--batch", String(c.batch_size));
  if (c.rng === "nv_philox") flags.push("--rng", "nv");
  if (c.pipeline === "StableDiffusionImg2ImgPipeline") flags.push("--init-image", initImagePath, "--strength", String(c.strength));
  return flags;
}

describe("sd-trt generate reproduces the reference cases through its files", () => {
  const ids = ["grid_euler20_p1_s2024", "a_negative_prompt", "b_guidance_1", "c_batch2_one_generator", "d_batch2_generator_list", "e_euler_a_shared_generator", "f_nv_rng", "g_img2img_s0.6"];
  test.each(ids)("%s", async (id) => {
    const c = referenceCases(reference).find((x) => x.id === id)!;
    const dir = await freshDir();
    const run = await runCommand(generate, ["generate", ...flagsFor(c), "--out", join(dir, "img-{i}.png"), "--latents-out", join(dir, "latents.npy"), "--json"]);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: expect.any(String) });
    const summary = JSON.parse(run.stdout) as { images: { file: string; seed: number; infotext: string }[]; latents: string; seeds: number[]; backend: string };
    expect(summary.backend).toBe("cpu");
    expect(summary.seeds).toEqual(c.generator_seeds);

    const npy = decodeNpyFloat32(await readFile(join(dir, "latents.npy")));
    expect(npy.shape).toEqual([c.batch_size, 4, 8, 8]);
    expectLatentsClose(npy.data, c.final_latents, `${id} --latents-out`);

    const pixels = new Uint8Array(c.batch_size * 64 * 64 * 3);
    for (let i = 0; i < c.batch_size; i++) {
      const file = join(dir, `img-${i}.png`);
      expect(summary.images[i]!.file).toBe(file);
      const png = await readFile(file);
      const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
      expect([info.width, info.height, info.channels]).toEqual([64, 64, 3]);
      pixels.set(data, i * 64 * 64 * 3);
      const texts = await readPngText(png);
      expect(texts).toHaveLength(1);
      expect(texts[0]!.keyword).toBe("parameters");
      expect(withoutModelHash(texts[0]!.text)).toBe(c.infotext[i]);
    }
    expectImageClose(pixels, c.image_uint8_hwc, `${id} PNG`);
    expect((await readdir(dir)).sort()).toEqual([...Array.from({ length: c.batch_size }, (_, i) => `img-${i}.png`), "latents.npy"].sort());
  });

  test("without {i} several images get -<i> before the extension; JPEG and WebP follow the extension", async () => {
    const dir = await freshDir();
    const run = await runCommand(generate, ["generate", "a red boat", "--backend", "cpu", "--steps", "3", "--seeds", "4,5", "--out", join(dir, "boat.jpg")]);
    expect(run.code).toBe(0);
    expect((await readdir(dir)).sort()).toEqual(["boat-0.jpg", "boat-1.jpg"]);
    expect((await sharp(join(dir, "boat-1.jpg")).metadata()).format).toBe("jpeg");
    expect(run.stdout).toContain(`wrote ${join(dir, "boat-0.jpg")} (seed 4, 64x64)`);
    const webp = await runCommand(generate, ["generate", "--prompt", "a red boat", "--backend", "cpu", "--steps", "2", "--seed", "1", "--out", join(dir, "boat-{seed}"), "--format", "webp", "--quiet"]);
    expect({ code: webp.code, stdout: webp.stdout }).toEqual({ code: 0, stdout: "" });
    expect((await sharp(join(dir, "boat-1")).metadata()).format).toBe("webp");
  });

  test("A1111 prompt flags: --emphasis reaches the image's infotext, --prompt-syntax plain reads the brackets as text", async () => {
    const dir = await freshDir();
    const flags = ["--backend", "cpu", "--steps", "2", "--seed", "1", "--json", "--quiet"];
    const read = async (extra: string[], name: string) => {
      const run = await runCommand(generate, ["generate", "a (red:1.4) boat BREAK at sea", ...flags, ...extra, "--out", join(dir, name)]);
      expect(run.code).toBe(0);
      const infotext = (await readPngText(await readFile(join(dir, name)))).find((t) => t.keyword === "parameters")!.text;
      return { infotext, pixels: await sharp(join(dir, name)).raw().toBuffer() };
    };
    const a1111 = await read([], "a.png");
    const noNorm = await read(["--emphasis", "no-norm", "--pad-cond-uncond"], "b.png");
    const plain = await read(["--prompt-syntax", "plain"], "c.png");
    expect(a1111.infotext).not.toContain("Emphasis");
    expect(noNorm.infotext).toMatch(/Emphasis: No norm$/);
    expect(a1111.pixels.equals(noNorm.pixels)).toBe(false);
    expect(a1111.pixels.equals(plain.pixels)).toBe(false);
  });

  test("progress goes to stderr as plain lines when it is not a terminal", async () => {
    const dir = await freshDir();
    const run = await runCommand(generate, ["generate", "a red boat", "--backend", "cpu", "--steps", "5", "--seed", "1", "--out", join(dir, "p.png")]);
    expect(run.code).toBe(0);
    // PNDM evaluates the UNet once more than its steps: the bar says what it counts.
    expect(run.stderr).toMatch(/denoise \[-+\] 0\/6 UNet evaluations/);
    expect(run.stderr).toMatch(/denoise \[=+\] 6\/6 UNet evaluations/);
    expect(run.stdout).toMatch(/5 steps of pndm on cpu in [\d.]+ s/);
  });
});

describe("sd-trt generate refuses bad input: non-zero exit, the flag or file named, no output file", () => {
  async function expectFailure(args: string[], code: number, message: RegExp): Promise<void> {
    const dir = await freshDir();
    const defaults = [
      ["--backend", "cpu"],
      ["--steps", "2"],
      ["--seed", "1"],
      ["--out", join(dir, "out.png")],
    ].filter(([flag]) => !args.includes(flag!) && !(flag === "--seed" && args.includes("--seeds")));
    const run = await runCommand(generate, ["generate", "a cat", ...defaults.flat(), ...args.map((a) => a.replace("{dir}", dir))]);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code, stderr: expect.stringMatching(message) });
    expect(await readdir(dir)).toEqual([]);
  }

  test("width / height not a multiple of what the model's UNet takes (16 for the tiny model), or outside its limits", async () => {
    await expectFailure(["--width", "100"], 2, /--width: width must be a multiple of 16 from 64 to 2048 for this model, got 100/);
    await expectFailure(["--width", "72"], 2, /--width: width must be a multiple of 16 from 64 to 2048 for this model, got 72/);
    await expectFailure(["--height", "4096"], 2, /--height: height must be a multiple of 16 from 64 to 2048 for this model, got 4096/);
    await expectFailure(["--width", "wide"], 2, /--width: width must be .* got NaN/);
  });

  test("steps, guidance, strength out of range; an unknown scheduler or rng", async () => {
    await expectFailure(["--steps", "0"], 2, /--steps: steps must be an integer from 1 to 1000, got 0/);
    await expectFailure(["--guidance", "250"], 2, /--guidance: guidance must be a number from 0 to 100, got 250/);
    await expectFailure(["--init-image", initImagePath, "--strength", "1.5"], 2, /--strength: strength must be a number greater than 0 and at most 1, got 1\.5/);
    await expectFailure(["--strength", "0.5"], 2, /--strength: strength applies to img2img only/);
    await expectFailure(["--scheduler", "karras9000"], 2, /--scheduler must be one of lms, euler.* or an A1111 sampler name \("Euler", "Euler a"/);
    await expectFailure(["--scheduler", "DPM adaptive Karras"], 2, /--scheduler "DPM adaptive Karras" is not supported: its steps are chosen adaptively/);
    await expectFailure(["--scheduler", "DPM adaptive"], 2, /--scheduler "DPM adaptive" is not supported: its steps are chosen adaptively from the model's outputs/);
    await expectFailure(["--scheduler", "Euler a", "--schedule", "beta"], 2, /--schedule: sigmaSchedule "beta" is not supported: the Beta schedule needs scipy/);
    await expectFailure(["--scheduler", "Euler", "--seeds", "1", "--hires-scale", "1"], 2, /--hires-scale: hires\.scale must be greater than 1 when no resize size is given/);
    await expectFailure(["--scheduler", "Euler", "--seeds", "1", "--hires-upscaler", "ESRGAN_4x"], 2, /--hires-upscaler: hires\.upscaler must be one of "Latent", .*pixel upscalers such as ESRGAN .* are not supported/);
    await expectFailure(["--subseed-strength", "1.5", "--seeds", "1", "--subseed", "3"], 2, /--subseed-strength: subseedStrength must be a number from 0 to 1, got 1\.5/);
    await expectFailure(["--rng", "gpu"], 2, /Invalid values:[\s\S]*rng/);
  });

  test("prompt flags out of range, a weight that is not a number, an extra-network tag", async () => {
    await expectFailure(["--comma-padding-backtrack", "80"], 2, /--comma-padding-backtrack: commaPaddingBacktrack must be an integer from 0 to 74, got 80/);
    await expectFailure(["--emphasis", "strong"], 2, /Invalid values:[\s\S]*emphasis/);
    await expectFailure(["--negative-prompt", "a (cat:1.2.3)"], 2, /--negative-prompt: negativePrompt has the weight "1\.2\.3", which is not a number/);
    await expectFailure(["--negative-prompt", "<lora:detail:1>"], 2, /--negative-prompt: negativePrompt has the extra-network tag <lora:detail:1>/);
  });

  test("seeds that are not integers, and seed with seeds", async () => {
    await expectFailure(["--seeds", "1,x"], 2, /--seeds must be a non-negative integer .* got "x"/);
    await expectFailure(["--seeds", "1,2", "--seed", "3"], 2, /--seeds: give either seed .* or seeds/);
  });

  test("a missing model folder or file, and an ONNX without a required input", async () => {
    const missing = join(scratch, "no-model");
    await expectFailure(["--model", missing], 1, new RegExp(`model folder ${missing} does not exist`));
    const dir = await copyTinyModel(join(scratch, `model-${counter++}`));
    await rm(join(dir, "vae_decoder", "model.onnx"));
    await expectFailure(["--model", dir], 1, /has no vae decoder model: expected vae_decoder\/model\.onnx/);
    const renamed = await copyTinyModel(join(scratch, `model-${counter++}`));
    await renameGraphName(join(renamed, "unet", "model.onnx"), "encoder_hidden_states", "context_hidden_states");
    await expectFailure(["--model", renamed], 1, new RegExp(`${join(renamed, "unet", "model.onnx")}: unsupported UNet graph: no text embeddings input`));
  });

  test("an unreadable init image", async () => {
    const bad = join(scratch, "not-an-image.png");
    await writeFile(bad, "plain text");
    await expectFailure(["--init-image", bad], 1, new RegExp(`cannot read initImage ${bad}`));
    await expectFailure(["--init-image", join(scratch, "absent.png")], 1, /cannot read initImage .*absent\.png/);
  });

  test("an unwritable output path, and --format against the extension", async () => {
    await expectFailure(["--out", "{dir}/missing/sub/out.png"], 1, /cannot write --out .*missing[/\\]sub[/\\]out\.png: ENOENT/);
    await expectFailure(["--latents-out", "{dir}/nope/l.npy"], 1, /cannot write --latents-out .*nope[/\\]l\.npy: ENOENT/);
    await expectFailure(["--out", "{dir}/x.png", "--format", "jpeg"], 2, /--format jpeg does not match the extension of --out .*x\.png \(png\)/);
    await expectFailure(["--quality", "90"], 2, /--quality applies to --format jpeg or webp/);
  });

  test("--threads out of range names --threads (not the model file); an unknown image extension is refused", async () => {
    await expectFailure(["--threads", "-3"], 2, /^sd-trt: --threads: threads must be an integer from 1 to 1024, got -3 \(number\)\n$/);
    await expectFailure(["--threads", "1.5"], 2, /--threads: threads must be an integer from 1 to 1024, got 1\.5/);
    await expectFailure(["--out", "{dir}/x.bmp"], 2, /^sd-trt: --out .*x\.bmp: sd-trt does not write \.bmp files; use \.png, \.jpg, \.jpeg or \.webp, or give --format/);
  });

  test("an output folder that refuses files (/proc) is found before generating, and the message names --out, not a temporary file", async () => {
    await expectFailure(["--out", "/proc/x.png"], 1, /^sd-trt: cannot write --out \/proc\/x\.png: ENOENT: no such file or directory\n$/);
  });

  test("an unknown flag is a usage error", async () => {
    await expectFailure(["--stepz", "3"], 2, /Unknown argument: stepz/);
  });

  test("an option given without its value is a usage error, not the default", async () => {
    for (const flag of ["--steps", "--guidance", "--out", "--seed", "--width", "--scheduler", "--backend", "--format", "--prompt"]) {
      await expectFailure([flag], 2, new RegExp(`^sd-trt: ${flag} needs a value\\. Run sd-trt --help for usage\\.\\n$`));
    }
    // Followed by another option, it has no value either.
    await expectFailure(["--steps", "--quiet"], 2, /--steps needs a value/);
    await expectFailure(["--negative-prompt", "--steps", "3"], 2, /--negative-prompt needs a value/);
  });

  test("a prompt given both as an argument and with --prompt is refused", async () => {
    await expectFailure(["--prompt", "a dog"], 2, /give the prompts either as arguments or with --prompt, not both/);
  });
});

describe("sd-trt generate: prompts as arguments", () => {
  /** Runs generate with `args` and returns the prompt of each image written. */
  async function promptsOf(args: string[]): Promise<string[]> {
    const dir = await freshDir();
    const run = await runCommand(generate, ["generate", "--backend", "cpu", "--steps", "1", "--seed", "1", "--out", join(dir, "{i}.png"), "--json", "--quiet", ...args]);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: "" });
    const summary = JSON.parse(run.stdout) as { images: { infotext: string }[] };
    return summary.images.map((image) => image.infotext.split("\n")[0]!);
  }

  test("several arguments give one image each, in order, as a repeated --prompt does", async () => {
    expect(await promptsOf(["a red boat", "a blue car"])).toEqual(["a red boat", "a blue car"]);
    expect(await promptsOf(["--prompt", "a red boat", "--prompt", "a blue car"])).toEqual(["a red boat", "a blue car"]);
  });

  test("a prompt that starts with \"-\" is taken after --, or as such when it cannot be an option", async () => {
    expect(await promptsOf(["--", "-weird prompt"])).toEqual(["-weird prompt"]);
    expect(await promptsOf(["--", "-weird"])).toEqual(["-weird"]);
    expect(await promptsOf(["-weird prompt"])).toEqual(["-weird prompt"]);
    expect(await promptsOf(["-weird prompt", "plain"])).toEqual(["-weird prompt", "plain"]);
    expect(await promptsOf(["first", "--", "-second"])).toEqual(["first", "-second"]);
    expect(await promptsOf(["--prompt", "-weird prompt"])).toEqual(["-weird prompt"]);
    expect(await promptsOf(["--prompt=-weird"])).toEqual(["-weird"]);
  });

  test("a flag-like prompt outside -- is refused with a hint", async () => {
    const run = await runCommand(generate, ["generate", "-weird", "--backend", "cpu"]);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 2, stderr: expect.stringMatching(/Unknown arguments: w, e, i, r, d \(a prompt that starts with "-" goes after --/) });
  });
});

describe("help and README say what is true", () => {
  const cli = join(process.cwd(), "dist", "cli", "main.js");

  test("-h is --help, and generate's help states the real size multiple, the PNDM step limit and what several prompts do", () => {
    const top = spawnSync(process.execPath, [cli, "-h"], { encoding: "utf8" });
    expect({ status: top.status, stdout: top.stdout }).toEqual({ status: 0, stdout: expect.stringContaining("sd-trt generate [prompts..]") });
    const help = spawnSync(process.execPath, [cli, "generate", "-h"], { encoding: "utf8" }).stdout.replace(/\s+/g, " ");
    expect(help).toContain("a multiple of what the model's UNet takes (8 · 2 per downsampling: 64 for SD 1.x, 16 for the tiny model)");
    expect(help).toContain("pndm, SD 1.x's default, at most 999");
    expect(help).toContain("several prompts give one image each");
  });

  test("the tiny model refuses what the help says it refuses: width 72 (not a multiple of 16), PNDM 1000 steps", async () => {
    const dir = await freshDir();
    const width = await runCommand(generate, ["generate", "x", "--backend", "cpu", "--width", "72", "--out", join(dir, "a.png")]);
    expect(width.stderr).toMatch(/multiple of 16/);
    const steps = await runCommand(generate, ["generate", "x", "--backend", "cpu", "--steps", "1000", "--out", join(dir, "b.png")]);
    expect({ code: steps.code, stderr: steps.stderr }).toEqual({ code: 2, stderr: expect.stringMatching(/--steps: .*PNDMScheduler timesteps stay within 0…999/) });
  });

  test("the README's library example is valid JavaScript on Node 20 (no `await using`)", async () => {
    const readme = await readFile(join(process.cwd(), "README.md"), "utf8");
    const snippet = /## Library\s+```ts\n([\s\S]*?)```/.exec(readme)![1]!.replace(/^import .*$/m, "");
    const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor as new (...args: string[]) => unknown;
    expect(() => new AsyncFunction("Pipeline", snippet)).not.toThrow();
    expect(snippet).not.toMatch(/^\s*await using/m);
  });
});
