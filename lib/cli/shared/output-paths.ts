/**
 * Output file names of `sd-trt generate --out`: `{i}` (image index, from 0) and `{seed}` (the
 * image's seed) are replaced; without either and with more than one image, `-{i}` goes before
 * the extension (`out.png` → `out-0.png`, `out-1.png`).
 */
import { extname } from "node:path";
import { InvalidOptionError } from "../../errors.js";

export function hasTemplate(template: string): boolean {
  return template.includes("{i}") || template.includes("{seed}");
}

export function outputPath(template: string, index: number, seed: bigint, count: number): string {
  if (hasTemplate(template)) return template.replaceAll("{i}", String(index)).replaceAll("{seed}", String(seed));
  if (count === 1) return template;
  const ext = extname(template);
  return `${template.slice(0, template.length - ext.length)}-${index}${ext}`;
}

/** The file of every image; two images on one path is an error naming `--out`. */
export function outputPaths(template: string, seeds: readonly bigint[]): string[] {
  const paths = seeds.map((seed, i) => outputPath(template, i, seed, seeds.length));
  const seen = new Set<string>();
  for (const path of paths) {
    if (seen.has(path)) {
      throw new InvalidOptionError("out", `--out ${template} gives two images the same file ${path}; use {i} in the name`);
    }
    seen.add(path);
  }
  return paths;
}
