/**
 * The Node.js floor: package.json `engines` states the real one (yargs 18, zlib.crc32), and both the
 * CLI and the library refuse an older Node at start-up with one sentence naming the version found
 * and the range needed (lib/node-version.ts), instead of a link error deep in a dependency.
 */
import { describe, expect, test } from "@jest/globals";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { nodeVersionProblem, SUPPORTED_NODE_RANGE } from "../../lib/node-version.js";
import { packageRoot } from "../../lib/package-info.js";

const pkg = JSON.parse(readFileSync(join(packageRoot, "package.json"), "utf8")) as { engines: { node: string } };

describe("the supported Node.js range", () => {
  test("package.json engines states the range the start-up check enforces", () => {
    expect(pkg.engines.node).toBe(SUPPORTED_NODE_RANGE);
  });

  test.each(["v20.19.0", "v20.20.3", "v22.12.0", "v22.20.0", "v23.0.0", "v24.3.1", "v26.0.0"])("%s is accepted", (version) => {
    expect(nodeVersionProblem(version)).toBeUndefined();
  });

  test.each(["v18.20.4", "v20.14.0", "v20.18.1", "v21.7.3", "v22.11.0"])("%s is refused, naming it and the range", (version) => {
    const problem = nodeVersionProblem(version);
    expect(problem).toContain(`this is Node.js ${version}`);
    expect(problem).toContain(SUPPORTED_NODE_RANGE);
    expect(problem).toMatch(/yargs 18/);
  });

  test("the built CLI says so and exits 1 on an older Node, before loading yargs", () => {
    // The real entry point, on a Node that reports an older version (process.version is the only
    // input of the check; the modules that would fail to link on that Node are never imported).
    const fake = "Object.defineProperty(process, 'version', { value: 'v20.14.0' });";
    const run = spawnSync(process.execPath, ["--import", `data:text/javascript,${encodeURIComponent(fake)}`, join(packageRoot, "dist", "cli", "main.js"), "--help"], {
      encoding: "utf8",
    });
    expect(run.status).toBe(1);
    expect(run.stderr).toContain("sd-trt: sd-trt needs Node.js ^20.19.0 || ^22.12.0 || >=23");
    expect(run.stderr).toContain("this is Node.js v20.14.0");
    expect(run.stdout).toBe("");
  });

  test("importing the library on an older Node fails with the same message", () => {
    const fake = "Object.defineProperty(process, 'version', { value: 'v22.11.0' });";
    const script = `try { await import(${JSON.stringify(join(packageRoot, "dist", "index.js"))}); console.log("loaded"); } catch (e) { console.log(e.code, e.message); }`;
    const run = spawnSync(process.execPath, ["--import", `data:text/javascript,${encodeURIComponent(fake)}`, "--input-type=module", "-e", script], { encoding: "utf8" });
    expect(run.stdout).toContain("ERR_NODE_VERSION sd-trt needs Node.js");
    expect(run.stdout).toContain("this is Node.js v22.11.0");
  });
});
