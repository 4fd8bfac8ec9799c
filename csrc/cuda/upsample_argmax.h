// Fused bilinear upsample + argmax on a CUDA device (for CUDA tensors where Triton is missing).
#pragma once
#include <cstdint>

#include "common/upsample_argmax_run.h"

namespace fastseg::cuda {

// Work queued on `stream` (a cudaStream_t as an integer); no host synchronisation.
void upsample_argmax(UpsampleArgmaxArgs args, std::uintptr_t stream);

}  // namespace fastseg::cuda
