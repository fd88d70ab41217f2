// The flat sampler program (`packProgram()` in lib/sampler, a Float64Array) unpacked and checked on
// the host, and turned into the coefficient table the fused kernel reads (program_math.h).
//
// Flat layout (lib/sampler/program.ts is the source of truth; PACKED_HEADER_WORDS = 8):
//   header[0] layout version (PACKED_LAYOUT_VERSION = 2)
//   header[1] M, the number of model evaluations
//   header[2] K, the history depth
//   header[3] initNoiseSigma
//   header[4] timestep dtype of the schedule (0 = float32, 1 = int64)
//   header[5] steps, header[6] startIndex, header[7] reserved
//   then M rows of 5 + 2K words: [t, cIn, c, drawsNoise (0/1), d, a[0..K-1], b[0..K-1]]
//   (d: the coefficient on the evaluation's unconditional output, 0 for every sampler but CFG++)
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sdtrt::program {

constexpr int kPackedHeaderWords = 8;
constexpr int kPackedLayoutVersion = 2;
constexpr int kPackedRowFixedWords = 5;  // t, cIn, c, drawsNoise, d
constexpr int kMaxHistoryDepth = 16;
constexpr int kMaxEvals = 100000;

struct Eval {
  double t = 0;
  double cIn = 1;
  double c = 0;
  bool drawsNoise = false;
  double d = 0;           // coefficient on the unconditional output u_j
  std::vector<double> a;  // K entries
  std::vector<double> b;  // K entries
};

struct Program {
  int evalCount = 0;
  int historyDepth = 0;
  double initNoiseSigma = 1;
  int timestepDtype = 0;  // 0 float32, 1 int64
  int steps = 0;
  int startIndex = 0;
  int noiseDraws = 0;  // evaluations with drawsNoise
  std::vector<Eval> evals;
};

// Parses and checks a flat program. Throws sdtrt::NativeError (code ERR_INVALID_PROGRAM, stage
// "program") naming the word that is wrong; never reads past `count`.
Program Unpack(const double* words, size_t count);

// Rows [t, cIn, c, drawIndex, d, a[K], b[K]] (program_math.h), drawIndex counting the draws in order.
std::vector<double> BuildDeviceTable(const Program& program);

}  // namespace sdtrt::program
