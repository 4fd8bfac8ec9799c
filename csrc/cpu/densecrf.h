// Fully connected CRF (mean field on permutohedral lattices): the CPU entry points (the CUDA one is
// cuda/densecrf.h; bindings/densecrf.cpp picks between them by device).
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

}  // namespace crf
}  // namespace fastseg
