// Where the UNet's sample, output and text embeddings live in the denoiser's buffers, for one UNet
// call per evaluation or for A1111's two (host code only; the denoiser and its host path share it,
// so CI checks the offsets the device loop uses).
//
// One call (the default): sample and out are [unetBatch][imageElems], uncond rows first with
// classifier-free guidance; the embeddings [unetBatch][L][hidden].
//
// Two calls (A1111's default when the prompt and negative prompt have different numbers of 75-token
// chunks, pad_cond_uncond off: modules/sd_samplers_cfg_denoiser.py evaluates cond and uncond
// separately): the uncond call at text length Lu, then the cond call at Lc, each of `callRows` rows:
//   callRows = images      the engine takes that batch: each call computes its own rows once;
//                          sample and out hold the uncond rows at 0 and the cond rows at an aligned
//                          offset (cond call bound there).
//   callRows = 2 · images  the engine takes only the guidance batch (a static `sd-trt build`): both
//                          calls read the whole [x; x] sample and compute their rows twice; the cond
//                          call writes its own output block at an aligned offset, and the loop reads
//                          its first `images` rows. The second copy costs UNet time, never changes a value.
// TensorRT wants every I/O tensor address 256-byte aligned, so each cond-call block starts at a
// multiple of 256 bytes (cudaMalloc returns 256-byte aligned buffers); the gaps are never read.
#pragma once

#include <cstddef>

namespace sdtrt::loop {

// TensorRT's alignment requirement for tensor addresses (IExecutionContext::setTensorAddress).
constexpr size_t kTensorAlignment = 256;

// The first element index at or after `elements` whose address is 256-byte aligned, for elements of
// `elementSize` bytes (2 or 4, which divide 256).
inline size_t alignedElements(size_t elements, size_t elementSize) {
  const size_t bytes = elements * elementSize;
  return (bytes + kTensorAlignment - 1) / kTensorAlignment * kTensorAlignment / elementSize;
}

struct UnetLayout {
  bool split = false;        // two UNet calls per evaluation
  int callRows = 0;          // rows of each UNet call (one call: unetBatch)
  // Elements where the loop writes the cond rows' input and reads the cond rows' output
  // (LoopParams::sampleCondOffset / outCondOffset; n for one call).
  size_t sampleCondOffset = 0;
  size_t outCondOffset = 0;
  // Elements from the buffer start where the cond call's sample / output / embeddings are bound.
  size_t condCallSample = 0;
  size_t condCallOut = 0;
  size_t condCallHidden = 0;
  // Elements each buffer needs.
  size_t sampleElems = 0;
  size_t outElems = 0;
  size_t hiddenElems = 0;
};

// n = images · imageElems; `splitCallRows` 0 for one call, else images or 2 · images (checked by the
// caller). Lengths in tokens (77 · chunks); hiddenSize the embedding width (0: the runner takes no
// embeddings); type sizes in bytes per element.
inline UnetLayout unetLayout(size_t n, int images, bool cfg, int splitCallRows, int uncondLength, int condLength, int hiddenSize,
                             size_t sampleTypeSize, size_t outTypeSize, size_t hiddenTypeSize) {
  UnetLayout l;
  const int unetBatch = cfg ? 2 * images : images;
  const size_t width = static_cast<size_t>(hiddenSize);
  l.split = cfg && splitCallRows > 0;
  if (!l.split) {
    l.callRows = unetBatch;
    l.sampleCondOffset = l.outCondOffset = n;
    l.sampleElems = l.outElems = static_cast<size_t>(cfg ? 2 : 1) * n;
    l.hiddenElems = static_cast<size_t>(unetBatch) * static_cast<size_t>(condLength) * width;
    return l;
  }
  l.callRows = splitCallRows;
  const size_t callElems = static_cast<size_t>(splitCallRows / images) * n;  // n or 2n
  if (splitCallRows == images) {
    l.sampleCondOffset = l.condCallSample = alignedElements(n, sampleTypeSize);
    l.sampleElems = l.sampleCondOffset + n;
  } else {
    // Both calls read the one [x; x] sample the loop writes as for a single call.
    l.sampleCondOffset = n;
    l.condCallSample = 0;
    l.sampleElems = 2 * n;
  }
  l.outCondOffset = l.condCallOut = alignedElements(callElems, outTypeSize);
  l.outElems = l.condCallOut + callElems;
  const size_t uncondHidden = static_cast<size_t>(splitCallRows) * static_cast<size_t>(uncondLength) * width;
  l.condCallHidden = hiddenSize > 0 ? alignedElements(uncondHidden, hiddenTypeSize) : 0;
  l.hiddenElems = l.condCallHidden + static_cast<size_t>(splitCallRows) * static_cast<size_t>(condLength) * width;
  return l;
}

}  // namespace sdtrt::loop
