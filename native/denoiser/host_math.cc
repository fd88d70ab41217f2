#include "host_math.h"

#include <limits>
#include <string>

#include "../common/status.h"
#include "analytic_model.h"
#include "loop_math.h"
#include "vae_math.h"

namespace sdtrt::host {

std::vector<float> RunProgramAnalytic(const program::Program& program, const float* x0, const float* noise,
                                      size_t noiseCount, const AnalyticRunOptions& options, LoopStats* stats) {
  const int K = program.historyDepth;
  const int imageElems = options.channels * options.height * options.width;
  const size_t n = static_cast<size_t>(options.batch) * static_cast<size_t>(imageElems);
  const bool cfg = !options.guidance.empty();
  const int unetBatch = cfg ? 2 * options.batch : options.batch;
  if (noiseCount != static_cast<size_t>(program.noiseDraws) * n) {
    throw NativeError("ERR_INVALID_ARG", "host-run", "noise must hold " + std::to_string(program.noiseDraws) +
                                                         " draws of " + std::to_string(n) + " values, got " +
                                                         std::to_string(noiseCount) + " values");
  }

  const std::vector<double> table = program::BuildDeviceTable(program);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> xRing(static_cast<size_t>(K) * n, nan);
  std::vector<float> mRing(static_cast<size_t>(K) * n, nan);
  const size_t unetElems = static_cast<size_t>(unetBatch) * imageElems;
  std::vector<uint8_t> sample(unetElems * dtypeSize(options.sampleType));
  std::vector<uint8_t> out(unetElems * dtypeSize(options.sampleType));
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
  p.guidance = cfg ? options.guidance.data() : nullptr;
  p.noise = noise;
  p.unetOut = out.data();
  p.outType = options.sampleType;
  p.sample = sample.data();
  p.sampleType = options.sampleType;
  p.timestep = timestep.data();
  p.timestepType = options.timestepType;
  p.timestepCount = 1;

  analytic::AnalyticParams a;
  a.sample = sample.data();
  a.sampleType = options.sampleType;
  a.timestep = timestep.data();
  a.timestepType = options.timestepType;
  a.out = out.data();
  a.outType = options.sampleType;
  a.unetBatch = unetBatch;
  a.imageElems = imageElems;
  a.cfg = cfg;

  for (size_t i = 0; i < n; ++i) loop::prologueElement(p, i);
  for (int j = 0; j < program.evalCount; ++j) {
    for (size_t i = 0; i < unetElems; ++i) analytic::element(a, i);
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
