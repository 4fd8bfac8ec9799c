// Per-pixel and per-vertex steps of mean-field inference on a permutohedral lattice, shared by the
// CPU build (which calls them with a compile-time label count so the loops vectorise) and the CUDA
// build (one thread per pixel or vertex).
//
// Layouts: pixel rows of `lp` floats (labels padded to lp; padding lanes hold 0 in Q and -1e30 in
// the logits so they vanish in the softmax); vertex rows of `lp` floats, row M is all zeros and
// stands for "no neighbour".
#pragma once
#include <cstdint>

#include "common/macros.h"
#include "common/permutohedral.h"

// `omp simd` on the host: it lets g++ if-convert the selects of exp/log (plain -O3 keeps them as
// branches because float comparisons may trap) and vectorise the loop.
#if !defined(__CUDACC__) && defined(_OPENMP)
#define FS_SIMD _Pragma("omp simd")
#else
#define FS_SIMD
#endif

namespace fastseg {
namespace meanfield {

constexpr float kPadLogit = -1e30f;

// -U of one label: log(clip(p, 1e-5, 1)) for probabilities (pydensecrf.utils.unary_from_softmax),
// the value itself for logits.
FS_HOST_DEVICE inline float neg_unary(float v, bool logits) {
  if (logits) return v;
  v = v < 1e-5f ? 1e-5f : v;
  v = v > 1.0f ? 1.0f : v;
  return lattice::log_approx(v);
}

// Q = softmax(a) over one pixel row (subtract the max, exponentiate, divide by the sum).
FS_HOST_DEVICE inline void softmax_row(const float* a, float* q, int lp) {
  float m = a[0];
  for (int k = 1; k < lp; ++k) m = a[k] > m ? a[k] : m;
  // Three loops: the exponentials and the division vectorise; the ordered sum cannot.
  FS_SIMD
  for (int k = 0; k < lp; ++k) q[k] = lattice::exp_approx(a[k] - m);  // a may be q: lane k read, then written
  float s = 0.f;
  for (int k = 0; k < lp; ++k) s += q[k];
  for (int k = 0; k < lp; ++k) q[k] = q[k] / s;
}

// One blur step along one lattice axis: out = in + 0.5 (in[n1] + in[n2]).
FS_HOST_DEVICE inline void blur_vertex(const float* in, float* out, int64_t v, int n1, int n2, int lp) {
  const float* a = in + v * lp;
  const float* b = in + static_cast<int64_t>(n1) * lp;
  const float* c = in + static_cast<int64_t>(n2) * lp;
  float* o = out + v * lp;
  for (int k = 0; k < lp; ++k) o[k] = a[k] + 0.5f * (b[k] + c[k]);
}

// Slice: acc (+)= sum over the d+1 corners of weight * vertex row.
FS_HOST_DEVICE inline void slice_pixel(const float* values, const int* off, const float* w, int d1,
                                       float* acc, int lp) {
  for (int r = 0; r < d1; ++r) {
    const float* v = values + static_cast<int64_t>(off[r]) * lp;
    const float wr = w[r];
    for (int k = 0; k < lp; ++k) acc[k] += wr * v[k];
  }
}

// Splat by scatter (the GPU's way): every pixel adds weight * Q into its d+1 vertices atomically.
FS_HOST_DEVICE inline void splat_pixel_atomic(float* values, const int* off, const float* w, int d1,
                                              const float* q, int lp) {
  for (int r = 0; r < d1; ++r) {
    float* v = values + static_cast<int64_t>(off[r]) * lp;
    for (int k = 0; k < lp; ++k) lattice::atomic_add(v + k, w[r] * q[k]);
  }
}

}  // namespace meanfield
}  // namespace fastseg
