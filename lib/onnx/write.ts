/**
 * Writes an ONNX model with its large tensors in one external data file next to it
 * (`model.onnx` + `model.onnx_data`), the layout optimum and `onnx.save_model(...,
 * save_as_external_data=True)` use. This keeps the protobuf far below its 2 GiB limit and lets
 * TensorRT's parser read the weights straight from the file.
 */
import { basename, dirname, join } from "node:path";
import { withAtomicFile, writeFileAtomic } from "../fs/atomic.js";
import { encodeMessage, PbMessage, stringField } from "./protobuf.js";
import { DataLocation, GraphField, ModelField, StringStringField, StringStringSchema, TensorField } from "./schema.js";

export interface WriteOnnxOptions {
  /** Tensors with at least this many bytes go to the external data file. Defaults to 1024. */
  externalDataThreshold?: number;
}

/** Offsets are aligned so the data file can be memory-mapped tensor by tensor. */
const ALIGNMENT = 64;

function entry(key: string, value: string): PbMessage {
  return new PbMessage([stringField(StringStringField.key, key), stringField(StringStringField.value, value)], StringStringSchema);
}

/**
 * Writes `model` to `path`, moving every initializer with inline raw data of at least the
 * threshold into `<name>_data`. Both files are written atomically. The model is modified in
 * place (its large initializers become external references). Returns the files written.
 */
export async function writeOnnxModel(model: PbMessage, path: string, options: WriteOnnxOptions = {}): Promise<string[]> {
  const threshold = options.externalDataThreshold ?? 1024;
  const graph = model.message(ModelField.graph) as PbMessage;
  const location = `${basename(path)}_data`;
  const dataPath = join(dirname(path), location);
  const large = graph.messages(GraphField.initializer).filter((t) => (t.bytes(TensorField.rawData)?.length ?? 0) >= threshold);
  const written: string[] = [];
  if (large.length > 0) {
    await withAtomicFile(dataPath, async (fh) => {
      let offset = 0;
      for (const t of large) {
        const pad = (ALIGNMENT - (offset % ALIGNMENT)) % ALIGNMENT;
        if (pad > 0) {
          await fh.write(new Uint8Array(pad));
          offset += pad;
        }
        const raw = t.bytes(TensorField.rawData) as Uint8Array;
        await fh.write(raw);
        t.remove(TensorField.rawData);
        t.setInt(TensorField.dataLocation, DataLocation.EXTERNAL);
        t.setMessages(TensorField.externalData, [entry("location", location), entry("offset", String(offset)), entry("length", String(raw.length))]);
        offset += raw.length;
      }
    });
    written.push(dataPath);
  }
  await writeFileAtomic(path, encodeMessage(model));
  written.unshift(path);
  return written;
}
