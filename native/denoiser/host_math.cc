#include "host_math.h"

#include <limits>
#include <string>

#include "../common/status.h"
#include "analytic_model.h"
#include "loop_math.h"
#include "unet_layout.h"
#include "vae_math.h"

namespace sdtrt::host {

using loop::UnetLayout;
using loop::unetLayout;

std::vector<float> RunProgramAnalytic(const program::Program& program, const float* x0, const float* noise,
                                      size_t noiseCount, const AnalyticRunOptions& options, LoopStats* stats) {
  const int K = program.historyDepth;
  const int imageElems = options.channels * options.height * options.width;
  const size_t n = static_cast<size_t>(options.batch) * static_cast<size_t>(imageElems);
  const bool cfg = !options.guidance.empty();
  if (noiseCount != static_cast<size_t>(program.noiseDraws) * n) {
    throw NativeError("ERR_INVALID_ARG", "host-run", "noise must hold " + std::to_string(program.noiseDraws) +
                                                         " draws of " + std::to_string(n) + " values, got " +
                                                         std::to_string(noiseCount) + " values");
  }

  if (options.splitCallRows != 0 && (!cfg || (options.splitCallRows != options.batch && options.splitCallRows != 2 * options.batch))) {
    throw NativeError("ERR_INVALID_ARG", "host-run", "splitCallRows must be 0, or batch or 2 · batch with guidance, got " +
                                                         std::to_string(options.splitCallRows));
  }
  const size_t typeSize = dtypeSize(options.sampleType);
  const UnetLayout layout = unetLayout(n, options.batch, cfg, options.splitCallRows, 77, 77, 0, typeSize, typeSize, 2);

  const std::vector<double> table = program::BuildDeviceTable(program);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> xRing(static_cast<size_t>(K) * n, nan);
  std::vector<float> mRing(static_cast<size_t>(K) * n, nan);
  std::vector<uint8_t> sample(layout.sampleElems * typeSize);
  std::vector<uint8_t> out(layout.outElems * typeSize);
  for (size_t i = 0; i < layout.sampleElems; ++i) storeFloat(sample.data(), i, options.sampleType, nan);
  for (size_t i = 0; i < layout.outElems; ++i) storeFloat(out.data(), i, options.sampleType, nan);
  std::vector<uint8_t> timestep(dtypeSize(options.timestepType));
  for (size_t i = 0; i < n; ++i) xRing[i] = x0[i];

  loop::LoopParams p;
  p.table = table.data();
  p.evalCount = program.evalCount;
  p.depth = K;
  p.xRing = xRing.data();
  p.mRing = mRing.data();
  p.n = n;
  p.imageElems = imageElems;
  p.batch = options.batch;
  p.cfg = cfg;
  p.sampleCondOffset = layout.sampleCondOffset;
  p.outCondOffset = layout.outCondOffset;
  p.guidance = cfg ? options.guidance.data() : nullptr;
  p.noise = noise;
  p.unetOut = out.data();
  p.outType = options.sampleType;
  p.sample = sample.data();
  p.sampleType = options.sampleType;
  p.timestep = timestep.data();
  p.timestepType = options.timestepType;
  p.timestepCount = 1;

  // The UNet calls of one evaluation, as AnalyticUnetRunner makes them (analytic_unet.cu).
  std::vector<analytic::AnalyticParams> calls(layout.split ? 2 : 1);
  for (size_t c = 0; c < calls.size(); ++c) {
    analytic::AnalyticParams& a = calls[c];
    const bool condCall = c == 1;
    a.sample = sample.data() + (condCall ? layout.condCallSample * typeSize : 0);
    a.sampleType = options.sampleType;
    a.timestep = timestep.data();
    a.timestepType = options.timestepType;
    a.out = out.data() + (condCall ? layout.condCallOut * typeSize : 0);
    a.outType = options.sampleType;
    a.unetBatch = layout.callRows;
    a.imageElems = imageElems;
    a.uncondRows = layout.split ? (condCall ? 0 : layout.callRows) : (cfg ? options.batch : 0);
  }

  for (size_t i = 0; i < n; ++i) loop::prologueElement(p, i);
  for (int j = 0; j < program.evalCount; ++j) {
    for (const analytic::AnalyticParams& a : calls) {
      const size_t callElems = static_cast<size_t>(a.unetBatch) * static_cast<size_t>(imageElems);
      for (size_t i = 0; i < callElems; ++i) analytic::element(a, i);
    }
    for (size_t i = 0; i < n; ++i) {
      if (loop::fusedElement(p, j, i) && stats != nullptr) {
        if (stats->nonFinite++ == 0) stats->firstNonFinite = j;
      }
    }
  }
  const size_t last = static_cast<size_t>(program::ringSlot(program.evalCount, K)) * n;
  return std::vector<float>(xRing.begin() + last, xRing.begin() + last + n);
}

VaeFlagsCount VaeToUint8(const void* src, DType srcType, int batch, int channels, int height, int width, uint8_t* dst) {
  VaeFlagsCount counts;
  const size_t total = static_cast<size_t>(batch) * height * width * 3;
  for (size_t o = 0; o < total; ++o) {
    const uint32_t flags = loop::vaeElement(src, srcType, channels, height, width, o, dst);
    if (flags & vae::kNanFlag) ++counts.nanCount;
    if (flags & vae::kInfFlag) ++counts.infCount;
  }
  return counts;
}

void ScaleCast(const void* src, DType srcType, float factor, vae::ScaleOp op, void* dst, DType dstType, size_t count) {
  for (size_t i = 0; i < count; ++i) vae::scaleCastElement(src, srcType, factor, op, dst, dstType, i);
}

}  // namespace sdtrt::host
