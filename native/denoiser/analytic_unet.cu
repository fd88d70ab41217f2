#include "analytic_unet.h"

#include <algorithm>

#include "../common/cuda_check.h"

namespace sdtrt {

namespace {

__global__ void analyticUnetKernel(analytic::AnalyticParams p, size_t total) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    analytic::element(p, i);
  }
}

}  // namespace

cudaError_t launchAnalyticUnet(const analytic::AnalyticParams& params, cudaStream_t stream) {
  const size_t total = static_cast<size_t>(params.unetBatch) * static_cast<size_t>(params.imageElems);
  if (total == 0) return cudaSuccess;
  constexpr int threads = 256;
  const unsigned int blocks = static_cast<unsigned int>(std::min<size_t>((total + threads - 1) / threads, 4096));
  analyticUnetKernel<<<blocks, threads, 0, stream>>>(params, total);
  return cudaGetLastError();
}

void AnalyticUnetRunner::bind(const UnetBindings& b, cudaStream_t) {
  if (b.sample == nullptr || b.out == nullptr || b.timestep == nullptr || b.unetBatch <= 0) {
    throw NativeError("ERR_INVALID_ARG", "unet-bind", "analytic UNet bound without sample/out/timestep buffers");
  }
  if (b.sampleType != type_ || b.outType != type_ || b.timestepType != DType::kFloat32) {
    throw NativeError("ERR_INVALID_ARG", "unet-bind", "analytic UNet bound with dtypes other than the ones it asked for");
  }
  const bool split = b.splitCallRows > 0;
  if (split && (b.condSample == nullptr || b.condOut == nullptr)) {
    throw NativeError("ERR_INVALID_ARG", "unet-bind", "analytic UNet asked for two calls without the cond call's buffers");
  }
  // One call over [uncond; cond], or (split) an all-uncond call and an all-cond call, as a real
  // UNet sees them.
  calls_ = split ? 2 : 1;
  for (int c = 0; c < calls_; ++c) {
    analytic::AnalyticParams& p = params_[c];
    const bool condCall = c == 1;
    p.sample = condCall ? b.condSample : b.sample;
    p.sampleType = b.sampleType;
    p.timestep = b.timestep;
    p.timestepType = b.timestepType;
    p.out = condCall ? b.condOut : b.out;
    p.outType = b.outType;
    p.unetBatch = split ? b.splitCallRows : b.unetBatch;
    p.imageElems = b.latentChannels * b.latentHeight * b.latentWidth;
    p.uncondRows = split ? (condCall ? 0 : b.splitCallRows) : (b.classifierFreeGuidance ? b.unetBatch / 2 : 0);
  }
  bound_ = true;
}

void AnalyticUnetRunner::enqueue(cudaStream_t stream) {
  if (!bound_) throw NativeError("ERR_INVALID_STATE", "unet-enqueue", "analytic UNet enqueued before bind()");
  for (int c = 0; c < calls_; ++c) SDTRT_CUDA_CHECK("unet-enqueue", launchAnalyticUnet(params_[c], stream));
}

}  // namespace sdtrt
