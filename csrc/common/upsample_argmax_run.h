// One thread's work in the fused bilinear upsample + argmax as the CUDA kernel computes it
// (cuda/upsample_argmax.cu): a *run* of MY x MX output pixels lying between the same two source rows
// and the same two source columns (a strip of a "cell"; the Triton kernel's ops/upsample_argmax/cells.py
// explains the split). Per channel the thread loads the four taps once, interpolates each source row
// along x once per output column, then spends one vertical lerp and the running argmax per pixel:
// the taps' loads and the horizontal lerps are shared by the run instead of repeated per pixel.
//
// The taps, weights and lerps are bilinear.h's, the CPU kernel's, in the same order (a shared row
// lerp is the same float operation on the same operands), so the interpolated values are the CPU
// kernel's bit for bit. The running max / argmax takes the first channel on ties and counts NaN as
// the maximum; the confidence is the online softmax denominator's inverse. The same code runs on the
// CPU, one run after another, for the tests (fastseg._C.upsample_argmax_threadwise).
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

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
FS_HOST_DEVICE inline float to_float(HalfBits v) {
#if defined(__CUDA_ARCH__)
  float f;  // the hardware conversion (one instruction, exact like the bit manipulation below)
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
  return f;
#else
  return half_bits_to_float(v.bits);
#endif
}
FS_HOST_DEVICE inline float to_float(BFloat16Bits v) { return bf16_bits_to_float(v.bits); }

enum class LogitType : int { kFloat32, kFloat16, kBFloat16 };

// How one output axis is split into runs: by cell (an upsampled axis: `m` outputs of one cell per
// run, `parts` runs per cell, cells -1 .. in - 1) or one output per run.
struct RunAxis {
  bool cell = false;
  int64_t m = 1, parts = 1, units = 0;
};

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
  RunAxis ry, rx;  // set by plan_runs
};

// The unclamped float32 source coordinate of output `dst`, as bilinear_tap computes it.
FS_HOST_DEVICE inline float source_coordinate(float scale, int64_t dst, bool align_corners) {
  return align_corners ? scale * static_cast<float>(dst) : fmaf(scale, static_cast<float>(dst) + 0.5f, -0.5f);
}

// The first output whose source coordinate is >= c (`out` if none): an estimate from the inverse
// map, corrected by the exact formula (the estimate is off by less than one).
FS_HOST_DEVICE inline int64_t cell_first(int64_t c, float scale, int64_t out, bool align_corners) {
  const float cf = static_cast<float>(c);
  float est;
  if (align_corners)
    est = scale > 0.f ? ceilf(cf / scale) : (cf > 0.f ? static_cast<float>(out) : 0.f);
  else
    est = ceilf((cf + 0.5f) / scale - 0.5f);
  int64_t x = est < 0.f ? 0 : (est > static_cast<float>(out) ? out : static_cast<int64_t>(est));
  for (int k = 0; k < 2; ++k)
    if (x > 0 && source_coordinate(scale, x - 1, align_corners) >= cf) --x;
  for (int k = 0; k < 2; ++k)
    if (x < out && source_coordinate(scale, x, align_corners) < cf) ++x;
  return x;
}

// One axis's runs of at most m outputs (host side: counts every cell once).
inline RunAxis plan_axis(int64_t in, int64_t out, bool align_corners, int64_t m) {
  RunAxis r;
  if (out <= in || m == 1) {
    r.units = out;
    return r;
  }
  const float scale = bilinear_scale(in, out, align_corners);
  int64_t largest = 0;
  for (int64_t c = -1, lo = 0; c < in; ++c) {
    const int64_t hi = cell_first(c + 1, scale, out, align_corners);
    largest = hi - lo > largest ? hi - lo : largest;
    lo = hi;
  }
  r.cell = true;
  r.m = m;
  r.parts = (largest + m - 1) / m;
  r.units = (in + 1) * r.parts;
  return r;
}

// The run shape (MY x MX outputs) for these sizes: as large as the smaller axis's cells allow.
inline int run_kind(const UpsampleArgmaxArgs& a) {
  const int64_t ratio_y = a.H / a.h, ratio_x = a.W / a.w;
  const int64_t r = ratio_y < ratio_x ? ratio_y : ratio_x;
  return r >= 8 ? 8 : (r >= 4 ? 4 : (r >= 2 ? 2 : 1));
}

