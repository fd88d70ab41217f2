/**
 * The web page at / in a real headless Chromium (Debian's package, driven by playwright-core;
 * no browser download): type a prompt, fix the seed, generate; the progress bar moves; the image
 * appears with its seed and infotext and its bytes equal the API's answer for the same
 * parameters; copy-to-prompt and download; interrupt stops a long generation; with a token the
 * page does nothing until it is given; and the same page in front of a fleet (a Redis front end
 * and an in-process worker). One browser for the file.
 *
 * Code that runs in the page is passed as strings: the tests are compiled without DOM types.
 *
 * `SDTRT_SCREENSHOT=path` also saves a screenshot of the page after a generation (how
 * docs/web-page.png is made).
 */
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import { readFile } from "node:fs/promises";
import { type Browser, chromium, type Page } from "playwright-core";
import { RedisQueueClient } from "../../lib/fleet/client.js";
import { createWorker } from "../../lib/fleet/worker.js";
import { Pipeline } from "../../lib/pipeline/pipeline.js";
import { PipelineService } from "../../lib/service/pipeline-service.js";
import { SdServer } from "../../lib/server/server.js";
import { CHROMIUM, chromiumPath, describeWith, REDIS, RedisServer } from "../support/system-tools.js";

describeWith([CHROMIUM], "the web page in headless Chromium", () => {
  let pipe: Pipeline;
  let browser: Browser;
  const servers: SdServer[] = [];

  async function serve(token?: string): Promise<string> {
    const service = await PipelineService.create(pipe, { batchWindowMs: 0 });
    const server = new SdServer({ service, token });
    servers.push(server);
    return (await server.listen({ host: "127.0.0.1", port: 0 })).url;
  }

  async function open(url: string): Promise<Page> {
    // bypassCSP: the page's policy forbids eval, which playwright's string predicates use.
    const page = await browser.newPage({ viewport: { width: 1100, height: 900 }, bypassCSP: true });
    await page.goto(url);
    return page;
  }

  /** Fills the form for a fixed-seed generation (64×64 unless a size is given). */
  async function fill(page: Page, prompt: string, seed: number, steps: number, size = 64): Promise<void> {
    await page.fill("#prompt", prompt);
    await page.fill("#negative", "blurry");
    await page.selectOption("#sampler", "Euler");
    await page.fill("#steps", String(steps));
    await page.fill("#cfg", "7");
    await page.fill("#width", String(size));
    await page.fill("#height", String(size));
    await page.check("#seed-fixed");
    await page.fill("#seed", String(seed));
  }

  beforeAll(async () => {
    pipe = await Pipeline.load(undefined, { backend: "cpu" });
    // Running as root in CI containers: Chromium's sandbox needs user namespaces it may not have.
    browser = await chromium.launch({ executablePath: chromiumPath(), headless: true, args: ["--no-sandbox"] });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    for (const server of servers) await server.close(0);
    await pipe?.dispose();
  });

  test("generate: the progress bar moves, the image appears, and its bytes equal the API's for the same parameters", async () => {
    const url = await serve();
    const page = await open(url);
    await page.waitForSelector("#app:not([hidden])");
    // Enough steps (about 1 ms each on the tiny model) for the bar's polling to see it move.
    await fill(page, "a cozy wooden cabin", 1234, 800);
    // Every value the bar shows, recorded in the page as it changes.
    await page.evaluate(`{
      const bar = document.getElementById("progress-bar");
      window.seen = [];
      new MutationObserver(() => window.seen.push(Number(bar.getAttribute("aria-valuenow")))).observe(bar, { attributes: true, attributeFilter: ["aria-valuenow"] });
    }`);
    await page.click("#generate");
    await page.waitForSelector(".card img");
    const seen = (await page.evaluate("window.seen")) as number[];
    // It moved through values between empty and full before the end.
    expect(seen.some((v) => v > 0 && v < 100)).toBe(true);
    expect(seen.at(-1)).toBe(100);

    const src = await page.getAttribute(".card img", "src");
    expect(src).toMatch(/^data:image\/png;base64,/);
    const fromPage = Buffer.from(src!.split(",")[1]!, "base64");
    const api = await fetch(`${url}/sdapi/v1/txt2img`, {
      method: "POST",
      body: JSON.stringify({ prompt: "a cozy wooden cabin", negative_prompt: "blurry", sampler_name: "Euler", steps: 800, cfg_scale: 7, width: 64, height: 64, seed: 1234, batch_size: 1 }),
    });
    const fromApi = Buffer.from(((await api.json()) as { images: string[] }).images[0]!, "base64");
    expect(fromPage.equals(fromApi)).toBe(true);
    // The pixels as the browser decoded them, too.
    const size = await page.evaluate(`[document.querySelector(".card img").naturalWidth, document.querySelector(".card img").naturalHeight]`);
    expect(size).toEqual([64, 64]);
    expect(await page.textContent(".card .seed")).toBe("Seed: 1234");
    expect(await page.textContent(".card .infotext")).toMatch(/^a cozy wooden cabin\nNegative prompt: blurry\nSteps: 800, Sampler: Euler, Schedule type: Automatic, CFG scale: 7, Seed: 1234, Size: 64x64/);

    // Download: the file is the same PNG.
    const [download] = await Promise.all([page.waitForEvent("download"), page.click(".card a.download")]);
    expect(download.suggestedFilename()).toBe("sd-trt-1234.png");
    expect((await readFile((await download.path())!)).equals(fromApi)).toBe(true);

    // Copy to prompt puts the image's parameters back, with its seed fixed.
    await page.fill("#prompt", "something else");
    await page.check("#seed-random");
    await page.click(".card button.use");
    expect(await page.inputValue("#prompt")).toBe("a cozy wooden cabin");
    expect(await page.inputValue("#seed")).toBe("1234");
    expect(await page.isChecked("#seed-fixed")).toBe(true);

    if (process.env.SDTRT_SCREENSHOT) {
      await page.click("#generate");
      await page.waitForFunction(`document.querySelectorAll(".card").length === 2`);
      await page.waitForSelector("#generate:enabled");
      await page.screenshot({ path: process.env.SDTRT_SCREENSHOT, fullPage: true });
    }
    await page.close();
  });

  test("interrupt stops a long generation", async () => {
    const page = await open(await serve());
    await page.waitForSelector("#app:not([hidden])");
    // The most steps a request may ask, at a size that makes each step slow enough to interrupt (seconds in all).
    await fill(page, "a very long generation", 7, 1000, 256);
    await page.click("#generate");
    await page.waitForFunction(`Number(document.getElementById("progress-bar").getAttribute("aria-valuenow")) > 0`);
    await page.click("#interrupt");
    await page.waitForFunction(`document.getElementById("status").textContent === "interrupted"`);
    expect(await page.locator(".card").count()).toBe(0);
    // Ready for the next one.
    await page.waitForSelector("#generate:enabled");
    expect(await page.isDisabled("#interrupt")).toBe(true);
    await page.close();
  });

  test("with a token, the page does nothing until it is given the right one", async () => {
    const page = await open(await serve("s3cret-token"));
    await page.waitForSelector("#token-form:not([hidden])");
    expect(await page.isHidden("#app")).toBe(true);
    await page.fill("#token", "wrong");
    await page.click("#token-form button");
    await page.waitForFunction(`document.getElementById("token-error").textContent !== ""`);
    expect(await page.textContent("#token-error")).toMatch(/not the one this server was started with/);
    expect(await page.isHidden("#app")).toBe(true);

    await page.fill("#token", "s3cret-token");
    await page.click("#token-form button");
    await page.waitForSelector("#app:not([hidden])");
    await fill(page, "with a token", 3, 4);
    await page.click("#generate");
    await page.waitForSelector(".card img");
    expect(await page.textContent(".card .seed")).toBe("Seed: 3");
    await page.close();
  });
});

