/**
 * The LoRAs of a folder (`--lora-dir`), as A1111's Lora extension lists them: every `.safetensors`
 * file under the folder, named by its file name without the extension, with the alias kohya's
 * trainer recorded (`ss_output_name`), and its metadata. `<lora:NAME:SCALE>` prompt tags find a
 * LoRA by name or alias; `GET /sdapi/v1/loras` lists them in A1111's shape. Pickled LoRAs in the
 * folder are not listed (they are never opened).
 */
import { readdir } from "node:fs/promises";
import { basename, extname, join, resolve } from "node:path";
import { ModelFileError } from "../../errors.js";
import { readSafetensors } from "../../model/safetensors.js";

/** One LoRA of the folder, in the shape of A1111's `GET /sdapi/v1/loras` items. */
export interface LoraEntry {
  name: string;
  alias: string;
  path: string;
  /** The file's `__metadata__`; values that are JSON objects are parsed, as A1111's `read_metadata_from_safetensors` does. */
  metadata: Record<string, unknown>;
}

export class LoraLibrary {
  private constructor(
    readonly dir: string,
    readonly entries: readonly LoraEntry[],
  ) {}

  /**
   * Lists the folder (recursively).
   * @throws ModelFileError when the folder cannot be read or a file in it is not valid safetensors.
   */
  static async scan(dir: string): Promise<LoraLibrary> {
    const root = resolve(dir);
    let files: string[];
    try {
      files = (await readdir(root, { recursive: true })).map(String).filter((f) => extname(f).toLowerCase() === ".safetensors");
    } catch (error) {
      throw new ModelFileError(root, `the LoRA folder ${root} cannot be read (${(error as Error).message})`, { cause: error });
    }
    const entries: LoraEntry[] = [];
    for (const file of files.sort()) {
      const path = join(root, file);
      const { metadata } = await readSafetensors(path);
      const name = basename(file, extname(file));
      const parsed: Record<string, unknown> = {};
      for (const [key, value] of Object.entries(metadata)) {
        parsed[key] = value;
        if (value.startsWith("{")) {
          try {
            parsed[key] = JSON.parse(value);
          } catch {
            // kept as text, as A1111 keeps what json.loads refuses
          }
        }
      }
      entries.push({ name, alias: metadata.ss_output_name ?? name, path, metadata: parsed });
    }
    return new LoraLibrary(root, entries);
  }

  /** The LoRA a prompt tag names: by file name first, then by alias (A1111's `available_network_aliases`). */
  find(name: string): LoraEntry | undefined {
    return this.entries.find((e) => e.name === name) ?? this.entries.find((e) => e.alias === name);
  }
}
