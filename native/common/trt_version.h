// Which libnvinfer a build may use, as plain integer logic (no TensorRT headers), so that the rule
// is compiled into every build and tested in CI without TensorRT (hostTensorRtVersionProblem).
//
// TensorRT's C++ API is a set of abstract classes whose methods are called through vtables built
// into libnvinfer. Within a major version NVIDIA only appends virtual methods (VExecutionContext
// grew setInputConsumedEvent, setAuxStreams, … after 10.0), so code compiled against 10.N calls
// slots that an older 10.M library (M < N) does not have: a jump through whatever lies past the
// end of the old vtable. A newer library of the same major version keeps every slot the headers
// know. Hence: same major version, and library version ≥ header version.
#pragma once

#include <cstdint>
#include <string>

namespace sdtrt::trt {

// "11.1.0" from TensorRT's encoding major·10000 + minor·100 + patch (getInferLibVersion(),
// NV_TENSORRT_VERSION); "" for 0 or less (unknown).
inline std::string VersionString(int32_t version) {
  if (version <= 0) return "";
  return std::to_string(version / 10000) + "." + std::to_string((version / 100) % 100) + "." + std::to_string(version % 100);
}

// "" when a libnvinfer reporting `library` may be used by code compiled against headers of
// version `headers`; otherwise why not, naming both versions and what to install.
inline std::string LibraryVersionProblem(int32_t library, int32_t headers, const std::string& libraryName) {
  const int32_t libraryMajor = library / 10000;
  const int32_t headerMajor = headers / 10000;
  if (library <= 0) return libraryName + " reports no usable version (getInferLibVersion() = " + std::to_string(library) + ")";
  if (libraryMajor != headerMajor) {
    return libraryName + " is TensorRT " + VersionString(library) + ", but this addon was compiled for TensorRT " +
           std::to_string(headerMajor) + ".x (headers " + VersionString(headers) + "): install TensorRT " + VersionString(headers) +
           " or a later " + std::to_string(headerMajor) + ".x, or rebuild the addon against the headers of TensorRT " +
           VersionString(library);
  }
  if (library < headers) {
    return libraryName + " is TensorRT " + VersionString(library) + ", older than the headers this addon was compiled against (" +
           VersionString(headers) + "): methods added since " + VersionString(library) +
           " would be called past the end of the library's interfaces. Install TensorRT " + VersionString(headers) +
           " or later " + std::to_string(headerMajor) + ".x, or rebuild the addon against the headers of TensorRT " +
           VersionString(library) + " (TENSORRT_ROOT=… npm run build:native)";
  }
  return "";
}

}  // namespace sdtrt::trt