describeWith([CHROMIUM, REDIS], "the web page in front of a fleet (serve --redis)", () => {
  test("generates through the queue, with the same image as a local server", async () => {
    const redis = await RedisServer.start();
    const pipe = await Pipeline.load(undefined, { backend: "cpu" });
    const browser = await chromium.launch({ executablePath: chromiumPath(), headless: true, args: ["--no-sandbox"] });
    const worker = await createWorker({ redis: redis.url, service: await PipelineService.create(pipe), ownService: false });
    const client = await RedisQueueClient.connect({ redis: redis.url });
    const front = new SdServer({ service: client });
    const local = new SdServer({ service: await PipelineService.create(pipe) });
    try {
      const { url } = await front.listen({ host: "127.0.0.1", port: 0 });
      for (let i = 0; i < 500 && client.workers.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
      const page = await browser.newPage({ bypassCSP: true });
      await page.goto(url);
      await page.waitForSelector("#app:not([hidden])");
      await page.fill("#prompt", "through the queue");
      await page.fill("#steps", "4");
      await page.fill("#width", "64");
      await page.fill("#height", "64");
      await page.check("#seed-fixed");
      await page.fill("#seed", "99");
      await page.click("#generate");
      await page.waitForSelector(".card img");
      const src = (await page.getAttribute(".card img", "src"))!;
      const { url: localUrl } = await local.listen({ host: "127.0.0.1", port: 0 });
      const body = { prompt: "through the queue", negative_prompt: "", sampler_name: "Euler", steps: 4, cfg_scale: 7, width: 64, height: 64, seed: 99, batch_size: 1 };
      const api = (await (await fetch(`${localUrl}/sdapi/v1/txt2img`, { method: "POST", body: JSON.stringify(body) })).json()) as { images: string[] };
      expect(src).toBe(`data:image/png;base64,${api.images[0]}`);
      await page.close();
    } finally {
      await local.close(0);
      await front.close(0);
      await worker.close(0);
      await browser.close();
      await pipe.dispose();
      await redis.stop();
    }
  });
});
