#include "embedding_rows.h"

#include <string>

#include "../common/status.h"

namespace sdtrt::program {

std::vector<int32_t> CheckEmbeddingRows(const int32_t* words, size_t count, int evalCount, int unetBatch, int bankRows, BankHalves halves) {
  auto invalid = [](const std::string& what) {
    throw NativeError("ERR_INVALID_PROGRAM", "program", "invalid embedding row table: " + what);
  };
  if (evalCount < 1 || unetBatch < 1) invalid("the program has no evaluations or the UNet batch is empty");
  if (bankRows < 1 || bankRows > kMaxBankRows) {
    invalid("the embeddings hold " + std::to_string(bankRows) + " rows; expected 1 to " + std::to_string(kMaxBankRows));
  }
  const size_t expected = static_cast<size_t>(evalCount) * static_cast<size_t>(unetBatch);
  if (count != expected) {
    invalid("expected " + std::to_string(expected) + " entries (" + std::to_string(evalCount) + " evaluations × " +
            std::to_string(unetBatch) + " UNet rows), got " + std::to_string(count));
  }
  const bool split = halves.uncondUnetRows > 0;
  if (split && (halves.uncondUnetRows >= unetBatch || halves.uncondBankRows < 1 || halves.uncondBankRows >= bankRows)) {
    invalid("the uncond rows (" + std::to_string(halves.uncondUnetRows) + " of " + std::to_string(unetBatch) + " UNet rows, " +
            std::to_string(halves.uncondBankRows) + " of " + std::to_string(bankRows) + " embeddings rows) leave no cond rows");
  }
  for (size_t k = 0; k < count; ++k) {
    if (words[k] < 0 || words[k] >= bankRows) {
      invalid("evaluation " + std::to_string(k / unetBatch) + ", UNet row " + std::to_string(k % unetBatch) + " reads embeddings row " +
              std::to_string(words[k]) + "; the embeddings hold rows 0 to " + std::to_string(bankRows - 1));
    }
    if (split) {
      const bool uncondRow = static_cast<int>(k % unetBatch) < halves.uncondUnetRows;
      if (uncondRow != (words[k] < halves.uncondBankRows)) {
        invalid("evaluation " + std::to_string(k / unetBatch) + ", UNet row " + std::to_string(k % unetBatch) + " (" + (uncondRow ? "uncond" : "cond") +
                ") reads embeddings row " + std::to_string(words[k]) + "; with uncond and cond of different text lengths the " +
                (uncondRow ? "uncond rows read rows 0 to " + std::to_string(halves.uncondBankRows - 1)
                           : "cond rows read rows " + std::to_string(halves.uncondBankRows) + " to " + std::to_string(bankRows - 1)));
      }
    }
  }
  return std::vector<int32_t>(words, words + count);
}

}  // namespace sdtrt::program
