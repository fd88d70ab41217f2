#include "trt_library.h"

#include <dlfcn.h>

#include "../common/status.h"

namespace sdtrt::trt {

namespace {

// NvInferVersion.h gives the version the headers (and so the vtable layout) belong to: only a
// library of that major version, and no older than the headers, may be used (trt_version.h).
constexpr int32_t kHeaderMajor = NV_TENSORRT_MAJOR;
constexpr int32_t kHeaderVersion = NV_TENSORRT_MAJOR * 10000 + NV_TENSORRT_MINOR * 100 + NV_TENSORRT_PATCH;

std::vector<std::string> Candidates(const char* base) {
  // The versioned soname first (what the TensorRT packages install), then the development symlink.
  return {std::string(base) + ".so." + std::to_string(kHeaderMajor), std::string(base) + ".so"};
}

// dlopen()s the first candidate that loads; records every failure.
void* OpenFirst(const std::vector<std::string>& names, LibraryStatus& status) {
  for (const std::string& name : names) {
    status.attempts.push_back(name);
    (void)dlerror();
    void* handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle != nullptr) {
      status.library = name;
      return handle;
    }
    const char* why = dlerror();
    if (!status.error.empty()) status.error += "; ";
    status.error += why != nullptr ? why : (name + ": dlopen failed");
  }
  return nullptr;
}

void* Symbol(void* handle, const char* name, LibraryStatus& status) {
  (void)dlerror();
  void* symbol = dlsym(handle, name);
  if (symbol == nullptr) {
    const char* why = dlerror();
    status.error = status.library + " has no symbol " + name + (why != nullptr ? std::string(" (") + why + ")" : "");
  }
  return symbol;
}

[[noreturn]] void ThrowMissing(const char* stage, const char* what, const LibraryStatus& status) {
  throw NativeError("ERR_TENSORRT_MISSING", stage,
                    std::string(what) + " could not be loaded: " + status.error +
                        ". Install TensorRT " + std::to_string(kHeaderMajor) +
                        ".x and make its lib folder visible to the dynamic loader (LD_LIBRARY_PATH or ldconfig)");
}

// `object` from a libnvinfer factory, which returns null when it rejects the headers' version.
void* RequireCreated(void* object, const char* factory, const LibraryStatus& infer, const char* stage) {
  if (object == nullptr) {
    throw NativeError("ERR_TENSORRT", stage, std::string(factory) + " failed (TensorRT " + VersionString(infer.version) +
                                                 " rejected headers " + CompiledVersion() + ", or no CUDA device)");
  }
  return object;
}

}  // namespace

std::string CompiledVersion() {
  return std::to_string(NV_TENSORRT_MAJOR) + "." + std::to_string(NV_TENSORRT_MINOR) + "." + std::to_string(NV_TENSORRT_PATCH);
}

TrtLibrary& TrtLibrary::Get() {
  // Never destroyed: TensorRT objects may still be released from cleanup hooks at exit, and the
  // libraries must stay mapped until then (dlclose would unmap code they run).
  static TrtLibrary* instance = new TrtLibrary();
  return *instance;
}

void TrtLibrary::LoadInfer() {
  if (triedInfer_) return;
  triedInfer_ = true;
  inferHandle_ = OpenFirst(Candidates("libnvinfer"), infer_);
  if (inferHandle_ == nullptr) return;
  auto version = reinterpret_cast<VersionFn>(Symbol(inferHandle_, "getInferLibVersion", infer_));
  createRuntime_ = reinterpret_cast<CreateFn>(Symbol(inferHandle_, "createInferRuntime_INTERNAL", infer_));
  createBuilder_ = reinterpret_cast<CreateFn>(Symbol(inferHandle_, "createInferBuilder_INTERNAL", infer_));
  if (version == nullptr || createRuntime_ == nullptr || createBuilder_ == nullptr) return;
  createRefitter_ = reinterpret_cast<CreateRefitterFn>(Symbol(inferHandle_, "createInferRefitter_INTERNAL", infer_));
  infer_.version = version();
  // Checked before any object is created: an older library would be called past its vtables.
  const std::string problem = LibraryVersionProblem(infer_.version, kHeaderVersion, infer_.library);
  if (!problem.empty()) {
    infer_.error = problem;
    return;
  }
  infer_.loaded = true;
  infer_.error.clear();
}

