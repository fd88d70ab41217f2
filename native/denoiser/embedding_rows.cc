#include "embedding_rows.h"

#include <string>

#include "../common/status.h"

namespace sdtrt::program {

std::vector<int32_t> CheckEmbeddingRows(const int32_t* words, size_t count, int evalCount, int unetBatch, int bankRows) {
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
  for (size_t k = 0; k < count; ++k) {
    if (words[k] < 0 || words[k] >= bankRows) {
      invalid("evaluation " + std::to_string(k / unetBatch) + ", UNet row " + std::to_string(k % unetBatch) + " reads embeddings row " +
              std::to_string(words[k]) + "; the embeddings hold rows 0 to " + std::to_string(bankRows - 1));
    }
  }
  return std::vector<int32_t>(words, words + count);
}

}  // namespace sdtrt::program
