// The engine builder: ONNX file → serialized TensorRT plan, on a libuv thread (SdEngineBuildWorker).
//
//   tensorrt.buildEngine(options, onProgress?) → { promise: Promise<BuildResult>, cancel(): void }
//
// options: { onnxPath: string, profiles: [{ [input]: { min: number[], opt: number[], max: number[] } }],
//            timingCache?: Uint8Array, workspaceBytes?: number, optimizationLevel?: 0…5, device?: number }
// result:  { plan: Buffer, timingCache: Buffer, timingCacheReset: boolean,
//            io: [{ name, mode, dtype, shape }], log: [{ severity, message }],
//            gpu: { name, computeCapability, driverVersion, totalMemory }, tensorrtVersion: string }
//
// * The network is strongly typed (TensorRT 11 always is; on 10.x the flag is set): the precision
//   comes from the ONNX (lib/engines converts fp32 exports to fp16 before calling this).
// * ONNX parser errors are reported with the node index, name and operator and the parser's error
//   code (stage "onnx-parse", status "kUNSUPPORTED_NODE", …).
// * The timing cache comes in and goes out as bytes: TS owns the file and writes it atomically.
// * Progress: TensorRT's IProgressMonitor → a ThreadSafeFunction NonBlockingCall (dropped rather
//   than blocking the builder when JS is slow). cancel() sets an atomic flag the monitor returns to
//   TensorRT, which abandons the build; the promise then rejects with code ABORT_ERR.
// * The plan Buffer owns TensorRT's IHostMemory (no copy of a gigabyte plan).
#pragma once

#include <napi.h>

namespace sdtrt::trt {

void RegisterEngineBuilder(Napi::Env env, Napi::Object target);

}  // namespace sdtrt::trt
