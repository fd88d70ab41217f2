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

// Checks every word of the table: exactly evalCount · unetBatch entries, each a row in
// [0, bankRows). Throws sdtrt::NativeError (ERR_INVALID_PROGRAM, stage "program") naming the
// evaluation, the UNet row and the limit; never reads past `count`.
std::vector<int32_t> CheckEmbeddingRows(const int32_t* words, size_t count, int evalCount, int unetBatch, int bankRows);

}  // namespace sdtrt::program
