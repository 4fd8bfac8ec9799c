// The permutohedral lattice of one pairwise term for one image, as the CPU mean field uses it.
#pragma once
#include <cstdint>
#include <vector>

#include "common/densecrf_problem.h"
#include "cpu/crf_util.h"

namespace fastseg {
namespace crf {

// Built once per image and term, read by the normalisation and every mean-field iteration.
struct Lattice {
  int d = 0, d1 = 0;
  int64_t N = 0;
  int M = 0;                // vertices; row M of a vertex buffer stands for "no neighbour"
  float slice_scale = 0.f;  // alpha * Potts weight, applied to the blurred vertex values
  Array<int> off;           // N * d1: vertex id of each simplex corner
  Array<float> w;           // N * d1: barycentric weight times the pixel's symmetric normalisation
  Array<int> nbr;           // d1 * M * 2: blur neighbours per axis (M = none)
};

// Builds the lattices of the terms flagged in `todo` for image b with up to `nt` threads.
void build_lattices(const Problem& P, int64_t b, const std::vector<bool>& todo, std::vector<Lattice>& lats, int nt);

// Bytes the lattice of one term with d feature dimensions keeps, and the most its build needs on
// top of that, for an image of N pixels in the worst case (every simplex corner a distinct vertex).
int64_t lattice_kept_bytes(int64_t N, int d);
int64_t lattice_build_bytes(int64_t N, int64_t H, int64_t W, int d);

}  // namespace crf
}  // namespace fastseg