void TrtLibrary::LoadParser() {
  if (triedParser_) return;
  triedParser_ = true;
  parserHandle_ = OpenFirst(Candidates("libnvonnxparser"), parser_);
  if (parserHandle_ == nullptr) return;
  createParser_ = reinterpret_cast<CreateParserFn>(Symbol(parserHandle_, "createNvOnnxParser_INTERNAL", parser_));
  auto version = reinterpret_cast<VersionFn>(Symbol(parserHandle_, "getNvOnnxParserVersion", parser_));
  if (createParser_ == nullptr || version == nullptr) return;
  // getNvOnnxParserVersion() is the parser's own API version (0.1.0 for every TensorRT 10/11
  // release), not TensorRT's: reported as such, never as "the parser version".
  parser_.apiVersion = version();
  parser_.loaded = true;
  parser_.error.clear();
}

const LibraryStatus& TrtLibrary::Infer() {
  std::lock_guard<std::mutex> lock(mutex_);
  LoadInfer();
  return infer_;
}

const LibraryStatus& TrtLibrary::Parser() {
  std::lock_guard<std::mutex> lock(mutex_);
  LoadParser();
  return parser_;
}

void TrtLibrary::RequireRuntime(const char* stage) {
  if (!Infer().loaded) ThrowMissing(stage, "libnvinfer (the TensorRT runtime)", infer_);
}

void TrtLibrary::RequireBuilder(const char* stage) {
  RequireRuntime(stage);
  if (!Parser().loaded) ThrowMissing(stage, "libnvonnxparser (TensorRT's ONNX parser)", parser_);
}

// The same calls NvInferRuntime.h's inline createInferRuntime() / createInferBuilder() make.
nvinfer1::IRuntime* TrtLibrary::CreateRuntime(nvinfer1::ILogger& logger, const char* stage) {
  RequireRuntime(stage);
  void* runtime = createRuntime_(&logger, NV_TENSORRT_VERSION);
  return static_cast<nvinfer1::IRuntime*>(RequireCreated(runtime, "createInferRuntime", infer_, stage));
}

nvinfer1::IBuilder* TrtLibrary::CreateBuilder(nvinfer1::ILogger& logger, const char* stage) {
  RequireRuntime(stage);
  void* builder = createBuilder_(&logger, NV_TENSORRT_VERSION);
  return static_cast<nvinfer1::IBuilder*>(RequireCreated(builder, "createInferBuilder", infer_, stage));
}

nvinfer1::IRefitter* TrtLibrary::CreateRefitter(nvinfer1::ICudaEngine& engine, nvinfer1::ILogger& logger, const char* stage) {
  RequireRuntime(stage);
  if (createRefitter_ == nullptr) ThrowMissing(stage, "createInferRefitter in libnvinfer", infer_);
  // The same call NvInferRuntime.h's inline createInferRefitter() makes.
  void* refitter = createRefitter_(&engine, &logger, NV_TENSORRT_VERSION);
  return static_cast<nvinfer1::IRefitter*>(RequireCreated(refitter, "createInferRefitter", infer_, stage));
}

nvonnxparser::IParser* TrtLibrary::CreateParser(nvinfer1::INetworkDefinition& network, nvinfer1::ILogger& logger,
                                               const char* stage) {
  if (!Parser().loaded) ThrowMissing(stage, "libnvonnxparser (TensorRT's ONNX parser)", parser_);
  // The same call NvOnnxParser.h's inline createParser() makes.
  void* parser = createParser_(&network, &logger, NV_ONNX_PARSER_VERSION);
  if (parser == nullptr) throw NativeError("ERR_TENSORRT", stage, "createNvOnnxParser failed");
  return static_cast<nvonnxparser::IParser*>(parser);
}

}  // namespace sdtrt::trt
