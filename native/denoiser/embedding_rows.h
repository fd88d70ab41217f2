// Prompt editing on the device: which embeddings row each UNet row reads at each evaluation.
//
// The caller uploads a "bank" of text embeddings [bankRows, sequenceLength, hidden] once (every
// distinct conditioning of the run, each encoded once) and this table, Int32Array
// [evalCount][unetBatch]: entry (j, i) is the bank row that UNet row i binds at evaluation j
// (uncond rows first with guidance, as the embeddings themselves). The denoiser keeps the table on
// the device and, before each UNet call, a gather kernel copies the rows of the evaluation in
// LoopControl::step into the UNet's fixed embeddings buffer: one captured graph serves every
// evaluation, with no host round trip and no rebind when the conditioning changes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sdtrt::program {

// Most bank rows a run may upload (distinct conditionings × images); far above what A1111 prompts make.
constexpr int kMaxBankRows = 1 << 16;

// With uncond and cond as two UNet calls of different text lengths (unet_layout.h) the bank is two
// blocks: the uncond texts' rows [0, uncondBankRows) at the uncond length, then the cond texts'
// rows at the cond length. UNet rows [0, uncondUnetRows) must read the first block, the others the
// second. Zeros: one block.
struct BankHalves {
  int uncondUnetRows = 0;
  int uncondBankRows = 0;
};

// Checks every word of the table: exactly evalCount · unetBatch entries, each a row in
// [0, bankRows) (and in its half's block with `halves`). Throws sdtrt::NativeError
// (ERR_INVALID_PROGRAM, stage "program") naming the evaluation, the UNet row and the limit; never
// reads past `count`.
std::vector<int32_t> CheckEmbeddingRows(const int32_t* words, size_t count, int evalCount, int unetBatch, int bankRows,
                                        BankHalves halves = {});

}  // namespace sdtrt::program
