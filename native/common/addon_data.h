// Per-environment state of the addon (one per Node.js environment: main thread, each worker_thread).
// Node-API has ONE instance-data slot per addon, so every module shares this struct instead of
// calling env.SetInstanceData itself:
//
//   * constructors: class constructors by name ("Denoiser", "DeviceTensor", and the TensorRT
//     module's own), for creating instances from C++ (e.g. returning a DeviceTensor).
//   * cleanup: objects holding CUDA/TensorRT resources register a release function here; one
//     env.AddCleanupHook (addon.cc) runs them all when the environment shuts down, before the CUDA
//     runtime is torn down, so nothing is freed into a dead context and in-flight work is cancelled.
#pragma once

#include <napi.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace sdtrt {

// Thread-safe: objects unregister from their destructors, which may run on the JS thread while a
// cleanup pass runs (environment teardown).
class CleanupRegistry {
 public:
  void Add(const void* key, std::function<void()> release) {
    std::lock_guard<std::mutex> lock(mutex_);
    entries_[key] = std::move(release);
  }
  void Remove(const void* key) {
    std::lock_guard<std::mutex> lock(mutex_);
    entries_.erase(key);
  }
  // Runs and forgets every registered release function (each at most once).
  void RunAll() {
    std::map<const void*, std::function<void()>> entries;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      entries.swap(entries_);
    }
    for (auto& entry : entries) {
      try {
        entry.second();
      } catch (...) {
        // Shutting down: nothing can be reported any more, and nothing may abort the process.
      }
    }
  }

 private:
  std::mutex mutex_;
  std::map<const void*, std::function<void()>> entries_;
};

struct AddonData {
  std::unordered_map<std::string, Napi::FunctionReference> constructors;
  // shared_ptr: objects keep the registry alive, whichever of them and the AddonData dies last.
  std::shared_ptr<CleanupRegistry> cleanup = std::make_shared<CleanupRegistry>();
};

// The environment's AddonData (created by the addon's Init).
inline AddonData& GetAddonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

}  // namespace sdtrt
