// Eight-float vectors (one AVX register) for the CPU dense CRF, written with GCC's vector
// extensions: the same source compiles to AVX2 with -march=native and to pairs of SSE registers
// without it. CPU-only (the CUDA build never includes this file).
#pragma once
#include <cstdint>

#include "common/permutohedral.h"  // exp_poly / log_poly, shared with the scalar code

namespace fastseg {
namespace simd {

typedef float v8f __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
// Unaligned variants, for pointers with no 32-byte guarantee (caller arrays).
typedef float v8f_u __attribute__((vector_size(32), aligned(4)));
typedef int v8i_u __attribute__((vector_size(32), aligned(4)));

inline v8f splat8(float x) { return v8f{x, x, x, x, x, x, x, x}; }
inline v8i splat8i(int x) { return v8i{x, x, x, x, x, x, x, x}; }
inline v8f load8(const float* p) { return *reinterpret_cast<const v8f*>(p); }  // 32-byte aligned
inline void store8(float* p, v8f v) { *reinterpret_cast<v8f*>(p) = v; }
inline v8f loadu8(const float* p) { return *reinterpret_cast<const v8f_u*>(p); }
inline void storeu8(float* p, v8f v) { *reinterpret_cast<v8f_u*>(p) = v; }
inline v8i loadu8i(const int* p) { return *reinterpret_cast<const v8i_u*>(p); }
inline void storeu8i(int* p, v8i v) { *reinterpret_cast<v8i_u*>(p) = v; }
inline v8f select8(v8i mask, v8f a, v8f b) { return mask ? a : b; }
inline v8i select8i(v8i mask, v8i a, v8i b) { return mask ? a : b; }
inline v8i as_int8(v8f v) { return (v8i)v; }  // bit casts between vectors of one size
inline v8f as_float8(v8i v) { return (v8f)v; }
inline v8f max8(v8f a, v8f b) { return select8(a > b, a, b); }
inline v8f to_float8(v8i v) { return __builtin_convertvector(v, v8f); }
inline v8i to_int8(v8f v) { return __builtin_convertvector(v, v8i); }  // truncates
inline v8i lane_index8() { return v8i{0, 1, 2, 3, 4, 5, 6, 7}; }
inline bool any8(v8i mask) {
  int m = 0;
  for (int k = 0; k < 8; ++k) m |= mask[k];
  return m != 0;
}

// A product the compiler may not fuse with a following add (see lattice::mul_rn): the lattice
// location must round every product as pydensecrf does.
// The empty asm makes the product a value the compiler must hold in registers, so it cannot fuse it
// into an FMA with what follows: GCC contracts by default wherever the target has FMA (x86 with
// -march=native, every aarch64). With AVX the eight lanes are one ymm register; otherwise (NEON,
// plain SSE) they are two 16-byte halves, each pinned in its own register.
inline v8f mul_rn8(v8f a, v8f b) {
  v8f r = a * b;
#if defined(__GNUC__) && defined(__AVX__)
  asm("" : "+x"(r));
#elif defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__) || defined(__aarch64__))
  v4f lo = __builtin_shufflevector(r, r, 0, 1, 2, 3);
  v4f hi = __builtin_shufflevector(r, r, 4, 5, 6, 7);
#if defined(__aarch64__)
  asm("" : "+w"(lo), "+w"(hi));
#else
  asm("" : "+x"(lo), "+x"(hi));
#endif
  r = __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7);
#endif
  return r;
}

// Round to nearest, ties to even, for |v| < 2^22 (lattice::round_half_even on eight lanes): adding
// and removing 1.5 * 2^23 leaves the rounded value (g++ keeps IEEE semantics: not folded).
inline v8f round_even8(v8f v) { return (v + 12582912.0f) - 12582912.0f; }
inline v8f floor8(v8f v) {
  const v8f r = round_even8(v);
  return select8(r > v, r - 1.0f, r);
}
inline v8f ceil8(v8f v) {
  const v8f r = round_even8(v);
  return select8(r < v, r + 1.0f, r);
}

// Horizontal max and sum of eight lanes by halving (a fixed order, so results are reproducible).
inline float hmax8(v8f v) {
  v4f m = __builtin_shufflevector(v, v, 0, 1, 2, 3);
  const v4f h = __builtin_shufflevector(v, v, 4, 5, 6, 7);
  m = m > h ? m : h;
  const v4f m2 = __builtin_shufflevector(m, m, 2, 3, 0, 1);
  m = m > m2 ? m : m2;
  const v4f m1 = __builtin_shufflevector(m, m, 1, 0, 3, 2);
  m = m > m1 ? m : m1;
  return m[0];
}
inline float hsum8(v8f v) {
  v4f s = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
  s = s + __builtin_shufflevector(s, s, 2, 3, 0, 1);
  s = s + __builtin_shufflevector(s, s, 1, 0, 3, 2);
  return s[0];
}

// In-place 8x8 transpose (row j lane k <-> row k lane j): unpack pairs, shuffle quads, swap halves.
// Turns eight pixels' label rows into eight per-label vectors over the pixels, and back.
inline void transpose8(v8f* r) {
  v8f t[8], s[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4) {
    s[i] = __builtin_shufflevector(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    s[i + 1] = __builtin_shufflevector(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    s[i + 2] = __builtin_shufflevector(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    s[i + 3] = __builtin_shufflevector(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = __builtin_shufflevector(s[i], s[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    r[i + 4] = __builtin_shufflevector(s[i], s[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// lattice::log_approx on eight lanes (the same operations), for positive normal x.
inline v8f log8(v8f x) {
  const v8i bits = as_int8(x);
  v8f m = as_float8((bits & 0x007fffff) | 0x3f000000);
  const v8i small = m < splat8(0.707106781186547524f);  // all ones where m < sqrt(1/2)
  const v8f e = to_float8(((bits >> 23) & 0xff) - 126 + small);
  m = m + as_float8(as_int8(m) & small) - 1.0f;
  return lattice::log_poly(m, e);
}

// lattice::exp_approx on eight lanes (the same operations).
inline v8f exp8(v8f x) {
  v8f xc = select8(x < splat8(-80.0f), splat8(-80.0f), x);
  xc = select8(xc > splat8(88.0f), splat8(88.0f), xc);
  const v8f n = round_even8(xc * 1.44269504088896341f);
  v8f r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  return lattice::exp_poly(r) * as_float8((to_int8(n) + 127) << 23);
}

}  // namespace simd
}  // namespace fastseg