template <int MY, int MX>
inline void plan_runs(UpsampleArgmaxArgs& a) {
  a.ry = plan_axis(a.h, a.H, a.align_corners, MY);
  a.rx = plan_axis(a.w, a.W, a.align_corners, MX);
}

// Run `u` along one axis: its two source indices and its outputs [first, end).
struct RunSpan {
  int64_t i0, i1, first, end;
};
FS_HOST_DEVICE inline RunSpan run_span(const RunAxis& r, int64_t u, int64_t in, int64_t out, float scale,
                                       bool align_corners) {
  RunSpan s;
  if (!r.cell) {
    const LinearTap t = bilinear_tap(scale, u, in, out, align_corners);
    s.i0 = t.i0;
    s.i1 = t.i1;
    s.first = u;
    s.end = u + 1;
    return s;
  }
  const int64_t c = u / r.parts - 1;
  s.i0 = c < 0 ? 0 : c;
  s.i1 = s.i0 + (s.i0 < in - 1 ? 1 : 0);
  const int64_t lo = cell_first(c, scale, out, align_corners);
  s.first = lo + (u % r.parts) * r.m;
  s.end = cell_first(c + 1, scale, out, align_corners);
  return s;
}

template <typename L>
FS_HOST_DEVICE inline void store_label(const UpsampleArgmaxArgs& a, int64_t at, int32_t label) {
  static_cast<L*>(a.labels)[at] = static_cast<L>(label);
}

// The two weights of each of the M outputs of a run starting at `first` (past the end: the last's).
template <int M>
FS_HOST_DEVICE inline void run_weights(int64_t first, float scale, int64_t in, int64_t out, bool align_corners,
                                       float* w0, float* w1) {
#pragma unroll
  for (int j = 0; j < M; ++j) {
    const LinearTap t = bilinear_tap(scale, first + j < out ? first + j : out - 1, in, out, align_corners);
    w0[j] = t.w0;
    w1[j] = t.w1;
  }
}

// The interpolated values of one channel (at offset o) for the run's MY x MX outputs, in torch's order.
template <typename T, int MY, int MX>
FS_HOST_DEVICE inline void run_values(const T* p00, const T* p01, const T* p10, const T* p11, int64_t o,
                                      const float* wx0, const float* wx1, const float* hy0, const float* hy1,
                                      float* v) {
  const float a00 = to_float(p00[o]), a01 = to_float(p01[o]), a10 = to_float(p10[o]), a11 = to_float(p11[o]);
  float r0[MX], r1[MX];
#pragma unroll
  for (int j = 0; j < MX; ++j) {  // each source row interpolated along x once per output column
    r0[j] = lerp_torch(a00, wx0[j], a01, wx1[j]);
    r1[j] = lerp_torch(a10, wx0[j], a11, wx1[j]);
  }
#pragma unroll
  for (int k = 0; k < MY; ++k)
#pragma unroll
    for (int j = 0; j < MX; ++j) v[k * MX + j] = lerp_torch(r0[j], hy0[k], r1[j], hy1[k]);
}

