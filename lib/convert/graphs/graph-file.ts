/**
 * Writes one graph: a GraphBuilder on `path` (model.onnx + model.onnx_data), the component's build
 * function, then finish — or, when building fails, the partial data file removed.
 */
import { GraphBuilder } from "../../onnx/builder.js";

export interface GraphFileSizes {
  modelBytes: number;
  dataBytes: number;
}

export async function writeGraphFile(path: string, name: string, build: (g: GraphBuilder) => Promise<void>): Promise<GraphFileSizes> {
  const g = await GraphBuilder.create({ name, path });
  try {
    await build(g);
  } catch (error) {
    await g.abort();
    throw error;
  }
  return g.finish();
}
