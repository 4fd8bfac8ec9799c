// Confusion matrix of two integer label maps on a CUDA device (for CUDA tensors where Triton is
// missing). Counted into the extended table of common/confusion_layout.h, then folded.
#pragma once
#include <cstdint>

#include "common/confusion_layout.h"

namespace fastseg::cuda {

// Integer storage of a label map, by size and signedness (uint8, int8, int16, int32, int64).
enum class LabelType : int { kUInt8, kInt8, kInt16, kInt32, kInt64 };

// Bytes of one label of each type.
inline int label_bytes(LabelType t) {
  switch (t) {
    case LabelType::kUInt8:
    case LabelType::kInt8: return 1;
    case LabelType::kInt16: return 2;
    case LabelType::kInt32: return 4;
    default: return 8;
  }
}

struct LabelMap {
  const void* ptr = nullptr;
  LabelType type = LabelType::kUInt8;
  int64_t stride = 1;  // elements between consecutive pixels (the maps are 1-D views)
};

// Adds the counts of (target, pred) pairs of n pixels into out (int64 [C, C], contiguous, on the
// device) and sets flags[0] / flags[1] (int32 on the device, zeroed by the caller) when pred /
// target held a value outside [0, C) at a counted pixel. table: int64 [layout.plane], zeroed by the
// caller. Work queued on `stream`; no host synchronisation.
void confusion_matrix(const LabelMap& pred, const LabelMap& target, int64_t n, const ConfusionLayout& layout,
                      int64_t* table, int64_t* out, int32_t* flags, std::uintptr_t stream);

}  // namespace fastseg::cuda
