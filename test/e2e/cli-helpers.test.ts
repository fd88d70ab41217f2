import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InvalidOptionError, OutputFileError } from "../../lib/errors.js";
import { decodeNpyFloat32, encodeNpyFloat32 } from "../../lib/cli/shared/npy.js";
import { outputPath, outputPaths } from "../../lib/cli/shared/output-paths.js";
import { StagedFiles, checkWritable } from "../../lib/cli/shared/staged-files.js";

describe(".npy writer", () => {
  test("writes NumPy's own v1.0 header (checked against numpy 2.4's np.save) and little-endian float32 data", () => {
    const data = Float32Array.from({ length: 2 * 4 * 8 * 8 }, (_, i) => i / 7 - 3);
    const file = encodeNpyFloat32(data, [2, 4, 8, 8]);
    const header = file.subarray(0, 128);
    expect(header.toString("latin1")).toBe(
      "\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4, 8, 8), }" + " ".repeat(52) + "\n",
    );
    expect(file.length).toBe(128 + data.length * 4);
    expect(file.readFloatLE(128 + 4 * 5)).toBe(data[5]);
    expect(encodeNpyFloat32(new Float32Array(5), [5]).subarray(0, 128).toString("latin1")).toContain("'shape': (5,), }");
    const back = decodeNpyFloat32(file);
    expect(back.shape).toEqual([2, 4, 8, 8]);
    expect(back.data).toEqual(data);
  });

  test("refuses a shape that does not match the data", () => {
    expect(() => encodeNpyFloat32(new Float32Array(3), [2, 2])).toThrow(/shape \[2, 2\] holds 4 values, got 3/);
  });
});

describe("--out templates", () => {
  test("{i} and {seed} are replaced; otherwise -i goes before the extension for several images", () => {
    expect(outputPath("out.png", 0, 5n, 1)).toBe("out.png");
    expect(outputPaths("out.png", [5n, 6n])).toEqual(["out-0.png", "out-1.png"]);
    expect(outputPaths("dir/img", [5n, 6n])).toEqual(["dir/img-0", "dir/img-1"]);
    expect(outputPaths("x-{seed}.webp", [5n, 18446744073709551615n])).toEqual(["x-5.webp", "x-18446744073709551615.webp"]);
    expect(outputPaths("{i}_{seed}_{i}.png", [7n, 7n])).toEqual(["0_7_0.png", "1_7_1.png"]);
  });

  test("two images on one file is an error naming --out", () => {
    const error = (() => {
      try {
        outputPaths("{seed}.png", [7n, 7n]);
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(InvalidOptionError);
    expect((error as Error).message).toMatch(/--out \{seed\}\.png gives two images the same file 7\.png/);
  });
});

describe("StagedFiles", () => {
  let scratch: string;
  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), "sd-trt-staged-"));
  });
  afterAll(async () => {
    await chmod(join(scratch, "locked"), 0o755).catch(() => undefined);
    await rm(scratch, { recursive: true, force: true });
  });

  test("nothing appears under the final names until commit, then every file at once", async () => {
    const dir = join(scratch, "commit");
    await mkdir(dir);
    const staged = new StagedFiles();
    await staged.stage(join(dir, "a.png"), Buffer.from("A"), "--out");
    await staged.stage(join(dir, "b.npy"), Buffer.from("B"), "--latents-out");
    const before = await readdir(dir);
    expect(before.some((f) => f === "a.png" || f === "b.npy")).toBe(false);
    expect(before).toHaveLength(2); // the two temporaries
    await staged.commit();
    expect((await readdir(dir)).sort()).toEqual(["a.png", "b.npy"]);
    expect(await readFile(join(dir, "a.png"), "utf8")).toBe("A");
  });

  test("discard removes every temporary file and leaves no output", async () => {
    const dir = join(scratch, "discard");
    await mkdir(dir);
    await writeFile(join(dir, "keep.txt"), "x");
    const staged = new StagedFiles();
    await staged.stage(join(dir, "a.png"), Buffer.from("A"), "--out");
    await staged.discard();
    expect(await readdir(dir)).toEqual(["keep.txt"]);
    const sync = new StagedFiles();
    await sync.stage(join(dir, "b.png"), Buffer.from("B"), "--out");
    sync.discardSync();
    expect(await readdir(dir)).toEqual(["keep.txt"]);
  });

  test("checkWritable names the option and the path for a missing or read-only folder, or a folder as the file", async () => {
    const missing = join(scratch, "nope", "out.png");
    await expect(checkWritable(missing, "--out")).rejects.toThrow(new RegExp(`cannot write --out ${missing.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: ENOENT`));
    await expect(checkWritable(scratch, "--out")).rejects.toThrow(/it is a folder/);
    const locked = join(scratch, "locked");
    await mkdir(locked);
    await chmod(locked, 0o555);
    if (process.getuid?.() !== 0) {
      // root may write anywhere; the permission check only means something for other users
      await expect(checkWritable(join(locked, "out.png"), "--latents-out")).rejects.toBeInstanceOf(OutputFileError);
    }
    await expect(checkWritable(join(scratch, "fine.png"), "--out")).resolves.toBeUndefined();
  });
});
