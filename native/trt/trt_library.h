// Run-time loading of TensorRT (docs/architecture.md, native boundary rule 7). The addon is compiled against
// NVIDIA's headers but never linked with libnvinfer: the first use dlopen()s
// libnvinfer.so.<major> / libnvonnxparser.so.<major> and dlsym()s only the factory functions (the
// `*_INTERNAL` entry points that NvInfer.h's inline createInferRuntime()/createInferBuilder() and
// NvOnnxParser.h's createParser() wrap). Every other call goes through the interfaces' vtables.
// So the addon builds, loads and answers on a machine without TensorRT, and says what is missing.
#pragma once

#include <NvInfer.h>
#include <NvOnnxParser.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "../common/trt_version.h"

namespace sdtrt::trt {

// The outcome of trying to load one library.
struct LibraryStatus {
  bool loaded = false;
  std::string library;                // the name or path that loaded ("libnvinfer.so.11")
  std::string error;                  // why it did not load (dlerror text of every attempt, or a version mismatch)
  std::vector<std::string> attempts;  // every name tried, in order
  int32_t version = 0;                // TensorRT encoding: major·10000 + minor·100 + patch (0 when unknown)
  int32_t apiVersion = 0;             // libnvonnxparser only: getNvOnnxParserVersion(), the parser API's version
};

// The TensorRT version of the headers this addon was compiled against ("11.1.0").
std::string CompiledVersion();

class TrtLibrary {
 public:
  // The process-wide instance. Loading happens once, on first use, under a lock.
  static TrtLibrary& Get();

  const LibraryStatus& Infer();
  const LibraryStatus& Parser();

  // Throw NativeError(ERR_TENSORRT_MISSING, stage, …) unless libnvinfer (and, for the builder,
  // libnvonnxparser) loaded.
  void RequireRuntime(const char* stage);
  void RequireBuilder(const char* stage);

  // Factories. Each throws NativeError(ERR_TENSORRT_MISSING, stage, …) when the library is not
  // available, and NativeError(ERR_TENSORRT, stage, …) when the factory returns null.
  nvinfer1::IRuntime* CreateRuntime(nvinfer1::ILogger& logger, const char* stage);
  nvinfer1::IBuilder* CreateBuilder(nvinfer1::ILogger& logger, const char* stage);
  nvonnxparser::IParser* CreateParser(nvinfer1::INetworkDefinition& network, nvinfer1::ILogger& logger, const char* stage);
  nvinfer1::IRefitter* CreateRefitter(nvinfer1::ICudaEngine& engine, nvinfer1::ILogger& logger, const char* stage);

 private:
  TrtLibrary() = default;
  void LoadInfer();
  void LoadParser();

  using CreateFn = void* (*)(void* logger, int32_t version);
  using CreateParserFn = void* (*)(void* network, void* logger, int version);
  using CreateRefitterFn = void* (*)(void* engine, void* logger, int32_t version);
  using VersionFn = int32_t (*)();

  std::mutex mutex_;
  bool triedInfer_ = false;
  bool triedParser_ = false;
  LibraryStatus infer_;
  LibraryStatus parser_;
  void* inferHandle_ = nullptr;
  void* parserHandle_ = nullptr;
  CreateFn createRuntime_ = nullptr;
  CreateFn createBuilder_ = nullptr;
  CreateParserFn createParser_ = nullptr;
  CreateRefitterFn createRefitter_ = nullptr;  // looked up with the runtime; only refitting needs it
};

}  // namespace sdtrt::trt
