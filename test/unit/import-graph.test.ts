/**
 * The layering of lib/ (docs/architecture.md), checked on the import graph itself: no module
 * cycle, each backend's internals imported only from inside that backend (and from the tier entry
 * that publishes them), and the numerics core free of everything above it.
 */
import { describe, expect, test } from "@jest/globals";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const root = resolve(process.cwd(), "lib");

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return sources(path);
    return e.name.endsWith(".ts") ? [path] : [];
  });
}

/** Module (path relative to lib/) → the lib/ modules it imports (type-only imports included: they are coupling too). */
const graph = new Map<string, string[]>();
for (const file of sources(root)) {
  const text = readFileSync(file, "utf8");
  const deps = [...text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^;]*?\bfrom\s+"(\.{1,2}\/[^"]+)"/g)].map((m) =>
    relative(root, resolve(dirname(file), m[1]!)).replace(/\.js$/, ".ts"),
  );
  graph.set(relative(root, file), deps);
}

function cycles(): string[][] {
  const found: string[][] = [];
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const visit = (node: string) => {
    state.set(node, "open");
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      if (state.get(next) === "open") found.push([...stack.slice(stack.indexOf(next)), next]);
      else if (!state.has(next)) visit(next);
    }
    stack.pop();
    state.set(node, "done");
  };
  for (const node of graph.keys()) if (!state.has(node)) visit(node);
  return found;
}

const importers = (predicate: (dep: string) => boolean) =>
  [...graph].flatMap(([from, deps]) => deps.filter(predicate).map((dep) => `${from} → ${dep}`));

describe("lib/ import graph", () => {
  test("every relative import names a module that exists", () => {
    const missing = importers((dep) => !graph.has(dep));
    expect(missing).toEqual([]);
  });

  test("has no module cycle", () => {
    expect(cycles()).toEqual([]);
  });

  test("a backend's internals are imported only from inside that backend, its selector, or the tier entry that publishes it", () => {
    for (const backend of ["cpu", "tensorrt"]) {
      const inside = `backends/${backend}/`;
      const outsiders = importers((dep) => dep.startsWith(inside)).filter((edge) => {
        const from = edge.split(" → ")[0]!;
        return !from.startsWith(inside) && from !== "backends/select.ts" && from !== "engines.ts" && !from.startsWith("cli/commands/build.ts") && !from.startsWith("bench/");
      });
      expect({ backend, outsiders }).toEqual({ backend, outsiders: [] });
    }
  });

  test("the pipeline reaches backends only through the Backend seam and the selector", () => {
    const edges = importers((dep) => dep.startsWith("backends/")).filter((edge) => edge.startsWith("pipeline/"));
    for (const edge of edges) expect(edge).toMatch(/→ backends\/(backend|select)\.ts$/);
  });

  test("the numerics core (tokenizer, prompt, rng, schedulers, sampler) depends on nothing above it", () => {
    const core = /^(tokenizer|prompt|rng|schedulers|sampler)\//;
    // fs/atomic.ts is a leaf over Node's fs (the tokenizer's vocabulary cache writes with it).
    const allowed = /^(tokenizer|prompt|rng|schedulers|sampler)\/|^(errors|validate|fs\/atomic)\.ts$/;
    const edges = [...graph].flatMap(([from, deps]) => (core.test(from) ? deps.filter((d) => !allowed.test(d)).map((d) => `${from} → ${d}`) : []));
    expect(edges).toEqual([]);
  });
});
