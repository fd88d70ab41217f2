/**
 * Refusing PyTorch pickle files. `.ckpt`, `.pt`, `.pth` and `.bin` checkpoints are Python pickles
 * (bare, or inside torch's zip archive): unpickling one runs whatever code its author put in it,
 * so sd-trt never opens one, whatever it is called, and says how to turn it into `.safetensors`.
 */
import { open } from "node:fs/promises";
import { extname } from "node:path";
import { ModelFileError } from "../errors.js";

/** File name extensions that are pickles (torch.save, pickle.dump). */
export const PICKLE_EXTENSIONS: readonly string[] = [".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"];

/**
 * What the first bytes of a file say it is, when it is a pickle: protocol 2–5 pickles start with
 * the PROTO opcode 0x80 and the protocol number (torch.save's legacy format is such a pickle);
 * torch.save's default since torch 1.6 is a zip archive ("PK\x03\x04") holding `data.pkl`.
 */
export function pickleKindOf(head: Uint8Array): "pickle" | "torch zip archive" | undefined {
  if (head.length >= 2 && head[0] === 0x80 && head[1]! >= 2 && head[1]! <= 5) return "pickle";
  if (head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04) return "torch zip archive";
  return undefined;
}

/** The refusal, with how to convert the file. */
export function pickleRefusal(path: string, why: string): ModelFileError {
  return new ModelFileError(
    path,
    `${path} is ${why}. Loading a pickle runs any code stored in it, so sd-trt never opens one. ` +
      "Convert it to .safetensors first with a tool you trust, e.g. the Hugging Face \"Convert to Safetensors\" space, or in Python: " +
      `python -c "import torch, safetensors.torch as st; sd = torch.load('${basenameForHint(path)}', map_location='cpu', weights_only=True); ` +
      "sd = sd.get('state_dict', sd); st.save_file({k: v.contiguous() for k, v in sd.items() if isinstance(v, torch.Tensor)}, 'model.safetensors')\" " +
      "(weights_only=True refuses files that carry code).",
  );
}

function basenameForHint(path: string): string {
  return path.split(/[\\/]/).pop() ?? path;
}

/**
 * Throws when `path` is a pickle: by its extension, or by its first bytes whatever its name.
 * `head` is the file's first bytes when the caller has already read them.
 * @throws ModelFileError explaining the refusal and the conversion.
 */
export async function refusePickle(path: string, head?: Uint8Array): Promise<void> {
  const extension = extname(path).toLowerCase();
  if (PICKLE_EXTENSIONS.includes(extension)) throw pickleRefusal(path, `a PyTorch pickle file (${extension})`);
  let first = head;
  if (first === undefined) {
    try {
      const fh = await open(path, "r");
      try {
        first = new Uint8Array(4);
        const { bytesRead } = await fh.read(first, 0, 4, 0);
        first = first.subarray(0, bytesRead);
      } finally {
        await fh.close();
      }
    } catch (error) {
      throw new ModelFileError(path, `${path} cannot be read (${(error as Error).message})`, { cause: error });
    }
  }
  const kind = pickleKindOf(first);
  if (kind !== undefined) throw pickleRefusal(path, `a PyTorch ${kind} (by its first bytes, whatever its name)`);
}
