// Jest globalSetup (and a helper for tests that run the built CLI in a child process): compiles
// lib/ to dist/ with tsc when any source is newer than the build, so child-process tests never
// run a stale dist/. tsc still emits when other files have type errors; the build is only
// considered failed if the expected outputs are missing afterwards.
const { spawnSync } = require("node:child_process");
const { existsSync, mkdirSync, readdirSync, rmdirSync, statSync } = require("node:fs");
const { join } = require("node:path");

const root = join(__dirname, "..", "..");

function newestMtime(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestMtime(full));
    else if (/\.(ts|html|css)$/.test(entry.name)) newest = Math.max(newest, statSync(full).mtimeMs);
  }
  return newest;
}

function sleep(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Builds dist/ if it is missing or older than lib/. Returns a note on what happened. */
function ensureDistBuilt(required = ["cli/main.js", "cli/commands/generate.js", "index.js", "backends/cpu/ort-worker.js"]) {
  const stamp = join(root, "dist", "index.js");
  const webStamp = join(root, "dist", "web", "app.js");
  const fresh = () =>
    required.every((f) => existsSync(join(root, "dist", f))) &&
    existsSync(stamp) &&
    statSync(stamp).mtimeMs >= newestMtime(join(root, "lib")) &&
    existsSync(webStamp) &&
    statSync(webStamp).mtimeMs >= newestMtime(join(root, "web"));
  if (fresh()) return "dist is up to date";
  // One builder at a time across jest workers: mkdir is atomic.
  mkdirSync(join(root, "dist"), { recursive: true });
  const lock = join(root, "dist", ".build-lock");
  for (let waited = 0; ; waited += 200) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      if (waited > 180_000) throw new Error(`timed out waiting for ${lock} (remove it if no build is running)`);
      sleep(200);
    }
  }
  try {
    if (fresh()) return "dist was built by another worker";
    const tsc = spawnSync(process.execPath, [join(root, "node_modules", "typescript", "bin", "tsc"), "-p", join(root, "tsconfig.json")], { cwd: root, encoding: "utf8" });
    // The web page (served by sd-trt serve at /): its own tsc run and a copy of the HTML and CSS.
    const web = spawnSync(process.execPath, [join(root, "scripts", "build-web.mjs")], { cwd: root, encoding: "utf8" });
    if (web.status !== 0) throw new Error(`the web page did not build:\n${web.stdout}${web.stderr}`);
    const missing = required.filter((f) => !existsSync(join(root, "dist", f)));
    if (missing.length > 0) throw new Error(`tsc did not produce ${missing.join(", ")}:\n${tsc.stdout}${tsc.stderr}`);
    return tsc.status === 0 ? "dist rebuilt" : `dist rebuilt (tsc reported type errors:\n${tsc.stdout.split("\n").slice(0, 10).join("\n")})`;
  } finally {
    rmdirSync(lock);
  }
}

module.exports = async function globalSetup() {
  ensureDistBuilt();
};
module.exports.ensureDistBuilt = ensureDistBuilt;
