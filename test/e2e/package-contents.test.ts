/**
 * What `npm install sd-trt` unpacks: `npm pack --dry-run` of this checkout (the same file list the
 * published tarball gets) holds what a user needs and nothing only the repository's own scripts
 * and tests read: no source maps pointing at sources that are not shipped, no file twice, no test
 * helper, no fixture-only data. Runs on the built dist/ (jest's global setup builds it).
 */
import { describe, expect, test } from "@jest/globals";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { packageRoot } from "../../lib/package-info.js";

interface PackEntry {
  path: string;
  size: number;
}

function packList(): PackEntry[] {
  const run = spawnSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: packageRoot, encoding: "utf8" });
  if (run.status !== 0) throw new Error(`npm pack --dry-run failed: ${run.stderr}`);
  const [pack] = JSON.parse(run.stdout) as Array<{ files: PackEntry[] }>;
  return pack!.files;
}

const files = packList();
const paths = files.map((f) => f.path);

describe("the published tarball", () => {
  test("ships the library, the CLI, the addon's sources and build script, the tiny model and the licences", () => {
    for (const needed of [
      "dist/index.js",
      "dist/index.d.ts",
      "dist/cli/main.js",
      "dist/backends/cpu/ort-worker.js",
      "native/addon.cc",
      "CMakeLists.txt",
      "scripts/build-native.mjs",
      "scripts/install.mjs",
      "models/tiny-sd/unet/model.onnx",
      "models/tiny-sd/tokenizer/vocab.json",
      "models/tiny-sd/tokenizer/merges.txt",
      "data/clip-tokenizer/LICENSE",
      "LICENSE",
      "THIRD_PARTY_NOTICES.md",
      "CHANGELOG.md",
      "README.md",
    ]) {
      expect(paths).toContain(needed);
    }
  });

  test("has no source maps, test code, or data only the reference scripts read", () => {
    expect(paths.filter((p) => p.endsWith(".map"))).toEqual([]);
    expect(paths.filter((p) => p.endsWith(".gz"))).toEqual([]);
    expect(paths.filter((p) => /(^|\/)(test|tests|__tests__|fixtures)\//.test(p) || /analytic-reference/.test(p))).toEqual([]);
    expect(paths.filter((p) => p.startsWith("lib/") && p.endsWith(".ts"))).toEqual([]);
  });

  test("holds no file twice (same bytes under two names)", () => {
    const byHash = new Map<string, string[]>();
    for (const entry of files) {
      if (entry.size < 4096) continue; // licences and small configs may legitimately repeat
      const hash = createHash("sha256").update(readFileSync(join(packageRoot, entry.path))).digest("hex");
      byHash.set(hash, [...(byHash.get(hash) ?? []), entry.path]);
    }
    expect([...byHash.values()].filter((names) => names.length > 1)).toEqual([]);
  });

  test("the CLIP vocabulary it ships once is the repository's data/clip-tokenizer, byte for byte", () => {
    for (const name of ["vocab.json", "merges.txt"]) {
      expect(readFileSync(join(packageRoot, "models/tiny-sd/tokenizer", name)).equals(readFileSync(join(packageRoot, "data/clip-tokenizer", name)))).toBe(true);
    }
  });

  test("package.json says which Node it needs", () => {
    const pkg = JSON.parse(readFileSync(join(packageRoot, "package.json"), "utf8")) as Record<string, unknown>;
    expect(pkg.engines).toEqual({ node: "^20.19.0 || ^22.12.0 || >=23" });
  });
});
