/**
 * The Node.js versions sd-trt runs on, checked at start-up (the CLI's entry and the library's)
 * before anything that needs them is loaded, so an older Node gets one clear sentence instead of
 * "does not provide an export named 'crc32'" or a yargs syntax error.
 *
 * Why this range (package.json `engines` says the same):
 * - yargs 18 (the CLI) declares `^20.19.0 || ^22.12.0 || >=23`;
 * - `zlib.crc32` (PNG text chunks, lib/image/png-text.ts) exists from 20.15 / 22.2.
 * The stricter of the two is the floor. This module imports nothing, so it loads on any Node.
 */

/** The supported range, as package.json `engines.node` states it. */
export const SUPPORTED_NODE_RANGE = "^20.19.0 || ^22.12.0 || >=23";

/** [major, minor] lower bounds per release line; any major above the last is supported. */
const FLOORS: ReadonlyArray<readonly [major: number, minor: number]> = [
  [20, 19],
  [22, 12],
  [23, 0],
];

/**
 * Why sd-trt cannot run on Node `version` ("v20.14.0" or "20.14.0"), or undefined when it can.
 * The message names the version found, the range needed and what needs it.
 */
export function nodeVersionProblem(version: string): string | undefined {
  const match = /^v?(\d+)\.(\d+)\.(\d+)/.exec(version);
  if (!match) return undefined; // an unknown format: do not block on a guess
  const major = Number(match[1]);
  const minor = Number(match[2]);
  const last = FLOORS[FLOORS.length - 1]!;
  const ok = major >= last[0] || FLOORS.some(([m, floor]) => major === m && minor >= floor);
  if (ok) return undefined;
  return (
    `sd-trt needs Node.js ${SUPPORTED_NODE_RANGE} (Node 20.19+, 22.12+ or 23+), but this is Node.js ${version}: ` +
    "its command line uses yargs 18, which needs that range, and PNG metadata uses zlib.crc32 (Node 20.15+). " +
    "Install a newer Node.js (e.g. the current LTS from https://nodejs.org or with nvm: `nvm install --lts`)"
  );
}

/** Throws an Error with {@link nodeVersionProblem}'s message when this Node.js is too old. */
export function assertSupportedNode(version: string = process.version): void {
  const problem = nodeVersionProblem(version);
  if (problem) throw Object.assign(new Error(problem), { code: "ERR_NODE_VERSION" });
}
