// Bilinear source indices and weights, computed exactly as PyTorch's CPU upsample_bilinear2d does
// for an explicit output size (no scale_factor), so fused kernels reproduce its values bit for bit.
//
// Facts taken from ATen (UpSample.h, UpSampleKernel.cpp), checked against torch's output:
//   scale       = align_corners ? (in - 1) / (out - 1)  (0 when out == 1)  :  in / out     (float)
//   source      = align_corners ? scale * dst  :  max(fma(scale, dst + 0.5, -0.5), 0)
//                 (torch's AVX2 build contracts `scale * (dst + 0.5) - 0.5` into one fma)
//   i0          = min(floor(source), in - 1),  i1 = i0 + (i0 < in - 1)
//   lambda1     = clamp(source - i0, 0, 1),    lambda0 = 1 - lambda1
//   in == out   -> identity: i0 = i1 = dst, lambda0 = 1, lambda1 = 0
// and the interpolated value of a 2x2 neighbourhood (rows r0, r1 already interpolated along x):
//   row = fma(x0, lambda0_x, x1 * lambda1_x);   value = fma(row0, lambda0_y, row1 * lambda1_y)
// The second form is separable: each input row is interpolated along x once and reused by every
// output row that needs it.
#pragma once
#include <cmath>
#include <cstdint>

#include "macros.h"

namespace fastseg {

struct LinearTap {
  int32_t i0, i1;
  float w0, w1;
};

FS_HOST_DEVICE inline float bilinear_scale(int64_t in, int64_t out, bool align_corners) {
  if (align_corners) return out > 1 ? static_cast<float>(in - 1) / static_cast<float>(out - 1) : 0.f;
  return static_cast<float>(in) / static_cast<float>(out);
}

FS_HOST_DEVICE inline LinearTap bilinear_tap(float scale, int64_t dst, int64_t in, int64_t out,
                                             bool align_corners) {
  LinearTap t;
  if (in == out) {
    t.i0 = t.i1 = static_cast<int32_t>(dst);
    t.w0 = 1.f;
    t.w1 = 0.f;
    return t;
  }
  float src;
  if (align_corners) {
    src = scale * static_cast<float>(dst);
  } else {
    src = fmaf(scale, static_cast<float>(dst) + 0.5f, -0.5f);
    src = src < 0.f ? 0.f : src;
  }
  int64_t i0 = static_cast<int64_t>(floorf(src));
  i0 = i0 < in - 1 ? i0 : in - 1;
  float lambda = src - static_cast<float>(i0);
  lambda = lambda < 0.f ? 0.f : (lambda > 1.f ? 1.f : lambda);
  t.i0 = static_cast<int32_t>(i0);
  t.i1 = static_cast<int32_t>(i0 + (i0 < in - 1 ? 1 : 0));
  t.w1 = lambda;
  t.w0 = 1.f - lambda;
  return t;
}

// Linear interpolation of two samples in torch's operation order (see above).
FS_HOST_DEVICE inline float lerp_torch(float x0, float w0, float x1, float w1) {
  return fmaf(x0, w0, x1 * w1);
}

// Storage types the kernels read, converted to float on load.
FS_HOST_DEVICE inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1fu) {
    bits = sign | 0x7f800000u | (man << 13);  // inf / nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (man << 13);  // normal: rebias 15 -> 127
  } else if (man == 0) {
    bits = sign;  // signed zero
  } else {  // subnormal half: normalise
    exp = 113u;
    while ((man & 0x400u) == 0) {
      man <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  __builtin_memcpy(&f, &bits, sizeof f);
  return f;
}

FS_HOST_DEVICE inline float bf16_bits_to_float(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  __builtin_memcpy(&f, &bits, sizeof f);
  return f;
}

}  // namespace fastseg
