// Error type shared by every native module. Errors raised inside AsyncWorker::Execute() are
// NativeError exceptions; OnError() turns them into JS errors whose message starts with the
// stage, and whose `code` / `stage` / `status` properties the TS layer maps to typed errors.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

namespace sdtrt {

class NativeError : public std::runtime_error {
 public:
  // code: stable machine-readable code ("ERR_CUDA", "ERR_TENSORRT", "ERR_ENGINE_MISMATCH", …)
  // stage: where it happened ("denoise", "engine-load", "clip-encode", …)
  // status: the library's status name when there is one ("cudaErrorMemoryAllocation")
  NativeError(std::string code, std::string stage, const std::string& message, std::string status = {})
      : std::runtime_error(stage + ": " + message),
        code_(std::move(code)),
        stage_(std::move(stage)),
        status_(std::move(status)) {}

  const std::string& code() const noexcept { return code_; }
  const std::string& stage() const noexcept { return stage_; }
  const std::string& status() const noexcept { return status_; }

 private:
  std::string code_;
  std::string stage_;
  std::string status_;
};

}  // namespace sdtrt
