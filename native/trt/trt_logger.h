// A TensorRT logger that keeps what TensorRT says instead of printing it: errors and warnings are
// returned to JS with each result or error (a library must not write to the process's stderr),
// and the last errors are appended to NativeError messages ("… : [TRT] Error Code 4: …").
#pragma once

#include <NvInferRuntime.h>

#include <mutex>
#include <string>
#include <vector>

namespace sdtrt::trt {

struct LogEntry {
  nvinfer1::ILogger::Severity severity;
  std::string message;
};

const char* SeverityName(nvinfer1::ILogger::Severity severity);

class CollectingLogger : public nvinfer1::ILogger {
 public:
  // Keeps messages of `threshold` and more severe (kWARNING: errors and warnings).
  explicit CollectingLogger(Severity threshold = Severity::kWARNING) : threshold_(threshold) {}

  void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override;

  // Everything kept so far (a copy), oldest first.
  std::vector<LogEntry> Entries() const;
  // The last `max` errors, joined for an error message ("" when there are none).
  std::string RecentErrors(size_t max = 4) const;

 private:
  // A long build can log thousands of warnings; keep the first ones and every error.
  static constexpr size_t kMaxEntries = 2000;
  Severity threshold_;
  mutable std::mutex mutex_;
  std::vector<LogEntry> entries_;
  size_t dropped_ = 0;
};

}  // namespace sdtrt::trt
