// The extended table a confusion matrix is counted into, shared by the CPU kernel
// (cpu/confusion_matrix.cpp) and the CUDA one (cuda/confusion_matrix.cu): (C + 2) rows x (C + 1)
// columns,
//   row t < C: target class t;  row C: target == ignore_index;  row C + 1: target out of range
//   column p < C: predicted class p;  column C: prediction out of range
// so ignoring and validation cost no branch while counting: the fold drops row C and raises a flag
// when row C + 1 or column C (outside the ignored row) counted anything.
#pragma once
#include <cstdint>
#include <type_traits>

#include "common/macros.h"

namespace fastseg {

struct ConfusionLayout {
  int64_t C, W, plane;  // W = C + 1 columns, plane = (C + 2) * W counters per table
  bool has_ignore;
  int64_t ignore;
  bool has_ignore32;  // has_ignore, and ignore fits int32 (else no label of <= 32 bits can equal it)
  int32_t ignore32;

  FS_HOST_DEVICE static ConfusionLayout make(int64_t C, bool has_ignore, int64_t ignore) {
    const bool fits32 = ignore >= INT32_MIN && ignore <= INT32_MAX;
    return ConfusionLayout{C, C + 1, (C + 2) * (C + 1), has_ignore, ignore,
                           has_ignore && fits32, fits32 ? static_cast<int32_t>(ignore) : 0};
  }
  // Offset of a target value's row, and column of a prediction value, in the extended table, in the
  // arithmetic of I: int64_t for any label; int32_t for labels of at most 32 bits when the table has
  // fewer than 2^31 counters (what a CUDA thread runs per pixel: one 32-bit compare, not two).
  template <typename I>
  FS_HOST_DEVICE I row(I v) const {
    static_assert(sizeof(I) == 4 || sizeof(I) == 8, "row: int32_t or int64_t");
    const I c = static_cast<I>(C), w = static_cast<I>(W);
    if (sizeof(I) == 8 ? (has_ignore && static_cast<int64_t>(v) == ignore)
                       : (has_ignore32 && static_cast<int32_t>(v) == ignore32))
      return c * w;
    using U = typename std::make_unsigned<I>::type;
    return (static_cast<U>(v) < static_cast<U>(c) ? v : c + 1) * w;
  }
  template <typename I>
  FS_HOST_DEVICE I col(I v) const {
    using U = typename std::make_unsigned<I>::type;
    return static_cast<U>(v) < static_cast<U>(C) ? v : static_cast<I>(C);
  }

  // What a non-zero count at (row r, column c) of the extended table means when folded.
  enum Fold : int { kDrop, kCount, kBadPred, kBadTarget };
  FS_HOST_DEVICE Fold fold(int64_t r, int64_t c) const {
    if (r == C) return kDrop;  // ignored target: its prediction is not checked either
    if (r == C + 1) return kBadTarget;
    if (c == C) return kBadPred;
    return kCount;
  }
};

}  // namespace fastseg
