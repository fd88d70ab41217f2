/**
 * Pickle refusal. PyTorch's `.ckpt`, `.pt`, `.pth` and `.bin` files are Python pickles (bare, or
 * inside torch.save's zip): unpickling one runs whatever code it names, so sd-trt never opens
 * them. They are refused by their name and, whatever the name, by their first bytes (a pickle's
 * PROTO opcode 0x80, or the "PK" of torch.save's zip), with the command that converts them. A
 * `.safetensors` file can start with those bytes too (they are its header length), but its 9th
 * byte opens the JSON header ("{"), which neither a pickle nor a zip has there.
 */
import { open } from "node:fs/promises";
import { extname } from "node:path";
import { ModelFileError } from "../errors.js";

/** File extensions that hold pickles. */
export const PICKLE_EXTENSIONS: readonly string[] = [".ckpt", ".pt", ".pth", ".bin", ".pkl"];

function refusal(path: string, why: string): ModelFileError {
  return new ModelFileError(
    path,
    `${path} ${why}: loading it would run the code it contains, so sd-trt does not open it. ` +
      "Convert it to .safetensors first, on a machine where you trust the file " +
      '(python -c "import torch, safetensors.torch as st; st.save_file({k: v.contiguous() for k, v in torch.load(\'IN\', weights_only=True).items()}, \'OUT.safetensors\')"), ' +
      "or download the .safetensors version",
  );
}

/**
 * Throws when `path` is a pickle, by name or by content; reads at most its first 9 bytes.
 * @throws ModelFileError naming the file, why it is refused and how to convert it.
 */
export async function refusePickle(path: string): Promise<void> {
  const ext = extname(path).toLowerCase();
  if (PICKLE_EXTENSIONS.includes(ext)) throw refusal(path, `is a PyTorch pickle (${ext})`);
  let head: Buffer;
  try {
    const fh = await open(path, "r");
    try {
      head = Buffer.alloc(9);
      const { bytesRead } = await fh.read(head, 0, 9, 0);
      head = head.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  } catch (error) {
    throw new ModelFileError(path, `${path} cannot be read (${(error as Error).message})`, { cause: error });
  }
  if (head[8] === 0x7b) return; // a safetensors header
  if (head[0] === 0x80) throw refusal(path, "is a Python pickle (it starts with pickle's PROTO opcode)");
  if (head[0] === 0x50 && head[1] === 0x4b) throw refusal(path, "is a zip archive, the layout torch.save writes pickles in");
}
