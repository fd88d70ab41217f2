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
  params_.sample = b.sample;
  params_.sampleType = b.sampleType;
  params_.timestep = b.timestep;
  params_.timestepType = b.timestepType;
  params_.out = b.out;
  params_.outType = b.outType;
  params_.unetBatch = b.unetBatch;
  params_.imageElems = b.latentChannels * b.latentHeight * b.latentWidth;
  params_.cfg = b.classifierFreeGuidance;
  bound_ = true;
}

void AnalyticUnetRunner::enqueue(cudaStream_t stream) {
  if (!bound_) throw NativeError("ERR_INVALID_STATE", "unet-enqueue", "analytic UNet enqueued before bind()");
  SDTRT_CUDA_CHECK("unet-enqueue", launchAnalyticUnet(params_, stream));
}

}  // namespace sdtrt
