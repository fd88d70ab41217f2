#include "program_table.h"

#include <cmath>
#include <string>

#include "../common/status.h"
#include "program_math.h"

namespace sdtrt::program {

namespace {

[[noreturn]] void invalid(const std::string& what) {
  throw NativeError("ERR_INVALID_PROGRAM", "program", "invalid packed sampler program: " + what);
}

int wholeNumber(double v, const char* name, int min, int max) {
  if (!std::isfinite(v) || std::floor(v) != v || v < min || v > max) {
    invalid(std::string(name) + " must be an integer from " + std::to_string(min) + " to " + std::to_string(max) +
            ", got " + std::to_string(v));
  }
  return static_cast<int>(v);
}

}  // namespace

Program Unpack(const double* words, size_t count) {
  if (count < static_cast<size_t>(kPackedHeaderWords)) {
    invalid("expected at least " + std::to_string(kPackedHeaderWords) + " header words, got " + std::to_string(count));
  }
  const int version = wholeNumber(words[0], "layout version (word 0)", 0, 1 << 20);
  if (version != kPackedLayoutVersion) {
    invalid("layout version " + std::to_string(version) + " is not supported (this addon reads version " +
            std::to_string(kPackedLayoutVersion) + "); rebuild the addon");
  }
  Program p;
  p.evalCount = wholeNumber(words[1], "evaluation count (word 1)", 1, kMaxEvals);
  p.historyDepth = wholeNumber(words[2], "history depth (word 2)", 1, kMaxHistoryDepth);
  p.initNoiseSigma = words[3];
  if (!std::isfinite(p.initNoiseSigma)) invalid("initNoiseSigma (word 3) is not finite");
  p.timestepDtype = wholeNumber(words[4], "timestep dtype (word 4)", 0, 1);
  p.steps = wholeNumber(words[5], "steps (word 5)", 0, kMaxEvals);
  p.startIndex = wholeNumber(words[6], "startIndex (word 6)", 0, kMaxEvals);

  const int K = p.historyDepth;
  const size_t stride = static_cast<size_t>(kPackedRowFixedWords + 2 * K);
  const size_t expected = kPackedHeaderWords + stride * static_cast<size_t>(p.evalCount);
  if (count != expected) {
    invalid("expected " + std::to_string(expected) + " words for " + std::to_string(p.evalCount) +
            " evaluations of history depth " + std::to_string(K) + ", got " + std::to_string(count));
  }
  p.evals.resize(p.evalCount);
  for (int j = 0; j < p.evalCount; ++j) {
    const double* row = words + kPackedHeaderWords + stride * j;
    for (size_t w = 0; w < stride; ++w) {
      if (!std::isfinite(row[w])) invalid("evaluation " + std::to_string(j) + " word " + std::to_string(w) + " is not finite");
    }
    Eval& e = p.evals[j];
    e.t = row[0];
    e.cIn = row[1];
    e.c = row[2];
    if (row[3] != 0.0 && row[3] != 1.0) invalid("evaluation " + std::to_string(j) + " drawsNoise must be 0 or 1");
    e.drawsNoise = row[3] == 1.0;
    if (!e.drawsNoise && e.c != 0.0) {
      invalid("evaluation " + std::to_string(j) + " has a noise coefficient c but draws no noise");
    }
    e.d = row[4];
    e.a.assign(row + kPackedRowFixedWords, row + kPackedRowFixedWords + K);
    e.b.assign(row + kPackedRowFixedWords + K, row + kPackedRowFixedWords + 2 * K);
    if (e.drawsNoise) ++p.noiseDraws;
  }
  return p;
}

std::vector<double> BuildDeviceTable(const Program& p) {
  const int K = p.historyDepth;
  const int stride = rowStride(K);
  std::vector<double> table(static_cast<size_t>(stride) * p.evalCount, 0.0);
  int draw = 0;
  for (int j = 0; j < p.evalCount; ++j) {
    const Eval& e = p.evals[j];
    double* row = table.data() + static_cast<size_t>(stride) * j;
    row[kRowT] = e.t;
    row[kRowCIn] = e.cIn;
    row[kRowC] = e.c;
    row[kRowDraw] = e.drawsNoise ? draw++ : -1;
    row[kRowD] = e.d;
    for (int k = 0; k < K; ++k) {
      row[kRowA + k] = e.a[k];
      row[rowB(K) + k] = e.b[k];
    }
  }
  return table;
}

}  // namespace sdtrt::program
