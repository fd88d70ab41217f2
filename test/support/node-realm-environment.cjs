// Jest runs each test file in its own vm context, whose Float32Array & co. are not the main
// realm's. onnxruntime-node checks tensors with `instanceof` against the main realm's typed
// arrays, so share those (and Buffer's ArrayBuffer) with the test context.
const { TestEnvironment } = require("jest-environment-node");

const SHARED_GLOBALS = [
  "ArrayBuffer", "SharedArrayBuffer", "DataView",
  "Int8Array", "Uint8Array", "Uint8ClampedArray", "Int16Array", "Uint16Array",
  "Int32Array", "Uint32Array", "Float32Array", "Float64Array", "BigInt64Array", "BigUint64Array",
];

class NodeRealmEnvironment extends TestEnvironment {
  constructor(config, context) {
    super(config, context);
    for (const name of SHARED_GLOBALS) this.global[name] = globalThis[name];
  }
}

module.exports = NodeRealmEnvironment;
