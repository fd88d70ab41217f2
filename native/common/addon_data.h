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
    cancels_.erase(key);
  }
  // A cancel function: asks in-flight work (a denoise loop, an engine build) to stop, returns at
  // once; true when there was work running to stop. Removed with Remove(key).
  void AddCancel(const void* key, std::function<bool()> cancel) {
    std::lock_guard<std::mutex> lock(mutex_);
    cancels_[key] = std::move(cancel);
  }
  // Asks all in-flight work to stop (the addon's cancelAll()); returns how many were running.
  // Release functions that wait for a run (a denoiser's) then wait at most queueDepth
  // evaluations, not for the whole loop.
  size_t CancelAll() {
    std::map<const void*, std::function<bool()>> cancels;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      cancels = cancels_;
    }
    size_t stopped = 0;
    for (auto& entry : cancels) {
      try {
        if (entry.second()) ++stopped;
      } catch (...) {
      }
    }
    return stopped;
  }
  // Cancels everything first (so no release waits on a lock held by a run nobody stopped: a TensorRT
  // context is locked for a denoiser's whole run), then runs and forgets every release function
  // (each at most once).
  size_t RunAll() {
    const size_t stopped = CancelAll();
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
    return stopped;
  }

 private:
  std::mutex mutex_;
  std::map<const void*, std::function<void()>> entries_;
  std::map<const void*, std::function<bool()>> cancels_;
};

struct AddonData {
  std::unordered_map<std::string, Napi::FunctionReference> constructors;
  // shared_ptr: objects keep the registry alive, whichever of them and the AddonData dies last.
  std::shared_ptr<CleanupRegistry> cleanup = std::make_shared<CleanupRegistry>();
};

// The environment's AddonData (created by the addon's Init).
inline AddonData& GetAddonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

}  // namespace sdtrt
