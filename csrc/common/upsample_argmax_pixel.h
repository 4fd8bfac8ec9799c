// One output pixel of the fused bilinear upsample + argmax, as the CUDA kernel computes it (one
// thread per pixel, cuda/upsample_argmax.cu). The taps and the lerps are bilinear.h's, the ones the
// CPU kernel (cpu/upsample_argmax.cpp) uses, in the same operation order, so the interpolated values
// are the CPU kernel's bit for bit; the running max / argmax takes the first channel on ties and
// counts NaN as the maximum, and the confidence is the online softmax denominator's inverse. The
// same code runs on the CPU, one pixel after another, for the tests (fastseg._C.upsample_argmax_pixelwise).
#pragma once
#include <cmath>
#include <cstdint>

#include "common/bilinear.h"
#include "common/macros.h"

namespace fastseg {

// Storage types of the logits: float, and the bits of a half / bfloat16.
struct HalfBits {
  uint16_t bits;
};
struct BFloat16Bits {
  uint16_t bits;
};
FS_HOST_DEVICE inline float to_float(float v) { return v; }
FS_HOST_DEVICE inline float to_float(HalfBits v) { return half_bits_to_float(v.bits); }
FS_HOST_DEVICE inline float to_float(BFloat16Bits v) { return bf16_bits_to_float(v.bits); }

enum class LogitType : int { kFloat32, kFloat16, kBFloat16 };

// Everything the kernel reads and writes: addresses, sizes and strides (in elements).
struct UpsampleArgmaxArgs {
  const void* logits = nullptr;  // [N, C, h, w]
  LogitType logit_type = LogitType::kFloat32;
  int64_t N = 0, C = 0, h = 0, w = 0, H = 0, W = 0;
  int64_t xs[4] = {0, 0, 0, 0};
  bool align_corners = false;
  void* labels = nullptr;  // [N, H, W], label_bytes wide: uint8, int16, int32 or int64
  int label_bytes = 1;
  int64_t ls[3] = {0, 0, 0};
  float* confidence = nullptr;  // [N, H, W] or null
  int64_t cs[3] = {0, 0, 0};
  float* max_value = nullptr;  // [N, H, W] or null: the interpolated maximum logit
  int64_t ms[3] = {0, 0, 0};
};

// Output pixel i (0 <= i < N * H * W, row-major over n, y, x).
template <typename T, typename L>
FS_HOST_DEVICE inline void upsample_argmax_pixel(const UpsampleArgmaxArgs& a, int64_t i) {
  const int64_t x = i % a.W, y = (i / a.W) % a.H, n = i / (a.W * a.H);
  const LinearTap ty = bilinear_tap(bilinear_scale(a.h, a.H, a.align_corners), y, a.h, a.H, a.align_corners);
  const LinearTap tx = bilinear_tap(bilinear_scale(a.w, a.W, a.align_corners), x, a.w, a.W, a.align_corners);
  const T* base = static_cast<const T*>(a.logits) + n * a.xs[0];
  const T* p00 = base + ty.i0 * a.xs[2] + tx.i0 * a.xs[3];
  const T* p01 = base + ty.i0 * a.xs[2] + tx.i1 * a.xs[3];
  const T* p10 = base + ty.i1 * a.xs[2] + tx.i0 * a.xs[3];
  const T* p11 = base + ty.i1 * a.xs[2] + tx.i1 * a.xs[3];
  const bool want_conf = a.confidence != nullptr;
  float best = 0.f, total = 1.f;
  int64_t arg = 0;
  for (int64_t c = 0; c < a.C; ++c) {
    const int64_t o = c * a.xs[1];
    const float r0 = lerp_torch(to_float(p00[o]), tx.w0, to_float(p01[o]), tx.w1);
    const float r1 = lerp_torch(to_float(p10[o]), tx.w0, to_float(p11[o]), tx.w1);
    const float v = lerp_torch(r0, ty.w0, r1, ty.w1);
    if (c == 0) {
      best = v;
      continue;
    }
    const bool take = v > best || (v != v && best == best);  // NaN is the maximum; the first one wins
    if (want_conf) {  // sum of exp(v - max), rescaled when the maximum moves
      const float e = expf(-fabsf(v - best));
      total = take ? total * e + 1.f : total + e;
    }
    if (take) {
      best = v;
      arg = c;
    }
  }
  static_cast<L*>(a.labels)[n * a.ls[0] + y * a.ls[1] + x * a.ls[2]] = static_cast<L>(arg);
  if (want_conf) a.confidence[n * a.cs[0] + y * a.cs[1] + x * a.cs[2]] = 1.f / total;
  if (a.max_value) a.max_value[n * a.ms[0] + y * a.ms[1] + x * a.ms[2]] = best;
}

// Calls f(T{}, L{}) with the logits' storage type and the labels' integer type.
template <typename F>
inline void visit_upsample_argmax_types(const UpsampleArgmaxArgs& a, F&& f) {
  auto with_labels = [&](auto t) {
    switch (a.label_bytes) {
      case 1: return f(t, uint8_t{});
      case 2: return f(t, int16_t{});
      case 4: return f(t, int32_t{});
      default: return f(t, int64_t{});
    }
  };
  switch (a.logit_type) {
    case LogitType::kFloat32: return with_labels(float{});
    case LogitType::kFloat16: return with_labels(HalfBits{});
    case LogitType::kBFloat16: return with_labels(BFloat16Bits{});
  }
}

}  // namespace fastseg
