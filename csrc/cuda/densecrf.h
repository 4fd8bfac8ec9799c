// Fully connected CRF on a CUDA device: the same Problem as the CPU build (cpu/densecrf.h), with
// device pointers; bindings/densecrf.cpp picks between the two by device.
#pragma once
#include <cstdint>

#include "common/densecrf_problem.h"
#include "cuda/workspace.h"

namespace fastseg {
namespace crf {

// Work queued on `stream` (a cudaStream_t passed as an integer), its memory taken from `memory`,
// which must hand out blocks usable in that stream's order.
void densecrf_cuda(const Problem& problem, std::uintptr_t stream, const DeviceAllocator& memory);

}  // namespace crf
}  // namespace fastseg
