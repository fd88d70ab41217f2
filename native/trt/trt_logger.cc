#include "trt_logger.h"

namespace sdtrt::trt {

const char* SeverityName(nvinfer1::ILogger::Severity severity) {
  switch (severity) {
    case nvinfer1::ILogger::Severity::kINTERNAL_ERROR: return "internal-error";
    case nvinfer1::ILogger::Severity::kERROR: return "error";
    case nvinfer1::ILogger::Severity::kWARNING: return "warning";
    case nvinfer1::ILogger::Severity::kINFO: return "info";
    case nvinfer1::ILogger::Severity::kVERBOSE: return "verbose";
  }
  return "unknown";
}

void CollectingLogger::log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept {
  // Severity values grow from kINTERNAL_ERROR (0) to kVERBOSE (4).
  if (static_cast<int>(severity) > static_cast<int>(threshold_)) return;
  try {
    std::lock_guard<std::mutex> lock(mutex_);
    const bool isError = severity == Severity::kERROR || severity == Severity::kINTERNAL_ERROR;
    if (entries_.size() >= kMaxEntries && !isError) {
      ++dropped_;
      return;
    }
    entries_.push_back({severity, msg != nullptr ? msg : ""});
  } catch (...) {
    // log() is noexcept: out of memory while logging loses the message, nothing else.
  }
}

std::vector<LogEntry> CollectingLogger::Entries() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<LogEntry> out = entries_;
  if (dropped_ > 0) out.push_back({Severity::kWARNING, std::to_string(dropped_) + " further TensorRT messages were dropped"});
  return out;
}

std::string CollectingLogger::RecentErrors(size_t max) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<const LogEntry*> errors;
  for (auto it = entries_.rbegin(); it != entries_.rend() && errors.size() < max; ++it) {
    if (it->severity == Severity::kERROR || it->severity == Severity::kINTERNAL_ERROR) errors.push_back(&*it);
  }
  std::string out;
  for (auto it = errors.rbegin(); it != errors.rend(); ++it) {
    if (!out.empty()) out += " | ";
    out += (*it)->message;
  }
  return out;
}

}  // namespace sdtrt::trt
