/**
 * Imported first by the package's entry points (lib/index.ts and the other public tiers) for its
 * side effect: on a Node.js older than the supported range, loading sd-trt fails here with a
 * message naming the version and the range (lib/node-version.ts), before modules that need newer
 * Node APIs run.
 */
import { assertSupportedNode } from "./node-version.js";

assertSupportedNode();
