// The built-in stand-in UNet: a CUDA kernel computing the analytic model of the scheduler goldens
// (analytic_model.h) on the UNet input, so the whole denoise loop — graphs, guidance, the fused
// update, progress, cancellation — can be tested on a GPU without TensorRT or model weights.
// With classifier-free guidance the uncond half returns 0.9 × the model (see analytic_model.h).
#pragma once

#include <cuda_runtime_api.h>

#include "analytic_model.h"
#include "unet_runner.h"

namespace sdtrt {

// Launches the stand-in on `stream` (graph-capturable). Returns cudaGetLastError() of the launch.
cudaError_t launchAnalyticUnet(const analytic::AnalyticParams& params, cudaStream_t stream);

class AnalyticUnetRunner final : public UnetRunner {
 public:
  // `type`: the dtype of the stand-in's sample input and output (float32 or float16), so both the
  // float32 path and the float16 casts of real engines are exercised.
  explicit AnalyticUnetRunner(DType type) : type_(type) {}

  DType sampleType() const override { return type_; }
  DType timestepType() const override { return DType::kFloat32; }
  int timestepCount(int) const override { return 1; }
  DType hiddenType() const override { return DType::kFloat16; }
  DType outType() const override { return type_; }
  int hiddenSize() const override { return 0; }  // ignores text embeddings
  void bind(const UnetBindings& bindings, cudaStream_t stream) override;
  void enqueue(cudaStream_t stream) override;

 private:
  DType type_;
  // One call, or the uncond and the cond call (UnetBindings::splitCallRows).
  analytic::AnalyticParams params_[2];
  int calls_ = 1;
  bool bound_ = false;
};

}  // namespace sdtrt
