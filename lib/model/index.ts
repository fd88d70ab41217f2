/** Model folders: locating the ONNX graphs and configs, reading each graph's I/O contract. */
export { DEFAULT_SCALING_FACTOR, locateModelFolder, type ModelFile, type ModelFolder, type ModelLayout, type SdxlFolderParts } from "./folder.js";
export {
  describeModel,
  describeSdxlTextEncoder,
  describeTextEncoder,
  describeUnet,
  describeVaeDecoder,
  describeVaeEncoder,
  ROLE_TITLES,
  type AddedConditioningIo,
  type Dim,
  type EncoderOutputKind,
  type GraphSignature,
  type ModelIo,
  type ModelRole,
  type TensorSpec,
  type SdxlTextEncoderIo,
  type TextEncoderIo,
  type TimestepLayout,
  type UnetIo,
  type VaeDecoderIo,
  type VaeEncoderIo,
} from "./graph-io.js";
export { readExternalTensorRefs, type ExternalTensorRef } from "../onnx/external-refs.js";
