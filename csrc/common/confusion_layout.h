// The extended table a confusion matrix is counted into, shared by the CPU kernel
// (cpu/confusion_matrix.cpp) and the CUDA one (cuda/confusion_matrix.cu): (C + 2) rows x (C + 1)
// columns,
//   row t < C: target class t;  row C: target == ignore_index;  row C + 1: target out of range
//   column p < C: predicted class p;  column C: prediction out of range
// so ignoring and validation cost no branch while counting: the fold drops row C and raises a flag
// when row C + 1 or column C (outside the ignored row) counted anything.
#pragma once
#include <cstdint>

#include "common/macros.h"

namespace fastseg {

struct ConfusionLayout {
  int64_t C, W, plane;  // W = C + 1 columns, plane = (C + 2) * W counters per table
  bool has_ignore;
  int64_t ignore;

  FS_HOST_DEVICE static ConfusionLayout make(int64_t C, bool has_ignore, int64_t ignore) {
    return ConfusionLayout{C, C + 1, (C + 2) * (C + 1), has_ignore, ignore};
  }
  // Offset of a target value's row, and column of a prediction value, in the extended table.
  FS_HOST_DEVICE int64_t row(int64_t v) const {
    if (has_ignore && v == ignore) return C * W;
    return (static_cast<uint64_t>(v) < static_cast<uint64_t>(C) ? v : C + 1) * W;
  }
  FS_HOST_DEVICE int64_t col(int64_t v) const { return static_cast<uint64_t>(v) < static_cast<uint64_t>(C) ? v : C; }

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
