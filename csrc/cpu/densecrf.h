// Fully connected CRF (mean field on permutohedral lattices): CPU and CUDA entry points.
#pragma once
#include <cstdint>

#include "common/densecrf_problem.h"

namespace fastseg {
namespace crf {

// CPU: host pointers. Images of a batch run in parallel when there are several, otherwise each image
// uses all `num_threads`.
void densecrf_cpu(const Problem& problem, int num_threads);

// Bytes the CPU path allocates for one image at most (worst case: every simplex corner a distinct
// lattice vertex), for the documentation and the memory tests.
int64_t densecrf_cpu_bytes(int64_t H, int64_t W, int64_t C, const int* term_dims, int n_terms);

#ifdef FASTSEG_WITH_CUDA
// CUDA: device pointers, work queued on `stream` (a cudaStream_t passed as an integer).
void densecrf_cuda(const Problem& problem, std::uintptr_t stream);
#endif

}  // namespace crf
}  // namespace fastseg