// Run i (0 <= i < N * ry.units * rx.units, row-major over n, run row, run column).
template <typename T, int MY, int MX, bool CONF>
FS_HOST_DEVICE inline void upsample_argmax_run(const UpsampleArgmaxArgs& a, int64_t i) {
  const int64_t ux = i % a.rx.units, uy = (i / a.rx.units) % a.ry.units, n = i / (a.rx.units * a.ry.units);
  const float sy = bilinear_scale(a.h, a.H, a.align_corners), sx = bilinear_scale(a.w, a.W, a.align_corners);
  const RunSpan ry = run_span(a.ry, uy, a.h, a.H, sy, a.align_corners);
  const RunSpan rx = run_span(a.rx, ux, a.w, a.W, sx, a.align_corners);
  if (ry.first >= ry.end || rx.first >= rx.end) return;  // an empty strip of a small cell
  float wx0[MX], wx1[MX], hy0[MY], hy1[MY];
  run_weights<MX>(rx.first, sx, a.w, a.W, a.align_corners, wx0, wx1);
  run_weights<MY>(ry.first, sy, a.h, a.H, a.align_corners, hy0, hy1);
  const T* base = static_cast<const T*>(a.logits) + n * a.xs[0];
  const T* p00 = base + ry.i0 * a.xs[2] + rx.i0 * a.xs[3];
  const T* p01 = base + ry.i0 * a.xs[2] + rx.i1 * a.xs[3];
  const T* p10 = base + ry.i1 * a.xs[2] + rx.i0 * a.xs[3];
  const T* p11 = base + ry.i1 * a.xs[2] + rx.i1 * a.xs[3];
  float best[MY * MX], total[MY * MX], v[MY * MX];
  int32_t arg[MY * MX];
  run_values<T, MY, MX>(p00, p01, p10, p11, 0, wx0, wx1, hy0, hy1, best);
#pragma unroll
  for (int q = 0; q < MY * MX; ++q) {
    total[q] = 1.f;
    arg[q] = 0;
  }
  for (int64_t c = 1; c < a.C; ++c) {
    run_values<T, MY, MX>(p00, p01, p10, p11, c * a.xs[1], wx0, wx1, hy0, hy1, v);
#pragma unroll
    for (int q = 0; q < MY * MX; ++q) {
      // greater or unordered (v is NaN) while the maximum so far is a number: NaN is the maximum
      // and the first one wins (two compares)
      const bool take = !(v[q] <= best[q]) && best[q] == best[q];
      if (CONF) {  // sum of exp(v - max), rescaled when the maximum moves
        const float e = expf(-fabsf(v[q] - best[q]));
        total[q] = take ? total[q] * e + 1.f : total[q] + e;
      }
      if (take) {
        best[q] = v[q];
        arg[q] = static_cast<int32_t>(c);
      }
    }
  }
#pragma unroll
  for (int k = 0; k < MY; ++k) {
#pragma unroll
    for (int j = 0; j < MX; ++j) {
      const int64_t y = ry.first + k, x = rx.first + j;
      if (y >= ry.end || x >= rx.end) continue;
      const int q = k * MX + j;
      const int64_t at = n * a.ls[0] + y * a.ls[1] + x * a.ls[2];
      switch (a.label_bytes) {
        case 1: store_label<uint8_t>(a, at, arg[q]); break;
        case 2: store_label<int16_t>(a, at, arg[q]); break;
        case 4: store_label<int32_t>(a, at, arg[q]); break;
        default: store_label<int64_t>(a, at, arg[q]); break;
      }
      if (CONF) a.confidence[n * a.cs[0] + y * a.cs[1] + x * a.cs[2]] = 1.f / total[q];
      if (a.max_value) a.max_value[n * a.ms[0] + y * a.ms[1] + x * a.ms[2]] = best[q];
    }
  }
}

// The kernel's compile-time choices: run shape (MY x MX outputs) and whether it writes the confidence.
template <int Y, int X, bool Conf>
struct RunShape {
  static constexpr int kY = Y, kX = X;
  static constexpr bool kConf = Conf;
};

// Plans the runs into `a`, then calls f(T{}, RunShape<MY, MX, CONF>{}) with the logits' storage type.
template <typename F>
inline void visit_upsample_argmax_kernels(UpsampleArgmaxArgs& a, F&& f) {
  auto with_conf = [&](auto t, auto conf) {
    constexpr bool kConf = decltype(conf)::value;
    switch (run_kind(a)) {
      case 8: plan_runs<8, 4>(a); return f(t, RunShape<8, 4, kConf>{});
      case 4: plan_runs<4, 4>(a); return f(t, RunShape<4, 4, kConf>{});
      case 2: plan_runs<2, 2>(a); return f(t, RunShape<2, 2, kConf>{});
      default: plan_runs<1, 1>(a); return f(t, RunShape<1, 1, kConf>{});
    }
  };
  auto with_runs = [&](auto t) {
    if (a.confidence) return with_conf(t, std::true_type{});
    return with_conf(t, std::false_type{});
  };
  switch (a.logit_type) {
    case LogitType::kFloat32: return with_runs(float{});
    case LogitType::kFloat16: return with_runs(HalfBits{});
    case LogitType::kBFloat16: return with_runs(BFloat16Bits{});
  }
}

}  // namespace fastseg
