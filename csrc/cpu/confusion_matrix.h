// Confusion matrix of two integer label maps on the CPU (see cpu/confusion_matrix.cpp).
#pragma once
#include <cstdint>

#include "common/buffer.h"

namespace fastseg::cpu {

// Which of the two inputs held a value outside [0, C) (ignored target pixels aside).
struct ConfusionFlags {
  bool bad_pred = false;
  bool bad_target = false;
};

// Adds the counts of (target, pred) pairs into out[C*C] (int64, row = target, column = pred).
// pred and target: same shape, any strides, dtypes uint8, int8, int16, int32 or int64 (carried by
// each buffer).
// Pixels whose target equals ignore_index (when has_ignore) are skipped; any other value outside
// [0, C) is reported in the returned flags (the counts are then meaningless).
// fold_every: a thread folds its 32-bit counters into out before they could have counted more
// pixels than this (0: the uint32 limit); tests lower it to exercise the fold.
// own_threads: the threads are fastseg's sleeping pool, not OpenMP's (common/threads.h).
ConfusionFlags confusion_matrix(const Buffer& pred, const Buffer& target, int64_t num_classes,
                                bool has_ignore, int64_t ignore_index,
                                int64_t* out, int num_threads, bool own_threads,
                                uint64_t fold_every = 0);

}  // namespace fastseg::cpu
