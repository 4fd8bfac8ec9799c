// lattice::locate (common/permutohedral.h) for eight feature vectors at once, one per vector lane:
// the same float operations in the same order (products kept unfused, the same rounding trick,
// ranks by the same pairwise comparisons, barycentric weights accumulated in the same order), so
// every lane's simplex and weights equal the scalar code's bit for bit. The tests compare the two
// (DenseCRF(..., _reference_lattice=True) runs the scalar code). CPU-only.
#pragma once
#include "common/permutohedral.h"
#include "cpu/simd8.h"

namespace fastseg {
namespace lattice {

// The simplexes of eight points: lane k of rem0[i] / rank[i] / bary[i] belongs to point k.
struct Simplex8 {
  simd::v8i rem0[kMaxDim + 1], rank[kMaxDim + 1];
  simd::v8f bary[kMaxDim + 1];
};

// f[j] holds feature j of the eight points. Returns the lanes whose features are NaN or too large
// for the integer keys (lattice::locate returns false for those).
// D > 0 fixes the dimension at compile time (unrolled loops); D = 0 reads it from d_runtime.
template <int D = 0>
inline simd::v8i locate8(const simd::v8f* f, const float* scale, int d_runtime, int rounding, Simplex8& out) {
  using simd::v8f;
  using simd::v8i;
  const int d = D > 0 ? D : d_runtime;
  v8f elevated[kMaxDim + 1], rem[kMaxDim + 1], rk[kMaxDim + 1];
  // Elevate, from the last coordinate down.
  v8f sm = v8f{};
  for (int j = d; j > 0; --j) {
    const v8f cf = simd::mul_rn8(f[j - 1], simd::splat8(scale[j - 1]));
    elevated[j] = sm - simd::mul_rn8(simd::splat8(static_cast<float>(j)), cf);
    sm += cf;
  }
  elevated[0] = sm;
  // Nearest remainder-0 point.
  const v8f down = simd::splat8(1.0f / static_cast<float>(d + 1));
  const v8f up = simd::splat8(static_cast<float>(d + 1));
  v8f sum = v8f{};
  v8i bad = v8i{};
  for (int i = 0; i <= d; ++i) {
    const v8f e = elevated[i];
    bad |= ~(simd::select8(e < 0.f, -e, e) < 4.0e6f);  // NaN, or too far out for exact rounding
    if (rounding == kHalfEven) {
      const v8f v = simd::round_even8(simd::mul_rn8(down, e));
      rem[i] = simd::mul_rn8(v, up);
      sum += v;
    } else {  // ties go down
      const v8f q = simd::mul_rn8(down, e);
      const v8f hi = simd::mul_rn8(simd::ceil8(q), up), lo = simd::mul_rn8(simd::floor8(q), up);
      rem[i] = simd::select8(hi - e < e - lo, hi, lo);
      sum += simd::mul_rn8(rem[i], down);
    }
  }
  // Ranks of the residuals by pairwise comparison, ties to the later coordinate.
  v8f res[kMaxDim + 1];
  for (int i = 0; i <= d; ++i) {
    rk[i] = v8f{};
    res[i] = elevated[i] - rem[i];
  }
  const v8f one = simd::splat8(1.f);
  for (int i = 0; i < d; ++i)
    for (int j = i + 1; j <= d; ++j) {
      const v8f c = simd::select8(res[i] < res[j], one, v8f{});
      rk[i] += c;
      rk[j] += one - c;
    }
  // Back onto the lattice plane: wrap the ranks around.
  for (int i = 0; i <= d; ++i) {
    rk[i] += sum;
    const v8f shift = simd::select8(rk[i] < 0.f, up, v8f{}) - simd::select8(rk[i] >= up, up, v8f{});
    rk[i] += shift;
    rem[i] += shift;
  }
  // Barycentric coordinates: b[d - rank_i] += v_i, b[d - rank_i + 1] -= v_i in the order of i,
  // each lane selecting its own targets.
  v8i pos[kMaxDim + 1];
  v8f v[kMaxDim + 1];
  for (int i = 0; i <= d; ++i) {
    v[i] = simd::mul_rn8(elevated[i] - rem[i], down);
    pos[i] = d - simd::to_int8(rk[i]);
  }
  v8f b[kMaxDim + 2];
  for (int k = 0; k <= d + 1; ++k) {
    b[k] = v8f{};
    for (int i = 0; i <= d; ++i) {
      b[k] = simd::select8(pos[i] == k, b[k] + v[i], b[k]);
      b[k] = simd::select8(pos[i] + 1 == k, b[k] - v[i], b[k]);
    }
  }
  b[0] += 1.f + b[d + 1];
  for (int i = 0; i <= d; ++i) {
    out.rem0[i] = simd::to_int8(rem[i]);
    out.rank[i] = simd::to_int8(rk[i]);
    out.bary[i] = b[i];
  }
  return bad;
}

}  // namespace lattice
}  // namespace fastseg
