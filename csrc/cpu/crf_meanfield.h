// Mean-field inference of the CPU dense CRF on lattices already built.
#pragma once
#include <cstdint>
#include <vector>

#include "common/densecrf_problem.h"
#include "cpu/crf_lattice.h"

namespace fastseg {
namespace crf {

// Labels are padded to a multiple of 8 in vertex rows (one or more 8-float vectors per row).
inline int padded_labels(int64_t C) { return static_cast<int>((C + 7) / 8 * 8); }

// n_iter iterations for image b of P with the terms' lattices, writing P.out / P.labels.
void mean_field(const Problem& P, int64_t b, const std::vector<const Lattice*>& lats, int nt);

// Bytes the mean field allocates for an image of N pixels and C labels whose terms have
// `vertices[t]` lattice vertices.
int64_t mean_field_bytes(int64_t N, int64_t C, const std::vector<int64_t>& vertices);

}  // namespace crf
}  // namespace fastseg
