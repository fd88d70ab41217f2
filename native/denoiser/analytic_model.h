// The analytic model of test/fixtures/goldens/schedulers.json, used by the built-in stand-in UNet
// (analytic_unet.cu) and its host mirror:
//
//   out[k] = 0.3 · inp[k] · cos(t / 300) + 0.05 · sin(t / 50 + k)
//
// k is the flat index inside one image's [4, h, w] latent (every image of a batch sees the same
// function), evaluated in float64 as the README says, then cast to the output dtype.
//
// With classifier-free guidance the stand-in must give different uncond and cond outputs, or
// guidance would be a no-op and untested: the uncond half returns kUncondFactor · out (computed in
// float64, then cast). Guided output m = u + g·(c − u) = (0.9 + 0.1·g)·out, so g = 1 reproduces the
// golden model up to float32 rounding of the guidance arithmetic. The CPU reference of the GPU
// self-test (lib/native/analytic-reference.ts) mirrors this.
#pragma once

#include <math.h>

#include <cstddef>

#include "../common/dtype.h"
#include "../common/hd.h"
#include "../common/tensor_access.h"

namespace sdtrt::analytic {

constexpr double kUncondFactor = 0.9;

SDTRT_HD double modelOutput(double input, double t, int k) {
  const double c = ::cos(t / 300.0);
  return (0.3 * input) * c + 0.05 * ::sin(t / 50.0 + static_cast<double>(k));
}

struct AnalyticParams {
  const void* sample = nullptr;  // [unetBatch][imageElems]
  DType sampleType = DType::kFloat32;
  const void* timestep = nullptr;  // element 0 is used
  DType timestepType = DType::kFloat32;
  void* out = nullptr;  // [unetBatch][imageElems]
  DType outType = DType::kFloat32;
  int unetBatch = 0;
  int imageElems = 0;
  // Rows [0, uncondRows) are uncond (unetBatch / 2 with guidance in one call; all or none of a
  // call's rows when uncond and cond run as two calls, unet_layout.h).
  int uncondRows = 0;
};

// Element i < unetBatch · imageElems of the stand-in UNet's output.
SDTRT_HD void element(const AnalyticParams& p, size_t i) {
  const size_t rowIndex = i / static_cast<size_t>(p.imageElems);
  const int k = static_cast<int>(i - rowIndex * static_cast<size_t>(p.imageElems));
  const double t = loadAny(p.timestep, 0, p.timestepType);
  double out = modelOutput(static_cast<double>(loadFloat(p.sample, i, p.sampleType)), t, k);
  if (rowIndex < static_cast<size_t>(p.uncondRows)) out = kUncondFactor * out;
  storeFloat(p.out, i, p.outType, static_cast<float>(out));
}

}  // namespace sdtrt::analytic
