// Fully connected CRF on the CPU: pydensecrf's algorithm (Kraehenbuehl & Koltun 2011), built for
// speed and for several cores. Per image: the terms' lattices (crf_lattice.cpp), then mean field
// (crf_meanfield.cpp). A batch runs one image per thread; a single image uses all the threads.
#include "cpu/densecrf.h"

#include <omp.h>

#include <algorithm>
#include <exception>
#include <stdexcept>
#include <vector>

#include "cpu/crf_lattice.h"
#include "cpu/crf_meanfield.h"

namespace fastseg {
namespace crf {
namespace {

// A term whose features are the same for every image of the batch (positions only, or channels
// broadcast over the batch) has the same lattice for every image: built once per call.
bool same_for_batch(const Term& t) { return t.K == 0 || t.cs[0] == 0; }

// `shared`: the lattices built once for the batch (terms with same_for_batch), or null.
void run_image(const Problem& P, int64_t b, int nt, const std::vector<Lattice>* shared) {
  const int T = static_cast<int>(P.terms.size());
  std::vector<Lattice> own(T);
  std::vector<bool> todo(T);
  for (int t = 0; t < T; ++t) todo[t] = !(shared && same_for_batch(P.terms[t]));
  StageTimer timer;
  build_lattices(P, b, todo, own, nt);
  std::vector<const Lattice*> lats(T);
  for (int t = 0; t < T; ++t) lats[t] = todo[t] ? &own[t] : &(*shared)[t];
  timer("lattices");
  mean_field(P, b, lats, nt);
  timer("mean field total");
}

}  // namespace

int64_t densecrf_cpu_bytes(int64_t H, int64_t W, int64_t C, const int* term_dims, int n_terms) {
  // Mirrors the allocations, with every simplex corner a distinct vertex (M = N (d+1)). The terms'
  // lattices may build concurrently, so their build-time peaks add up.
  const int64_t N = H * W;
  int64_t kept = 0, build = 0;
  std::vector<int64_t> vertices;
  for (int t = 0; t < n_terms; ++t) {
    kept += lattice_kept_bytes(N, term_dims[t]);
    build += lattice_build_bytes(N, H, W, term_dims[t]);
    vertices.push_back(N * (term_dims[t] + 1));
  }
  return kept + std::max(build, mean_field_bytes(N, C, vertices));
}

void densecrf_cpu(const Problem& P, int num_threads) {
  const int nt = std::max(1, num_threads);
  for (const Term& t : P.terms) {
    const int64_t corners = P.H * P.W * (t.dim() + 1);
    if (2 * corners >= (int64_t{1} << 31))
      throw std::invalid_argument("densecrf: image too large for the lattice (H*W*(feature dims+1) must be < 2^30)");
  }
  // Lattices that every image of the batch shares (e.g. the Gaussian position kernel) are built
  // once, before the images.
  std::vector<Lattice> shared;
  const std::vector<Lattice>* shared_ptr = nullptr;
  if (P.B >= 2) {
    std::vector<bool> todo(P.terms.size());
    bool any = false;
    for (size_t t = 0; t < P.terms.size(); ++t) any |= (todo[t] = same_for_batch(P.terms[t]));
    if (any) {
      shared.resize(P.terms.size());
      build_lattices(P, 0, todo, shared, nt);
      shared_ptr = &shared;
    }
  }
  if (P.B >= 2 && nt >= 2) {
    // Whole images per thread: no synchronisation inside an image, and each image's memory stays
    // local to one core.
    std::exception_ptr error;
#pragma omp parallel for num_threads(static_cast<int>(std::min<int64_t>(nt, P.B))) schedule(dynamic, 1)
    for (int64_t b = 0; b < P.B; ++b) {
      try {
        run_image(P, b, 1, shared_ptr);
      } catch (...) {
#pragma omp critical(fastseg_crf_error)
        if (!error) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
  } else {
    // One image at a time with all the threads. (No OpenMP dynamic adjustment: libgomp sizes the
    // team by the 15-minute load average, which a benchmark's own earlier runs raise to about one
    // on a 2-core machine, halving the threads of a quiet machine for the next quarter hour.)
    for (int64_t b = 0; b < P.B; ++b) run_image(P, b, nt, shared_ptr);
  }
}

}  // namespace crf
}  // namespace fastseg
